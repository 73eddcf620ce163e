"""`iou replay`: the ledger's history under proposed limits, on a scratch Redis.

The acceptance test of issue 18: a recorded load (random calls of several agents over
simulated days, on the test clock) produces a ledger; the same load played live on a fresh
store with limits L enforced gives a set of refusals; the replay of the first ledger under L
reports exactly those refusals, per agent and limit, count and amount.
"""

from __future__ import annotations

import calendar
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.api.body import parse_json_object
from gateway.api.limits_body import limit_changes
from gateway.cli.replay import load_proposed
from gateway.ledger import replay as replay_module
from gateway.ledger.refunds import charge_ref
from gateway.ledger.replay import (
    Proposed,
    ReplayError,
    ReplayResult,
    parse_since,
    replay,
    warm_start_ms,
)
from gateway.ledger.store import LedgerStore
from gateway.metering.engine import Engine
from gateway.metering.errors import GatewayError
from gateway.store.keys import partition_of
from tests.conftest import make_engine
from tests.helpers import T, setup_catalog, shift_to
from tests.ledger_helpers import store_for, writer_for

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
AMOUNT_MAX = 1_000_000_000 * T
PRICES = {"web_search": 50_000, "web_browse": 120_000, "email_send": 20_000, "calc": 0,
          "buy": 70_000}
LIMITS: dict[str, Any] = {
    "per_call": "0.12", "daily": "0.6", "weekly": "1.8",
    "categories": {"llm": {"daily": "0.25"}, "commerce": {"calls": {"per_day": 1}}},
    "calls": {"per_hour": 3},
    "tools": {"email_send": {"calls": {"per_day": 1}}},
}
# One agent has its own cap merged over the default (PATCH semantics): a looser day.
PROPOSED_FILE: dict[str, Any] = {"default": LIMITS, "agents": {"rc": {"daily": "1"}}}
AGENTS = ("ra", "rb", "rc")


@dataclass(frozen=True)
class Call:
    """One call of the recorded load: at ``at_ms``, ``op`` of ``tool`` (cost for variable
    tools; a hold's max and its capture's cost)."""

    at_ms: int
    agent: str
    op: str  # "charge" or "hold"
    tool: str
    cost_micros: int | None = None
    capture_micros: int | None = None


def utc_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
           second: int = 0) -> int:
    return calendar.timegm((year, month, day, hour, minute, second)) * 1000


