"""iou recover rebuilds the walls beyond the balance from the ledger: the rolling hour's minute
buckets, the ISO week's and the calendar month's spending (net of refunds), the call counts
of the current minute, hour and day (agent, category, tool), and the held counters of the
open holds taken while the walls were on (so that closing such a hold gives back). A wiped
and recovered Redis refuses and allows the same calls as before the wipe.

The scenario runs on the test clock: a Wednesday, 10:30:05 UTC, with calls spread over the
previous month, the previous ISO week, this week and the last hour."""

from __future__ import annotations

import calendar
from collections.abc import Awaitable
from typing import Any

from gateway.ledger.recover import recover
from gateway.ledger.refunds import charge_ref
from gateway.ledger.store import LedgerStore
from gateway.metering import errors
from gateway.metering.engine import Engine
from gateway.metering.walls import usage
from gateway.store.keys import TEST_CLOCK_KEY
from tests.conftest import flush
from tests.helpers import shift_to
from tests.ledger_helpers import writer_for

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
NOW_MS = calendar.timegm((2026, 11, 18, 10, 30, 5)) * 1000  # a Wednesday
AGENTS = ("hr", "wk", "mo", "calls", "late")
PROBES: list[tuple[str, str, int | None]] = [
    ("hr", "llm_summarize", 20_000), ("hr", "web_browse", None), ("wk", "web_search", None),
    ("mo", "web_search", None), ("calls", "web_browse", None), ("calls", "buy", None),
    ("late", "web_search", None)]


def at(day: int, hour: int, minute: int, second: int = 0, month: int = 11) -> int:
    return calendar.timegm((2026, month, day, hour, minute, second)) * 1000


async def outcome(call: Awaitable[object]) -> dict[str, Any]:
    """A call's refusal details ({} when it passed); Retry-After left out (the clock moves
    on while the test runs), checked separately."""
    try:
        await call
        return {}
    except errors.GatewayError as exc:
        return {"code": exc.code, **exc.details}


def without_retry(found: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in found.items() if k != "retry_after_s"}


async def probe(engine: Engine, agent: str, tool: str, cost: int | None) -> dict[str, Any]:
    return await outcome(engine.charge(agent, tool, cost))


def live(fields: dict[str, str], now_ms: int) -> dict[str, int]:
    """What the walls hash holds at ``now_ms`` by wall and scope, non-zero (what the scripts
    read for a call then), and that it is in records."""
    assert "@" in fields, fields
    return {wall: n for wall, n in usage(fields, now_ms).items() if n != 0}


async def walls_of(engine: Engine, agent: str) -> dict[str, str]:
    raw: list[bytes] = await engine.conn.call_or_raise(
        b"HGETALL", engine.agent_keys(agent).walls)
    return {raw[i].decode(): raw[i + 1].decode() for i in range(0, len(raw), 2)}


async def history(engine: Engine, store: LedgerStore) -> str:
    """The calls of the scenario, in time order; returns the id of the hold left open."""
    for agent in AGENTS:
        await engine.create_agent(agent, 10_000_000)
    await shift_to(engine, at(31, 11, 0, month=10))
    await engine.set_limits("hr", {"hourly": 200_000, "categories.llm.hourly": 100_000})
    await engine.set_limits("wk", {"weekly": 200_000})
    await engine.set_limits("mo", {"monthly": 300_000, "categories.tool.monthly": 200_000})
    await shift_to(engine, at(31, 12, 0, month=10))  # last month
    await engine.charge("mo", "web_browse")
    await shift_to(engine, at(14, 12, 0))  # last ISO week, this month
    await engine.charge("wk", "web_browse")
    await engine.charge("mo", "web_browse")
    await shift_to(engine, at(16, 9, 0))  # Monday of this week
    await engine.charge("wk", "web_browse")
    await engine.charge("mo", "web_search")
    await shift_to(engine, at(18, 9, 30, 30))  # 60 minutes ago: out of the rolling hour
    await engine.charge("hr", "web_search")
    await shift_to(engine, at(18, 10, 0, 30))
    await engine.charge("hr", "llm_summarize", 60_000)
    await engine.charge("wk", "web_search")
    await engine.charge("late", "web_browse")  # before its walls: never counted
    await shift_to(engine, at(18, 10, 10))
    refunded = await engine.charge("hr", "web_search")
    await writer_for(engine, store).drain()
    charge = await charge_ref(store, refunded.charge_id)
    assert charge is not None
    await engine.refund(charge, 30_000)  # 0.02 of it stays spent in this minute
    await shift_to(engine, at(18, 10, 20))
    hold = await engine.hold("hr", "llm_summarize", 30_000, ttl_s=3600)
    await shift_to(engine, at(18, 10, 25))
    await engine.charge("calls", "web_search")  # before its walls: never counted
    await engine.set_limits("calls", {"calls.per_day": 6, "tools.web_browse.calls.per_day": 2,
                                      "categories.commerce.calls.per_hour": 1})
    await engine.set_limits("late", {"hourly": 100_000})
    await engine.charge("late", "web_search")
    await shift_to(engine, NOW_MS)
    for tool in ("web_browse", "web_browse", "calc", "buy"):
        await engine.charge("calls", tool)
    await engine.hold("calls", "web_search", ttl_s=3600)
    return hold.hold_id


async def wipe_and_recover(engine: Engine, store: LedgerStore, url: str) -> None:
    await writer_for(engine, store).drain()
    await store.set_meta("partitions", str(engine.partitions))
    offset = await engine.conn.call_or_raise(b"GET", TEST_CLOCK_KEY)
    flush(url)
    await engine.conn.call_or_raise(b"SET", TEST_CLOCK_KEY, offset)
    await engine.scripts.preload()
    await recover(engine, store)


async def test_recover_rebuilds_the_walls(clocked: Engine, real_redis_url: str,
                                          store: LedgerStore) -> None:
    engine = clocked
    hold_id = await history(engine, store)
    now = await engine.clock_ms()
    walls_before = {a: live(await walls_of(engine, a), now) for a in AGENTS}
    before = [await probe(engine, *p) for p in PROBES[:-1]]  # each refused: nothing written
    assert [b.get("limit") for b in before] == [
        "category_hourly", "hourly", "weekly", "category_monthly", "calls_per_day",
        "calls_per_hour"], before
    assert before[4]["scope"] == "tool" and before[5]["scope"] == "category"

    await wipe_and_recover(engine, store, real_redis_url)

    now = await engine.clock_ms()
    walls_after = {a: live(await walls_of(engine, a), now) for a in AGENTS}
    assert walls_after == walls_before
    after = [await probe(engine, *p) for p in PROBES[:-1]]
    assert [without_retry(a) for a in after] == [without_retry(b) for b in before]
    for b, a in zip(before, after, strict=True):
        assert abs(a["retry_after_s"] - b["retry_after_s"]) <= 2, (b, a)
    # The agent's own cap still has room for one call: the one before its walls was not
    # counted, the open hold was.
    assert await probe(engine, "calls", "web_search", None) == {}
    assert (await probe(engine, "calls", "web_search", None))["limit"] == "calls_per_day"
    # Walls set after the first calls of the hour: only what came after counts.
    assert await probe(engine, *PROBES[-1]) == {}
    assert (await probe(engine, *PROBES[-1]))["limit"] == "hourly"
    # The open hold was counted in the rolling hour: releasing it gives its 0.03 back.
    await engine.release("hr", hold_id)
    assert await probe(engine, "hr", "llm_summarize", 20_000) == {}
