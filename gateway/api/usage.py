"""Usage reports from the ledger: GET /v1/agents/{agent}/usage (the agent's own key or the
admin) and GET /v1/usage (admin, every agent, or one with ``agent=``).

``?by=tool|category (tool)&period=hour|day (hour)&since=&until=``: ``since`` and ``until``
are ISO 8601 UTC times (``2026-11-29T10:00:00Z``) or dates (``2026-11-29``, midnight UTC);
``since`` is rounded down and ``until`` up to the period, so every bucket is whole. By
default the report ends now and covers the last 24 hours (hour) or 30 days (day); a range
of more than 31 days of hours or 366 days is refused (422 on ``since``), which bounds the
answer to 744 or 366 buckets per tool. Figures come from the ledger, so the newest calls
appear once the ledger writer has written them (about a second).
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.context import Context, endpoint
from gateway.api.responses import iso_ms, json_response
from gateway.ledger.usage import GROUPS, PERIOD_MS, UsageRow, usage
from gateway.metering.errors import InvalidRequest
from gateway.metering.limits import check_name
from gateway.metering.money import format_amount as fmt

AGENT_USAGE_PARAMS = ("by", "period", "since", "until")
ALL_USAGE_PARAMS = (*AGENT_USAGE_PARAMS, "agent")
RANGE_MAX_MS = {"hour": 31 * 86_400_000, "day": 366 * 86_400_000}
RANGE_DEFAULT_MS = {"hour": 86_400_000, "day": 30 * 86_400_000}
FIELD_ECHO_CHARS_MAX = 64
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
TIME_END_MS = 253_402_300_800_000  # 10000-01-01T00:00:00Z: times run from 1970 to 9999
TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2}))?")


@endpoint
async def get_agent_usage(ctx: Context, request: Request) -> Response:
    agent = request.path_params["agent"]
    caller = await ctx.auth.admin_or_agent(request, agent)
    if caller.is_admin:
        check_name("agent", agent)
    params = _params(request, AGENT_USAGE_PARAMS)
    query = await _query(ctx, params)
    await ctx.engine.agent_state(agent)  # 404 for an unknown agent
    return await _answer(ctx, agent, *query)


@endpoint
async def get_all_usage(ctx: Context, request: Request) -> Response:
    await ctx.auth.admin(request)
    params = _params(request, ALL_USAGE_PARAMS)
    agent = params.get("agent")
    if agent is not None:
        check_name("agent", agent)
    query = await _query(ctx, params)
    return await _answer(ctx, agent, *query)


async def _answer(ctx: Context, agent: str | None, by: str, period: str, since_ms: int,
                  until_ms: int) -> Response:
    rows = await usage(ctx.ledger, by, period, agent, since_ms, until_ms)
    return json_response(200, usage_payload(agent, by, period, since_ms, until_ms, rows))


def usage_payload(agent: str | None, by: str, period: str, since_ms: int, until_ms: int,
                  rows: list[UsageRow]) -> dict[str, Any]:
    """The report: one row per (bucket, key) that had paid calls, totals per key, and the
    grand total; amounts as decimal strings."""
    per_key: dict[str, list[int]] = {}
    for r in rows:
        sums = per_key.setdefault(r.key, [0, 0])
        sums[0] += r.calls
        sums[1] += r.amount_micros
    return {
        "agent": agent, "by": by, "period": period,
        "since": iso_ms(since_ms), "until": iso_ms(until_ms),
        "rows": [{"start": iso_ms(r.start_ms), by: r.key, "calls": r.calls,
                  "amount": fmt(r.amount_micros)} for r in rows],
        "totals": [{by: key, "calls": calls, "amount": fmt(amount)}
                   for key, (calls, amount) in sorted(per_key.items())],
        "total": {"calls": sum(r.calls for r in rows),
                  "amount": fmt(sum(r.amount_micros for r in rows))}}


async def _query(ctx: Context, params: dict[str, str]) -> tuple[str, str, int, int]:
    by = params.get("by", "tool")
    if by not in GROUPS:
        raise InvalidRequest("by", f"must be one of {', '.join(GROUPS)}")
    period = params.get("period", "hour")
    if period not in PERIOD_MS:
        raise InvalidRequest("period", "must be hour or day")
    width_ms = PERIOD_MS[period]
    until = params.get("until")
    until_ms = _ms("until", until) if until is not None else await ctx.engine.clock_ms()
    until_ms = -(-until_ms // width_ms) * width_ms  # up to a whole bucket
    if until_ms >= TIME_END_MS:  # rounded up into year 10000, which no time can name
        raise InvalidRequest("until", f"must round up (to a whole {period}) to a time "
                                      "before the year 10000")
    since = params.get("since")
    since_ms = (_ms("since", since) if since is not None
                else until_ms - RANGE_DEFAULT_MS[period]) // width_ms * width_ms
    if since_ms >= until_ms:
        raise InvalidRequest("since", "must be before until")
    if until_ms - since_ms > RANGE_MAX_MS[period]:
        days = RANGE_MAX_MS[period] // 86_400_000
        raise InvalidRequest("since", f"the range may cover at most {days} days "
                                      f"with period={period}")
    return by, period, since_ms, until_ms


def _ms(field: str, raw: str) -> int:
    """Unix ms of an ISO 8601 time with a zone (or a date: midnight UTC)."""
    if not TIME_RE.fullmatch(raw):
        raise InvalidRequest(field, "must be an ISO 8601 UTC time (2026-11-29T10:00:00Z) "
                                    "or a date (2026-11-29)")
    try:
        moment = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidRequest(field, "is not a valid date or time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    ms = (moment - EPOCH) // datetime.timedelta(milliseconds=1)  # exact, no float
    if not 0 <= ms < TIME_END_MS:
        raise InvalidRequest(field, "must be between 1970 and 9999")
    return ms


def _params(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in allowed:
            raise InvalidRequest(name[:FIELD_ECHO_CHARS_MAX],
                                 f"is not a parameter here (use {', '.join(allowed)})")
        if name in params:
            raise InvalidRequest(name, "must be given at most once")
        params[name] = value
    return params
