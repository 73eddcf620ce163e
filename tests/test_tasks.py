"""Tasks (budget envelopes) through the engine: open, show, close with its summary, listing,
the refusals with their contract errors, and exact counts under concurrency."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable

import pytest

from gateway.api.responses import http_status
from gateway.metering import errors
from gateway.metering.engine import Engine
from gateway.metering.models import HoldResult
from tests.helpers import T, events, setup_catalog, snapshot


async def outcome(call: Awaitable[object]) -> str:
    try:
        await call
        return "ok"
    except errors.GatewayError as exc:
        return str(exc.details.get("limit", exc.code))


async def test_open_charge_show_close(engine: Engine) -> None:
    await setup_catalog(engine)
    await engine.create_agent("a", 10 * T)
    opened = await engine.open_task("a", 2 * T, name="research", ttl_s=600,
                                    max_calls={"web_browse": 3, "commerce": 1})
    assert opened.task_id.startswith("task_") and len(opened.task_id) == 37
    assert opened.state == "open"
    assert opened.expires_at_ms == opened.created_ms + 600_000
    await engine.charge("a", "web_search", task=opened.task_id)
    await engine.charge("a", "llm_summarize", 300_000, task=opened.task_id)
    await engine.charge("a", "calc", task=opened.task_id)
    hold = await engine.hold("a", "web_browse", task=opened.task_id)
    shown = await engine.task("a", opened.task_id)
    assert (shown.spent_micros, shown.held_micros, shown.calls) == (350_000, 120_000, 4)
    assert shown.name == "research" and shown.max_calls == {"commerce": 1, "web_browse": 3}
    assert shown.spent_by_tool == {"llm_summarize": 300_000, "web_search": 50_000}
    assert shown.spent_by_category == {"llm": 300_000, "tool": 50_000}
    assert shown.calls_by_tool == {"calc": 1, "llm_summarize": 1, "web_browse": 1,
                                   "web_search": 1}
    assert shown.calls_by_category == {"llm": 1, "tool": 3}
    closed, released = await engine.close_task("a", opened.task_id)
    assert released == 1
    assert closed.state == "closed" and closed.held_micros == 0
    assert closed.spent_micros == 350_000 and closed.closed_ms is not None
    assert (await engine.agent_state("a")).balance_micros == 10 * T - 350_000
    with pytest.raises(errors.HoldClosed):
        await engine.capture("a", hold.hold_id, 1)
    again, released = await engine.close_task("a", opened.task_id)
    assert released == 0 and again == closed
    with pytest.raises(errors.TaskClosed) as info:
        await engine.charge("a", "web_search", task=opened.task_id)
    assert http_status(info.value) == 409
    assert info.value.details == {"task": opened.task_id, "state": "closed"}
    listed = await engine.agent_tasks("a")
    assert [t.task_id for t in listed] == [opened.task_id]


async def test_close_releases_many_holds(engine: Engine) -> None:
    """More open holds than the first batch of entry ids: the close asks for more."""
    await setup_catalog(engine)
    await engine.create_agent("a", 10 * T)
    task = await engine.open_task("a", 5 * T)
    for _ in range(9):
        await engine.hold("a", "web_search", task=task.task_id)
    closed, released = await engine.close_task("a", task.task_id)
    assert released == 9 and closed.held_micros == 0
    state = await engine.agent_state("a")
    assert (state.balance_micros, state.held_micros) == (10 * T, 0)
    kinds = Counter(e["kind"] for e in await events(engine, "a") if e.get("task"))
    assert kinds == {"hold": 9, "release": 9}


async def test_refusals_are_the_contract_errors_and_write_nothing(engine: Engine) -> None:
    await setup_catalog(engine)
    await engine.create_agent("a", 10 * T)
    await engine.create_agent("b", 10 * T)
    task = await engine.open_task("a", 100_000, max_calls={"web_search": 1})
    other = await engine.open_task("b", T)
    await engine.charge("a", "web_search", task=task.task_id)
    before = await snapshot(engine)
    with pytest.raises(errors.TaskLimitExceeded) as calls:
        await engine.charge("a", "web_search", task=task.task_id)
    assert http_status(calls.value) == 403
    assert calls.value.to_dict()["limit"] == "task_calls"
    assert calls.value.details["max"] == 1 and calls.value.details["name"] == "web_search"
    with pytest.raises(errors.TaskLimitExceeded) as budget:
        await engine.charge("a", "buy", task=task.task_id)
    assert budget.value.details == {"limit": "task_budget", "task": task.task_id,
                                    "max": "0.1", "spent": "0.05"}
    with pytest.raises(errors.TaskLimitExceeded):
        await engine.hold("a", "buy", task=task.task_id)
    with pytest.raises(errors.NotFound):
        await engine.charge("a", "web_search", task=other.task_id)  # b's task
    with pytest.raises(errors.NotFound):
        await engine.charge("a", "web_search", task="task_" + "0" * 32)
    with pytest.raises(errors.NotFound):
        await engine.charge("a", "web_search", task="not a task")
    with pytest.raises(errors.NotFound):
        await engine.task("a", other.task_id)
    with pytest.raises(errors.NotFound):
        await engine.close_task("a", other.task_id)
    assert await snapshot(engine) == before


async def test_require_task(engine: Engine) -> None:
    await setup_catalog(engine)
    await engine.create_agent("a", 10 * T)
    limits = await engine.set_limits("a", {"require_task": True})
    assert limits.require_task
    before = await snapshot(engine)
    with pytest.raises(errors.TaskLimitExceeded) as info:
        await engine.charge("a", "web_search")
    assert http_status(info.value) == 403 and info.value.details == {"limit": "task_required"}
    with pytest.raises(errors.TaskLimitExceeded):
        await engine.hold("a", "web_search")
    assert await snapshot(engine) == before
    await engine.charge("a", "calc")  # free: no task needed
    task = await engine.open_task("a", T)
    await engine.charge("a", "web_search", task=task.task_id)
    assert not (await engine.set_limits("a", {"require_task": None})).require_task
    await engine.charge("a", "web_search")


@pytest.mark.parametrize("kwargs", [
    {"budget_micros": 0}, {"budget_micros": -1}, {"ttl_s": 0}, {"ttl_s": 604_801},
    {"name": ""}, {"name": "x" * 129}, {"name": "tab\t"}, {"max_calls": {"Bad": 1}},
    {"max_calls": {"web": 0}}, {"max_calls": {"web": 10**9 + 1}},
    {"max_calls": {f"t{i}": 1 for i in range(65)}}])
async def test_open_refuses_bad_inputs(engine: Engine, kwargs: dict[str, object]) -> None:
    await engine.create_agent("a", T)
    args: dict[str, object] = {"budget_micros": T, **kwargs}
    before = await snapshot(engine)
    with pytest.raises(errors.InvalidRequest):
        await engine.open_task("a", **args)  # type: ignore[arg-type]
    assert await snapshot(engine) == before


async def test_open_for_unknown_agent(engine: Engine) -> None:
    with pytest.raises(errors.NotFound):
        await engine.open_task("nobody", T)
    with pytest.raises(errors.NotFound):
        await engine.agent_tasks("nobody")


async def test_expired_task(clocked: Engine) -> None:
    engine = clocked
    await engine.create_agent("a", 10 * T)
    task = await engine.open_task("a", T, ttl_s=60)
    await engine.charge("a", "web_search", task=task.task_id)
    offset = int(await engine.conn.call_or_raise(b"GET", b"iou:test:clock_offset_ms") or 0)
    await engine.conn.call_or_raise(b"SET", b"iou:test:clock_offset_ms", str(offset + 61_000))
    assert (await engine.task("a", task.task_id)).state == "expired"
    with pytest.raises(errors.TaskClosed) as info:
        await engine.charge("a", "web_search", task=task.task_id)
    assert info.value.details["state"] == "expired"
    closed, _ = await engine.close_task("a", task.task_id)
    assert closed.state == "closed"


async def test_task_budget_exactly_14_of_400(real_engine: Engine) -> None:
    """Task budget 1.00, 400 concurrent 0.07 charges: exactly 14 pass."""
    engine = real_engine
    await setup_catalog(engine)
    await engine.set_tool("api_call", 70_000, "tool")
    await engine.create_agent("racer", 100 * T)
    task = await engine.open_task("racer", T)
    outcomes = Counter(await asyncio.gather(*(
        outcome(engine.charge("racer", "api_call", task=task.task_id)) for _ in range(400))))
    assert outcomes == {"ok": 14, "task_budget": 386}
    shown = await engine.task("racer", task.task_id)
    assert (shown.spent_micros, shown.calls) == (14 * 70_000, 14)
    assert (await engine.agent_state("racer")).balance_micros == 100 * T - 14 * 70_000


async def test_task_budget_exact_with_holds_and_charges_mixed(real_engine: Engine) -> None:
    """Task budget 1.00: 200 charges and 200 holds of 0.07, concurrent; exactly 14 pass, and
    capturing and releasing the holds moves the task's money exactly."""
    engine = real_engine
    await setup_catalog(engine)
    await engine.set_tool("api_call", 70_000, "tool")
    await engine.create_agent("racer", 100 * T)
    task = await engine.open_task("racer", T)
    calls = [engine.charge("racer", "api_call", task=task.task_id) if i % 2 else
             engine.hold("racer", "api_call", task=task.task_id) for i in range(400)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    passed = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, errors.TaskLimitExceeded)]
    assert len(passed) == 14 and len(refused) == 386
    holds = [r for r in passed if isinstance(r, HoldResult)]
    shown = await engine.task("racer", task.task_id)
    assert shown.held_micros == 70_000 * len(holds)
    assert shown.spent_micros == 70_000 * (14 - len(holds))
    for i, h in enumerate(holds):
        if i % 2:
            await engine.capture("racer", h.hold_id)
        else:
            await engine.release("racer", h.hold_id)
    captured = len(holds) // 2
    shown = await engine.task("racer", task.task_id)
    assert shown.held_micros == 0
    assert shown.spent_micros == 70_000 * (14 - len(holds) + captured)
    room = T - shown.spent_micros
    extra = Counter(await asyncio.gather(*(
        outcome(engine.charge("racer", "api_call", task=task.task_id)) for _ in range(50))))
    assert extra["ok"] == room // 70_000


async def test_max_calls_exact_under_concurrency(real_engine: Engine) -> None:
    """max_calls {"web_browse": 10}: 200 concurrent calls, exactly 10 pass."""
    engine = real_engine
    await setup_catalog(engine)
    await engine.create_agent("racer", 100 * T)
    task = await engine.open_task("racer", 50 * T, max_calls={"web_browse": 10})
    outcomes = Counter(await asyncio.gather(*(
        outcome(engine.charge("racer", "web_browse", task=task.task_id)) for _ in range(200))))
    assert outcomes == {"ok": 10, "task_calls": 190}
