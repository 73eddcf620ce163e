"""The walls beyond the balance through the engine: limits round trip, refusals with their
details, and exact counts under concurrency (N concurrent calls, exactly the allowed pass)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable

import pytest

from gateway.api.responses import http_status
from gateway.metering import errors
from gateway.metering.engine import Engine
from gateway.metering.models import CallCaps, CategoryLimits, ToolLimits
from tests.helpers import T, setup_catalog, snapshot


async def outcome(call: Awaitable[object]) -> str:
    try:
        await call
        return "ok"
    except errors.GatewayError as exc:
        return str(exc.details.get("limit", exc.code))


async def test_limits_round_trip(engine: Engine) -> None:
    await setup_catalog(engine)
    await engine.create_agent("a", 10 * T)
    limits = await engine.set_limits("a", {
        "hourly": T, "weekly": 2 * T, "monthly": 3 * T, "calls.per_minute": 5,
        "calls.per_day": 100, "categories.llm.hourly": 400_000,
        "categories.commerce.calls.per_day": 1, "tools.web_browse.calls.per_day": 10,
        "tools.web_browse.per_call": 200_000})
    assert (limits.hourly_micros, limits.weekly_micros, limits.monthly_micros) == (
        T, 2 * T, 3 * T)
    assert limits.calls == CallCaps(per_minute=5, per_day=100)
    assert limits.categories == {"commerce": CategoryLimits(calls=CallCaps(per_day=1)),
                                 "llm": CategoryLimits(hourly_micros=400_000)}
    assert limits.tools == {"web_browse": ToolLimits(200_000, CallCaps(per_day=10))}
    limits = await engine.set_limits("a", {"tools.web_browse.calls.per_day": None,
                                           "tools.web_browse.per_call": None, "hourly": None})
    assert limits.tools == {} and limits.hourly_micros is None


@pytest.mark.parametrize("name,value", [("tools.x.hourly", T), ("calls.per_week", 1),
                                        ("calls.per_day", 0), ("calls.per_day", 10**9 + 1),
                                        ("categories.Bad.hourly", T), ("weekly", True)])
async def test_limits_refused(engine: Engine, name: str, value: int) -> None:
    await engine.create_agent("a", T)
    with pytest.raises(errors.InvalidRequest):
        await engine.set_limits("a", {name: value})


async def test_window_refusal_details_and_nothing_written(engine: Engine) -> None:
    await setup_catalog(engine)
    await engine.create_agent("a", 10 * T)
    await engine.set_limits("a", {"categories.tool.weekly": 100_000})
    await engine.charge("a", "web_search")
    await engine.charge("a", "web_search")
    before = await snapshot(engine)
    with pytest.raises(errors.WindowLimitExceeded) as refused:
        await engine.charge("a", "web_search")
    assert http_status(refused.value) == 429
    details = refused.value.details
    assert details | {"retry_after_s": 0} == {
        "limit": "category_weekly", "category": "tool", "max": "0.1", "spent": "0.1",
        "retry_after_s": 0}
    assert 0 < details["retry_after_s"] <= 7 * 86400
    assert await snapshot(engine) == before


async def test_call_cap_refusal_details(engine: Engine) -> None:
    await setup_catalog(engine)
    await engine.create_agent("a", 10 * T)
    await engine.set_limits("a", {"tools.calc.calls.per_minute": 1,
                                  "tools.web_browse.per_call": 100_000})
    await engine.charge("a", "calc")
    before = await snapshot(engine)
    with pytest.raises(errors.WindowLimitExceeded) as refused:
        await engine.charge("a", "calc")
    assert refused.value.details | {"retry_after_s": 0} == {
        "limit": "calls_per_minute", "scope": "tool", "category": "tool", "tool": "calc",
        "max": 1, "retry_after_s": 0}
    assert 0 < refused.value.details["retry_after_s"] <= 60
    with pytest.raises(errors.PerCallLimitExceeded) as over:
        await engine.charge("a", "web_browse")
    assert http_status(over.value) == 403 and over.value.details["limit"] == "tool_per_call"
    assert await snapshot(engine) == before


async def test_hourly_exactly_14_of_400(real_engine: Engine) -> None:
    """Hourly 1.00, 400 concurrent 0.07 charges: exactly 14 pass."""
    engine = real_engine
    await setup_catalog(engine)
    await engine.set_tool("api_call", 70_000, "tool")
    await engine.create_agent("racer", 100 * T)
    await engine.set_limits("racer", {"hourly": T})
    outcomes = Counter(await asyncio.gather(*(outcome(engine.charge("racer", "api_call"))
                                              for _ in range(400))))
    assert outcomes == {"ok": 14, "hourly": 386}
    assert (await engine.agent_state("racer")).balance_micros == 100 * T - 14 * 70_000


async def test_weekly_exact_with_holds_and_charges_mixed(real_engine: Engine) -> None:
    """Weekly 1.00: 200 charges and 200 holds of 0.07, concurrent; exactly 14 pass, and
    releasing the holds gives their room back."""
    engine = real_engine
    await setup_catalog(engine)
    await engine.set_tool("api_call", 70_000, "tool")
    await engine.create_agent("racer", 100 * T)
    await engine.set_limits("racer", {"categories.tool.weekly": T})
    calls = [engine.charge("racer", "api_call") if i % 2 else engine.hold("racer", "api_call")
             for i in range(400)]
    results = await asyncio.gather(*(c for c in calls), return_exceptions=True)
    passed = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, errors.WindowLimitExceeded)]
    assert len(passed) == 14 and len(refused) == 386
    holds = [r for r in passed if hasattr(r, "hold_id")]
    for h in holds:
        await engine.release("racer", h.hold_id)
    more = Counter(await asyncio.gather(*(outcome(engine.charge("racer", "api_call"))
                                          for _ in range(50))))
    assert more == {"ok": len(holds), "category_weekly": 50 - len(holds)}


async def test_calls_per_day_exactly_10_of_200_free(real_engine: Engine) -> None:
    """The seed's 10-URL monitor: per_day 10 on the tool, 200 concurrent calls, exactly 10."""
    engine = real_engine
    await setup_catalog(engine)
    await engine.create_agent("monitor", 10 * T)
    await engine.set_limits("monitor", {"tools.calc.calls.per_day": 10})
    outcomes = Counter(await asyncio.gather(*(outcome(engine.charge("monitor", "calc"))
                                              for _ in range(200))))
    assert outcomes == {"ok": 10, "calls_per_day": 190}
    assert await outcome(engine.charge("monitor", "web_search")) == "ok"
