"""A capture lands in the daily window of the moment it is made: a hold taken before
midnight and captured after it is checked against the new day's caps (the test clock moves
the scripts' day)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis

from gateway.metering import errors
from gateway.metering.engine import Engine
from gateway.store.keys import TEST_CLOCK_KEY
from tests.gateway_proc import Gateway, running_gateway
from tests.helpers import T, shift_to
from tests.http_helpers import error_of, new_agent, seed_tools
from tests.servers import redis_server

DAY_MS = 86_400_000


async def midnight(engine: Engine) -> int:
    """The next UTC midnight of the scripts' clock, in ms."""
    await engine.conn.call_or_raise(b"SET", TEST_CLOCK_KEY, 0)
    return (await engine.clock_ms() // DAY_MS + 1) * DAY_MS


async def test_capture_after_midnight_cannot_pass_the_new_days_cap(clocked: Engine) -> None:
    engine = clocked
    await engine.create_agent("late", 5 * T)
    await engine.set_limits("late", {"daily": T})
    at = await midnight(engine)
    await shift_to(engine, at - 1_000)  # 23:59:59
    hold = await engine.hold("late", "llm_summarize", T)
    await shift_to(engine, at + 1_000)  # 00:00:01
    await engine.charge("late", "llm_summarize", cost_micros=T)
    with pytest.raises(errors.WindowLimitExceeded) as info:
        await engine.capture("late", hold.hold_id, T)
    assert info.value.details["limit"] == "daily"
    assert 0 < info.value.details["retry_after_s"] <= 86_400
    state = await engine.agent_state("late")
    assert (state.spent_today_micros, state.held_micros) == (T, T)  # the hold stays open
    released = await engine.release("late", hold.hold_id)
    assert released.released_micros == T
    assert (await engine.agent_state("late")).balance_micros == 4 * T


async def test_capture_after_midnight_within_the_new_days_room(clocked: Engine) -> None:
    engine = clocked
    await engine.create_agent("room", 5 * T)
    await engine.set_limits("room", {"daily": T})
    at = await midnight(engine)
    await shift_to(engine, at - 1_000)
    hold = await engine.hold("room", "llm_summarize", 900_000)
    await engine.set_limits("room", {"categories.llm.daily": 600_000})
    await shift_to(engine, at + 1_000)
    await engine.charge("room", "llm_summarize", cost_micros=300_000)
    with pytest.raises(errors.WindowLimitExceeded) as info:
        await engine.capture("room", hold.hold_id, 300_001)
    assert (info.value.details["limit"], info.value.details["category"]) == (
        "category_daily", "llm")
    captured = await engine.capture("room", hold.hold_id, 300_000)
    assert captured.released_micros == 600_000
    state = await engine.agent_state("room")
    assert (state.spent_today_micros, state.held_micros) == (600_000, 0)


async def test_capture_on_the_same_day_is_not_checked_again(clocked: Engine) -> None:
    engine = clocked
    await engine.create_agent("same", 5 * T)
    await engine.set_limits("same", {"daily": T})
    at = await midnight(engine)
    await shift_to(engine, at - 60_000)
    hold = await engine.hold("same", "llm_summarize", T)
    await engine.set_limits("same", {"daily": 1})  # the hold was counted when it was taken
    await shift_to(engine, at - 1_000)
    assert (await engine.capture("same", hold.hold_id, T)).released_micros == 0


@pytest.fixture(scope="module")
def clocked_gateway() -> Iterator[tuple[Gateway, redis.Redis]]:
    with redis_server() as (url, _), running_gateway(url, IOU_TEST_CLOCK="1") as gw:
        seed_tools(gw)
        client = redis.Redis.from_url(url)
        yield gw, client
        client.close()


def _shift(client: redis.Redis, target_ms: int) -> None:
    client.set(TEST_CLOCK_KEY, 0)
    seconds, micros = client.time()
    client.set(TEST_CLOCK_KEY, target_ms - (seconds * 1000 + micros // 1000))


def _midnight(client: redis.Redis) -> int:
    seconds, _ = client.time()
    return (seconds * 1000 // DAY_MS + 1) * DAY_MS


def test_http_capture_across_midnight_is_refused_429(
        clocked_gateway: tuple[Gateway, redis.Redis]) -> None:
    gw, client = clocked_gateway
    name, key = new_agent(gw, "5")
    with gw.admin() as admin:
        assert admin.patch(f"/v1/agents/{name}/limits", json={"daily": "1"}).status_code == 200
    at = _midnight(client)
    with gw.agent(key) as agent:
        _shift(client, at - 1_000)
        hold = agent.post("/v1/holds", json={"tool": "llm_summarize", "max_cost": "1"})
        assert hold.status_code == 201, hold.text
        _shift(client, at + 1_000)
        charged = agent.post("/v1/charge", json={"tool": "llm_summarize", "cost": "1"})
        assert charged.status_code == 200
        refused = agent.post(f"/v1/holds/{hold.json()['hold_id']}/capture", json={"cost": "1"})
        _expect_daily_refusal(refused)
        state = agent.get("/v1/balance").json()
        assert (state["spent_today"], state["held"], state["balance"]) == ("1", "1", "3")
        released = agent.post(f"/v1/holds/{hold.json()['hold_id']}/release")
        assert released.status_code == 200 and released.json()["balance"] == "4"
    client.set(TEST_CLOCK_KEY, 0)


def _expect_daily_refusal(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert error_of(response) == "limit_exceeded"
    body = response.json()
    assert body["limit"] == "daily" and body["spent"] == "1" and body["max"] == "1"
    assert int(response.headers["retry-after"]) == body["retry_after_s"] > 0
