"""Task routes: POST /v1/tasks, GET /v1/tasks/{task_id}, POST /v1/tasks/{task_id}/close (the
agent's key), GET /v1/agents/{agent}/tasks (the admin, or the agent's own key).

A task is a budget envelope: charges, batch items, holds and invokes that name it (``task``
field; invoke: header ``X-IOU-Task``) count against it in the same script as the balance."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.api import idempotency
from gateway.api.admin import _query_limit
from gateway.api.body import Fields, json_from_raw, read_body, read_json
from gateway.api.context import Context, endpoint
from gateway.api.responses import iso_ms, json_response
from gateway.metering.errors import InvalidRequest
from gateway.metering.limits import CALLS_MAX, check_name
from gateway.metering.money import format_amount as fmt
from gateway.metering.tasks import (
    TASK_NAME_CHARS_MAX,
    TASK_TTL_S_DEFAULT,
    TASK_TTL_S_MAX,
    TaskState,
)

OPEN_FIELDS = ("budget", "name", "ttl_s", "max_calls")


def task_payload(t: TaskState) -> dict[str, Any]:
    """A task as the API shows it: its money as decimal strings, its counts, its summary."""
    return {"task_id": t.task_id, "name": t.name, "budget": fmt(t.budget_micros),
            "spent": fmt(t.spent_micros), "held": fmt(t.held_micros), "calls": t.calls,
            "remaining": fmt(max(t.budget_micros - t.spent_micros - t.held_micros, 0)),
            "state": t.state, "created_at": iso_ms(t.created_ms),
            "expires_at": iso_ms(t.expires_at_ms),
            "closed_at": None if t.closed_ms is None else iso_ms(t.closed_ms),
            "max_calls": t.max_calls,
            "spent_by_tool": {k: fmt(v) for k, v in t.spent_by_tool.items()},
            "spent_by_category": {k: fmt(v) for k, v in t.spent_by_category.items()},
            "calls_by_tool": t.calls_by_tool, "calls_by_category": t.calls_by_category}


def _max_calls(fields: Fields) -> dict[str, int]:
    """``max_calls``: tool or category names to whole numbers of calls."""
    raw = fields.obj("max_calls") or {}
    counts = Fields(raw, tuple(raw), "max_calls.")
    out: dict[str, int] = {}
    for name, count in raw.items():
        check_name(f"max_calls.{name}", name)
        if count is None:
            raise InvalidRequest(f"max_calls.{name}", "must be a whole number of calls")
        out[name] = counts.integer(name, 1, CALLS_MAX, 1)
    return out


@endpoint
async def open_task(ctx: Context, request: Request) -> Response:
    agent = await ctx.auth.agent(request)
    raw = await read_body(request, ctx.settings.body_bytes_max)
    key = idempotency.idempotency_key(request)

    async def run(binding: idempotency.Binding | None) -> Response:
        fields = Fields(json_from_raw(request, raw), OPEN_FIELDS)
        budget = fields.amount("budget", True, max_micros=ctx.settings.amount_max_micros)
        assert budget is not None
        name = fields.text("name", TASK_NAME_CHARS_MAX) if fields.has("name") else None
        ttl_s = fields.integer("ttl_s", 1, TASK_TTL_S_MAX, TASK_TTL_S_DEFAULT)
        # A keyed request's task id comes from its key, so concurrent retries (the
        # binding does not exclude them) find one task instead of opening one each.
        task_id = None if binding is None else "task_" + binding.token[:32]
        task = await ctx.engine.open_task(agent, budget, name, ttl_s,
                                          _max_calls(fields), task_id)
        return json_response(201, task_payload(task))

    return await idempotency.once(ctx.engine, "agent:" + agent, key,
                                  idempotency.request_digest(request, raw), run)


@endpoint
async def get_task(ctx: Context, request: Request) -> Response:
    agent = await ctx.auth.agent(request)
    task = await ctx.engine.task(agent, request.path_params["task_id"])
    return json_response(200, task_payload(task))


@endpoint
async def close_task(ctx: Context, request: Request) -> Response:
    """Close the task: its open holds are released; answers its summary (again, for a task
    already closed: closing is idempotent)."""
    agent = await ctx.auth.agent(request)
    # Closing is idempotent by itself; a key is still checked as on every POST.
    idempotency.idempotency_key(request)
    Fields(await read_json(request, ctx.settings.body_bytes_max, optional=True), ())
    task, released = await ctx.engine.close_task(agent, request.path_params["task_id"])
    return json_response(200, {**task_payload(task), "holds_released": released})


@endpoint
async def list_agent_tasks(ctx: Context, request: Request) -> Response:
    agent = request.path_params["agent"]
    caller = await ctx.auth.admin_or_agent(request, agent)
    if caller.is_admin:
        check_name("agent", agent)
    tasks, next_cursor = await ctx.engine.agent_tasks_page(
        agent, _query_limit(request), request.query_params.get("cursor"))
    return json_response(200, {"agent": agent, "tasks": [task_payload(t) for t in tasks],
                               "next_cursor": next_cursor})
