"""The loop breaker through the engine: the limit's round trip, what counts as the same
arguments (fingerprint, metadata, invoke body), refusal details, exact counts under
concurrency, the window sliding on the test clock, the freeze action, and no cost at all for
an agent without it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable
from typing import Any

import pytest

from gateway.api.responses import http_status
from gateway.metering import errors
from gateway.metering.children import partition_name
from gateway.metering.engine import Engine
from gateway.metering.models import LoopLimit
from gateway.store import keys
from tests.helpers import T, events, setup_catalog, shift_to, snapshot

T0 = 1_795_000_000_000  # ms


async def outcome(call: Awaitable[object]) -> str:
    try:
        await call
        return "ok"
    except errors.GatewayError as exc:
        return str(exc.details.get("limit", exc.code))


async def looping(engine: Engine, agent: str, repeats: int, window_s: int = 60,
                  action: str = "refuse", **more: Any) -> None:
    await setup_catalog(engine)
    await engine.create_agent(agent, 10 * T)
    await engine.set_limits(agent, {"loop": LoopLimit(repeats, window_s, action), **more})


async def command_calls(engine: Engine, *commands: str) -> int:
    """How many times Redis ran these commands (scripts' calls included), from INFO."""
    info = (await engine.conn.call_or_raise(b"INFO", b"commandstats")).decode()
    total = 0
    for line in info.splitlines():
        name, _, stats = line.partition(":")
        if name.removeprefix("cmdstat_") in commands:
            total += int(stats.split(",")[0].removeprefix("calls="))
    return total


async def test_loop_limit_round_trip(engine: Engine) -> None:
    await engine.create_agent("a", T)
    limits = await engine.set_limits("a", {"loop": LoopLimit(5, 60, "freeze")})
    assert limits.loop == LoopLimit(5, 60, "freeze")
    limits = await engine.set_limits("a", {"daily": T})
    assert limits.loop == LoopLimit(5, 60, "freeze")  # a patch keeps what it does not name
    assert (await engine.set_limits("a", {"loop": None})).loop is None


@pytest.mark.parametrize("loop,field", [
    (LoopLimit(0, 60, "refuse"), "loop.repeats"), (LoopLimit(1001, 60, "refuse"), "loop.repeats"),
    (LoopLimit(5, 0, "refuse"), "loop.window_s"),
    (LoopLimit(5, 86_401, "refuse"), "loop.window_s"),
    (LoopLimit(5, 60, "stop"), "loop.action"), ("5/60s", "loop")])
async def test_loop_limit_refused(engine: Engine, loop: Any, field: str) -> None:
    await engine.create_agent("a", T)
    with pytest.raises(errors.InvalidRequest) as refused:
        await engine.set_limits("a", {"loop": loop})
    assert refused.value.details["field"] == field


async def test_refusal_details_and_nothing_written(engine: Engine) -> None:
    await looping(engine, "a", 2, 90)
    await engine.charge("a", "web_search")
    await engine.charge("a", "web_search")
    before = await snapshot(engine)
    with pytest.raises(errors.LoopDetected) as refused:
        await engine.charge("a", "web_search")
    assert http_status(refused.value) == 429 and refused.value.code == "loop_detected"
    details = refused.value.details
    assert details | {"retry_after_s": 0} == {"tool": "web_search", "repeats": 2,
                                              "window_s": 90, "retry_after_s": 0}
    assert 89 <= details["retry_after_s"] <= 90
    assert await snapshot(engine) == before


async def test_same_arguments(engine: Engine) -> None:
    """Arguments: the fingerprint, else the metadata (key order does not matter), else none."""
    await looping(engine, "a", 1)
    await engine.charge("a", "web_search", metadata={"url": "x", "n": 1})
    assert await outcome(engine.charge("a", "web_search", metadata={"n": 1, "url": "x"})) == \
        "loop_detected"
    await engine.charge("a", "web_search", metadata={"url": "y", "n": 1})
    await engine.charge("a", "web_search")
    assert await outcome(engine.charge("a", "web_search")) == "loop_detected"
    await engine.charge("a", "web_search", fingerprint="x")
    await engine.charge("a", "web_search", fingerprint="")
    # The fingerprint wins over the metadata: other metadata, same fingerprint, same call.
    assert await outcome(engine.charge("a", "web_search", fingerprint="x",
                                       metadata={"other": True})) == "loop_detected"
    await engine.charge("a", "web_browse", fingerprint="x")  # another tool: its own count
    await engine.hold("a", "llm_summarize", fingerprint="q")
    assert await outcome(engine.hold("a", "llm_summarize", fingerprint="q")) == "loop_detected"
    await engine.hold("a", "llm_summarize", body=b'{"q": 1}')
    await engine.hold("a", "llm_summarize", body=b'{"q": 2}')
    assert await outcome(engine.hold("a", "llm_summarize", body=b'{"q": 2}')) == \
        "loop_detected"


@pytest.mark.parametrize("bad", ["x" * 129, 5, ["x"]])
async def test_fingerprint_checked(engine: Engine, bad: Any) -> None:
    await setup_catalog(engine)
    await engine.create_agent("a", T)
    with pytest.raises(errors.InvalidRequest) as refused:
        await engine.charge("a", "web_search", fingerprint=bad)
    assert refused.value.details["field"] == "fingerprint"
    await engine.charge("a", "web_search", fingerprint="x" * 128)
    await engine.charge("a", "web_search", fingerprint="\u00e9" * 128)


async def test_exactly_5_of_100_concurrent(real_engine: Engine) -> None:
    engine = real_engine
    await looping(engine, "racer", 5)
    outcomes = Counter(await asyncio.gather(*(
        outcome(engine.charge("racer", "web_search", fingerprint="https://same.example"))
        for _ in range(100))))
    assert outcomes == {"ok": 5, "loop_detected": 95}
    assert (await engine.agent_state("racer")).balance_micros == 10 * T - 5 * 50_000


async def test_exactly_5_of_100_mixed_charges_holds_free(real_engine: Engine) -> None:
    """Charges and holds of one tool with the same arguments share one count; a free tool's
    calls count as well."""
    engine = real_engine
    await looping(engine, "racer", 5)
    calls = [engine.charge("racer", "llm_summarize", 1000, fingerprint="same") if i % 2 else
             engine.hold("racer", "llm_summarize", 1000, fingerprint="same")
             for i in range(100)]
    free = [engine.charge("racer", "calc") for _ in range(100)]
    outcomes = Counter(await asyncio.gather(*(outcome(c) for c in calls)))
    free_outcomes = Counter(await asyncio.gather(*(outcome(c) for c in free)))
    assert outcomes == {"ok": 5, "loop_detected": 95}
    assert free_outcomes == {"ok": 5, "loop_detected": 95}


async def test_window_slides_on_the_test_clock(clocked: Engine) -> None:
    engine = clocked
    await engine.create_agent("a", 10 * T)
    await engine.set_limits("a", {"loop": LoopLimit(2, 60, "refuse")})
    await shift_to(engine, T0)
    await engine.charge("a", "web_search")
    await shift_to(engine, T0 + 20_000)
    await engine.charge("a", "web_search")
    await shift_to(engine, T0 + 40_500)
    with pytest.raises(errors.LoopDetected) as refused:
        await engine.charge("a", "web_search")
    assert refused.value.details["retry_after_s"] == 20  # the call at T0 leaves at T0 + 60 s
    await shift_to(engine, T0 + 60_500)
    await engine.charge("a", "web_search")
    with pytest.raises(errors.LoopDetected) as refused:
        await engine.charge("a", "web_search")
    assert refused.value.details["retry_after_s"] == 20  # now T0 + 20 s is the oldest


async def test_freeze_action(engine: Engine) -> None:
    await looping(engine, "a", 1, 60, "freeze", webhook_url="http://127.0.0.1:9/hook")
    await engine.charge("a", "web_search")
    with pytest.raises(errors.LoopDetected) as refused:
        await engine.charge("a", "web_search")
    assert "frozen" in refused.value.message
    state = await engine.agent_state("a")
    assert state.frozen and state.balance_micros == 10 * T - 50_000
    freeze = (await events(engine, "a"))[-1]
    assert (freeze["kind"], freeze["reason"], freeze["tool"]) == (
        "freeze", "loop_detected", "web_search")
    with pytest.raises(errors.AgentFrozen):
        await engine.charge("a", "web_browse")
    await engine.freeze("a", False)
    await engine.charge("a", "web_browse")


async def test_no_loop_no_extra_redis_call(real_engine: Engine) -> None:
    """An agent without a loop limit: its charges and holds run no list command at all (an
    agent with one runs them, which shows the count would see them)."""
    engine = real_engine
    await setup_catalog(engine)
    await engine.create_agent("plain", 10 * T)
    await engine.set_limits("plain", {"daily": 5 * T, "hourly": 5 * T})
    before = await command_calls(engine, "lindex", "lpush", "ltrim")
    for _ in range(5):
        await engine.charge("plain", "web_search", fingerprint="same")
    await engine.hold("plain", "web_search")
    assert await command_calls(engine, "lindex", "lpush", "ltrim") == before
    assert not await engine.conn.call_or_raise(b"KEYS", b"*loop*")
    await engine.set_limits("plain", {"loop": LoopLimit(9, 60, "refuse")})
    await engine.charge("plain", "web_search", fingerprint="same")
    assert await command_calls(engine, "lindex", "lpush", "ltrim") == before + 2


async def test_a_child_inherits_the_loop_and_only_tightens_it(engine: Engine) -> None:
    await looping(engine, "parent", 3, 60)
    partition = keys.partition_of("parent", engine.partitions)

    def kid(n: int) -> str:
        found = partition_name(f"kid{n}", partition, engine.partitions)
        assert found is not None
        return found

    for looser in (LoopLimit(4, 60, "refuse"), LoopLimit(3, 59, "refuse"), None):
        with pytest.raises(errors.InvalidRequest) as refused:
            await engine.create_child("parent", kid(1), T, {"loop": looser})
        assert refused.value.details["field"] == "loop"
    await engine.create_child("parent", kid(1), T)
    assert (await engine.agent_state(kid(1))).limits.loop == LoopLimit(3, 60, "refuse")
    await engine.create_child("parent", kid(2), T, {"loop": LoopLimit(2, 120, "freeze")})
    assert (await engine.agent_state(kid(2))).limits.loop == LoopLimit(2, 120, "freeze")
    await engine.set_limits("parent", {"loop": LoopLimit(3, 60, "freeze")})
    with pytest.raises(errors.InvalidRequest):  # the parent freezes: so must the child
        await engine.create_child("parent", kid(3), T, {"loop": LoopLimit(1, 600, "refuse")})