def recorded_load(seed: int, start_ms: int, days: int, calls_per_day: int) -> list[Call]:
    """Random calls of every agent over ``days`` days, in time order, well inside each minute
    (seconds 5..50) and hour so that a few ms of test-clock drift crosses no window edge."""
    rng = random.Random(seed)
    calls = []
    for day in range(days):
        for _ in range(calls_per_day):
            at = (start_ms + day * DAY_MS + rng.randrange(8, 18) * HOUR_MS
                  + rng.randrange(1, 58) * 60_000 + rng.randrange(5, 50) * 1000)
            agent = rng.choice(AGENTS)
            pick = rng.random()
            if pick < 0.15:
                cost = rng.randrange(20, 120) * 1000
                calls.append(Call(at, agent, "hold", "llm_summarize", cost,
                                  rng.randrange(1, cost // 1000) * 1000))
            elif pick < 0.4:
                calls.append(Call(at, agent, "charge", "llm_summarize",
                                  rng.randrange(10, 150) * 1000))
            else:
                calls.append(Call(at, agent, "charge", rng.choice(list(PRICES))))
    return sorted(calls, key=lambda c: c.at_ms)


Refusals = dict[str, dict[str, list[int]]]  # agent -> limit -> [count, micros]


def _count(refusals: Refusals, agent: str, error: GatewayError, micros: int) -> None:
    limit = str(error.details.get("limit") or error.code)
    tally = refusals.setdefault(agent, {}).setdefault(limit, [0, 0])
    tally[0] += 1
    tally[1] += micros


async def play(engine: Engine, load: list[Call], proposed: Proposed | None,
               created_ms: int) -> Refusals:
    """The load, live, each call at its time; with ``proposed``, its limits enforced.
    Returns what was refused (a hold: its amount; a capture: its cost, then released)."""
    await shift_to(engine, created_ms)
    for agent in AGENTS:
        await engine.create_agent(agent, grant_micros=100 * T)
        if proposed is not None:
            await engine.set_limits(agent, proposed.for_agent(agent))
    refusals: Refusals = {}
    for call in load:
        await shift_to(engine, call.at_ms)
        if call.op == "charge":
            try:
                await engine.charge(call.agent, call.tool, call.cost_micros)
            except GatewayError as exc:
                _count(refusals, call.agent, exc, call.cost_micros or PRICES[call.tool])
            continue
        try:
            hold = await engine.hold(call.agent, call.tool, call.cost_micros)
        except GatewayError as exc:
            _count(refusals, call.agent, exc, call.cost_micros or 0)
            continue
        await shift_to(engine, call.at_ms + 3_000)
        try:
            await engine.capture(call.agent, hold.hold_id, call.capture_micros)
        except GatewayError as exc:
            _count(refusals, call.agent, exc, call.capture_micros or 0)
            await engine.release(call.agent, hold.hold_id)
    return refusals


def reported(result: ReplayResult) -> Refusals:
    return {a.agent: {name: [t.count, t.amount_micros] for name, t in a.by_limit.items()}
            for a in result.agents if a.refused.count}


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[LedgerStore]:
    """Both ledgers: SQLite and PostgreSQL."""
    store = store_for(ledger_url)
    await store.migrate()
    yield store
    await store.close()


async def record(url: str, store: LedgerStore, load: list[Call], created_ms: int) -> None:
    """Play the load with no limit on a fresh store and write its ledger."""
    engine = await make_engine(url, IOU_TEST_CLOCK="1")
    try:
        await setup_catalog(engine)
        assert await play(engine, load, None, created_ms) == {}
        await writer_for(engine, store).drain()
    finally:
        await engine.stop()
        engine.conn.close()


async def enforce(url: str, load: list[Call], proposed: Proposed, created_ms: int
                  ) -> Refusals:
    """The same load live on a fresh store with the proposed limits enforced."""
    engine = await make_engine(url, IOU_TEST_CLOCK="1")
    try:
        await setup_catalog(engine)
        return await play(engine, load, proposed, created_ms)
    finally:
        await engine.stop()
        engine.conn.close()


async def test_replay_reports_exactly_the_refusals_the_live_store_made(
        real_redis_url: str, ledger: LedgerStore, tmp_path: Path) -> None:
    start = utc_ms(2026, 11, 12)  # a Thursday: the load crosses an ISO week
    load = recorded_load(18, start, days=5, calls_per_day=45)
    created = start - HOUR_MS
    await record(real_redis_url, ledger, load, created)
    path = tmp_path / "proposed.json"
    path.write_bytes(orjson.dumps(PROPOSED_FILE))
    proposed = load_proposed(path, AMOUNT_MAX)
    live = await enforce(real_redis_url, load, proposed, created)
    # The load is rich enough to mean something: several limits fired, for every agent.
    assert set(live) == set(AGENTS)
    assert len({limit for by_limit in live.values() for limit in by_limit}) >= 5, live

    result = await replay(ledger, proposed, scratch_dir=tmp_path)

    assert reported(result) == live
    assert [a.agent for a in result.agents] == list(AGENTS)
    assert result.rows >= len(load)


async def test_replay_filters_by_agent_and_warms_the_windows_before_since(
        real_redis_url: str, ledger: LedgerStore, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """--since replays the week before it without limits: the week's spend before `since`
    fills the weekly window, and only refusals from `since` on count. The grant, a month
    before, is folded into the starting balance. Pages of 5 rows: none lost or read twice."""
    monkeypatch.setattr(replay_module, "PAGE_ROWS", 5)
    monday, thursday = utc_ms(2026, 11, 16, 10), utc_ms(2026, 11, 19, 10)
    load = [Call(monday + i * 60_000, agent, "charge", "llm_summarize", 100_000)
            for i in range(12) for agent in ("ra", "rb")]
    load += [Call(thursday + i * 60_000, agent, "charge", "llm_summarize", 100_000)
             for i in range(4) for agent in ("ra", "rb")]
    await record(real_redis_url, ledger, load, utc_ms(2026, 10, 1))
    weekly = Proposed(limit_changes({"weekly": "1"}, AMOUNT_MAX))

    whole = reported(await replay(ledger, weekly, scratch_dir=tmp_path))
    assert whole == {a: {"weekly": [6, 600_000]} for a in ("ra", "rb")}

    wednesday = utc_ms(2026, 11, 18)
    assert warm_start_ms(wednesday) < utc_ms(2026, 11, 1) - DAY_MS + 1
    since = reported(await replay(ledger, weekly, since_ms=wednesday, scratch_dir=tmp_path))
    assert since == {a: {"weekly": [4, 400_000]} for a in ("ra", "rb")}

    one = await replay(ledger, weekly, agent="rb", since_ms=wednesday, scratch_dir=tmp_path)
    assert [a.agent for a in one.agents] == ["rb"]
    assert reported(one) == {"rb": {"weekly": [4, 400_000]}}
    # rb's 12 Monday charges (the warm-up) and 4 Thursday ones; its grant, in October, is
    # before the warm-up and folded into its starting balance (else nothing could pay).
    assert one.rows == 16


async def test_refunds_follow_the_replayed_charges(
        real_redis_url: str, ledger: LedgerStore, tmp_path: Path) -> None:
    """A refund of a charge the replay refused is skipped (it gave back money the replay
    never took); one of a charge the replay kept gives back to that day's window, as live.
    A debit in between moves the balance only."""
    engine = await make_engine(real_redis_url, IOU_TEST_CLOCK="1")
    try:
        await setup_catalog(engine)
        day = utc_ms(2026, 11, 10, 9)
        await shift_to(engine, day)
        await engine.create_agent("rf", grant_micros=10 * T)
        writer = writer_for(engine, store=ledger)
        kept = await engine.charge("rf", "llm_summarize", 200_000)
        refused = await engine.charge("rf", "llm_summarize", 200_000)
        await writer.drain()
        for charge_id, micros in ((refused.charge_id, 200_000), (kept.charge_id, 100_000)):
            ref = await charge_ref(ledger, charge_id)
            assert ref is not None
            await engine.refund(ref, micros)
        await engine.debit("rf", 50_000, "a correction")
        await engine.charge("rf", "llm_summarize", 150_000)  # the window holds 0.1: fits
        await engine.charge("rf", "llm_summarize", 100_000)  # 0.35 > 0.3: refused
        await writer.drain()
    finally:
        await engine.stop()
        engine.conn.close()
    daily = Proposed(limit_changes({"daily": "0.3"}, AMOUNT_MAX))
    result = await replay(ledger, daily, scratch_dir=tmp_path)
    assert reported(result) == {"rf": {"daily": [2, 300_000]}}


async def test_a_proposed_loop_breaker_sees_the_recorded_arguments(
        real_redis_url: str, ledger: LedgerStore, tmp_path: Path) -> None:
    """The same call (tool and metadata) 5 times in a minute, another call between: under a
    loop breaker of 3 repeats the last 2 repeats are refused, the other call is not."""
    engine = await make_engine(real_redis_url, IOU_TEST_CLOCK="1")
    try:
        await setup_catalog(engine)
        at = utc_ms(2026, 11, 10, 9)
        await shift_to(engine, at)
        await engine.create_agent("rl", grant_micros=10 * T)
        for i in range(5):
            await shift_to(engine, at + (i + 1) * 5_000)
            await engine.charge("rl", "web_search", metadata={"q": "same"})
            await engine.charge("rl", "web_search", metadata={"q": f"other {i}"})
        await writer_for(engine, ledger).drain()
    finally:
        await engine.stop()
        engine.conn.close()
    body = parse_json_object(b'{"loop": {"repeats": 3, "window_s": 60}}')
    loop = Proposed(limit_changes(body, AMOUNT_MAX))
    result = await replay(ledger, loop, scratch_dir=tmp_path)
    assert reported(result) == {"rl": {"loop_detected": [2, 100_000]}}


async def test_transfers_and_expired_holds_are_replayed(
        real_redis_url: str, ledger: LedgerStore, tmp_path: Path) -> None:
    """A sub-agent funded by its parent and reclaimed, and a hold that expired: the expiry
    gives the day's window back (else the parent's two later charges would not fit)."""
    engine = await make_engine(real_redis_url, IOU_TEST_CLOCK="1")
    try:
        await setup_catalog(engine)
        at = utc_ms(2026, 11, 10, 9)
        await shift_to(engine, at)
        await engine.create_agent("rp", grant_micros=10 * T)
        kid = next(name for n in range(1000) if partition_of(
            name := f"rp-kid-{n}", engine.partitions) == partition_of("rp", engine.partitions))
        await engine.create_child("rp", kid, 3 * T)
        for _ in range(3):
            await engine.charge(kid, "llm_summarize", 200_000)
        await engine.reclaim(kid, "rp")
        await engine.hold("rp", "llm_summarize", 300_000, ttl_s=1)
        await shift_to(engine, at + 5_000)
        assert await engine.expire_holds() == 1
        for _ in range(2):
            await engine.charge("rp", "llm_summarize", 250_000)
        await writer_for(engine, ledger).drain()
    finally:
        await engine.stop()
        engine.conn.close()
    daily = Proposed(limit_changes({"daily": "0.5"}, AMOUNT_MAX))
    result = await replay(ledger, daily, scratch_dir=tmp_path)
    assert reported(result) == {kid: {"daily": [1, 200_000]}}
    assert {a.agent for a in result.agents} == {"rp", kid}


def test_since_accepts_durations_and_dates() -> None:
    now = utc_ms(2026, 11, 29, 12)
    assert parse_since("7d", now) == now - 7 * DAY_MS
    assert parse_since("12h", now) == now - 12 * HOUR_MS
    assert parse_since("2026-11-01", now) == utc_ms(2026, 11, 1)
    with pytest.raises(ReplayError):
        parse_since("last week", now)


@pytest.mark.parametrize("text, words", [
    ("not json", "not one JSON object"),
    ("[1]", "not one JSON object"),
    ('{"daily": "-1"}', "daily"),
    ('{"dayly": "1"}', "dayly"),
    ('{"default": {"daily": "1"}, "agents": {"Bad Name": {}}}', "agents"),
])
def test_a_bad_limits_file_is_one_sentence(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "limits.json"
    path.write_text(text)
    with pytest.raises(ReplayError) as caught:
        load_proposed(path, AMOUNT_MAX)
    assert words in str(caught.value) and "\n" not in str(caught.value)
