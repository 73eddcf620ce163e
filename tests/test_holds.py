"""Holds: every path leaves the balance exact; expiry releases within 1 s."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.metering import errors
from gateway.metering.engine import Engine
from tests.helpers import T, events, setup_catalog


async def agent_with(engine: Engine, balance: int) -> str:
    await setup_catalog(engine)
    await engine.create_agent("h1", grant_micros=balance)
    return "h1"


async def test_hold_capture_returns_the_rest(engine: Engine) -> None:
    agent = await agent_with(engine, T)
    hold = await engine.hold(agent, "llm_summarize", 300_000)
    assert hold.balance_micros == T - 300_000
    state = await engine.agent_state(agent)
    assert state.held_micros == 300_000
    captured = await engine.capture(agent, hold.hold_id, 80_000)
    assert (captured.released_micros, captured.balance_micros) == (220_000, T - 80_000)
    state = await engine.agent_state(agent)
    assert (state.held_micros, state.spent_today_micros) == (0, 80_000)


async def test_capture_exactly_the_hold_and_above(engine: Engine) -> None:
    agent = await agent_with(engine, T)
    hold = await engine.hold(agent, "llm_summarize", 300_000)
    with pytest.raises(errors.InvalidRequest, match="held amount"):
        await engine.capture(agent, hold.hold_id, 300_001)
    captured = await engine.capture(agent, hold.hold_id, 300_000)
    assert captured.released_micros == 0 and captured.balance_micros == T - 300_000


async def test_second_capture_and_capture_after_release_refused(engine: Engine) -> None:
    agent = await agent_with(engine, T)
    one = await engine.hold(agent, "llm_summarize", 100_000)
    await engine.capture(agent, one.hold_id, 50_000)
    with pytest.raises(errors.HoldClosed, match="captured"):
        await engine.capture(agent, one.hold_id, 50_000)
    two = await engine.hold(agent, "llm_summarize", 100_000)
    released = await engine.release(agent, two.hold_id)
    assert released.released_micros == 100_000
    with pytest.raises(errors.HoldClosed, match="released"):
        await engine.capture(agent, two.hold_id, 1)
    with pytest.raises(errors.HoldClosed):
        await engine.release(agent, two.hold_id)
    assert (await engine.agent_state(agent)).balance_micros == T - 50_000


async def test_hold_of_another_agent_is_not_found(engine: Engine) -> None:
    agent = await agent_with(engine, T)
    await engine.create_agent("other", grant_micros=T)
    hold = await engine.hold(agent, "llm_summarize", 100_000)
    with pytest.raises(errors.NotFound):
        await engine.capture("other", hold.hold_id, 1)
    with pytest.raises(errors.NotFound):
        await engine.release("other", hold.hold_id)
    with pytest.raises(errors.NotFound):
        await engine.capture(agent, "hold_" + "0" * 32, 1)


async def test_hold_refusals(engine: Engine) -> None:
    agent = await agent_with(engine, 100_000)
    with pytest.raises(errors.BalanceInsufficient):
        await engine.hold(agent, "llm_summarize", 100_001)
    await engine.set_limits(agent, {"categories.llm.per_call": 50_000})
    with pytest.raises(errors.PerCallLimitExceeded):
        await engine.hold(agent, "llm_summarize", 50_001)
    with pytest.raises(errors.InvalidRequest):
        await engine.hold(agent, "llm_summarize", 1, ttl_s=3601)
    assert (await engine.agent_state(agent)).balance_micros == 100_000


async def test_expiry_releases_within_one_second(real_engine: Engine) -> None:
    engine = real_engine
    agent = await agent_with(engine, T)
    hold = await engine.hold(agent, "llm_summarize", 400_000, ttl_s=1)
    sweeper = asyncio.create_task(_sweep(engine))
    try:
        deadline = hold.expires_at_ms / 1000 + 1.0
        while (await engine.agent_state(agent)).balance_micros != T:
            assert time.time() < deadline + 0.2, "hold not released within 1 s of expiry"
            await asyncio.sleep(0.02)
    finally:
        sweeper.cancel()
    assert time.time() <= deadline + 0.2
    assert [e["kind"] for e in await events(engine, agent)][-1] == "expire"
    with pytest.raises(errors.HoldClosed, match="expired"):
        await engine.capture(agent, hold.hold_id, 1)
    assert (await engine.agent_state(agent)).held_micros == 0


async def _sweep(engine: Engine) -> None:
    while True:
        await engine.expire_holds()
        await asyncio.sleep(0.25)


async def test_expired_but_unswept_hold_cannot_be_captured(engine: Engine) -> None:
    agent = await agent_with(engine, T)
    hold = await engine.hold(agent, "llm_summarize", 400_000, ttl_s=1)
    await asyncio.sleep(1.1)
    with pytest.raises(errors.HoldClosed, match="expired"):
        await engine.capture(agent, hold.hold_id, 1)
    assert await engine.expire_holds() == 1
    assert (await engine.agent_state(agent)).balance_micros == T
