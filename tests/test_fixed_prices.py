"""A client never chooses the price of a fixed-price tool: holds hold exactly the price and
captures charge exactly it, through the engine and straight against the scripts."""

from __future__ import annotations

import pytest

from gateway.metering import errors, ids
from gateway.metering.engine import Engine
from gateway.store.codes import Code
from tests.gateway_proc import Gateway
from tests.helpers import T, events, setup_catalog, snapshot
from tests.http_helpers import new_agent
from tests.test_price_changes import ok_upstream

GPT_PRICE = 2 * T


async def ready(engine: Engine) -> str:
    await setup_catalog(engine)
    await engine.set_tool("gpt_call", GPT_PRICE, "llm")
    await engine.create_agent("fx", grant_micros=10 * T)
    return "fx"


async def test_hold_below_the_price_is_refused(engine: Engine) -> None:
    agent = await ready(engine)
    before = await snapshot(engine)
    with pytest.raises(errors.InvalidRequest) as info:
        await engine.hold(agent, "gpt_call", 1)
    assert info.value.details["field"] == "max_cost"
    with pytest.raises(errors.InvalidRequest):
        await engine.hold(agent, "gpt_call", GPT_PRICE - 1)
    assert await snapshot(engine) == before


async def test_hold_at_or_above_the_price_holds_exactly_the_price(engine: Engine) -> None:
    agent = await ready(engine)
    for max_cost in (None, GPT_PRICE, GPT_PRICE + 1, 5 * T):
        hold = await engine.hold(agent, "gpt_call", max_cost)
        assert hold.amount_micros == GPT_PRICE and hold.fixed
        await engine.release(agent, hold.hold_id)
    assert (await engine.agent_state(agent)).balance_micros == 10 * T


async def test_capture_of_a_fixed_hold_charges_exactly_the_price(engine: Engine) -> None:
    agent = await ready(engine)
    hold = await engine.hold(agent, "gpt_call")
    for wrong in (0, 1, GPT_PRICE - 1):
        with pytest.raises(errors.InvalidRequest) as info:
            await engine.capture(agent, hold.hold_id, wrong)
        assert info.value.details["field"] == "cost"
    assert (await engine.agent_state(agent)).held_micros == GPT_PRICE
    captured = await engine.capture(agent, hold.hold_id)
    assert (captured.cost_micros, captured.released_micros) == (GPT_PRICE, 0)
    again = await engine.hold(agent, "gpt_call")
    exact = await engine.capture(agent, again.hold_id, GPT_PRICE)
    assert exact.cost_micros == GPT_PRICE
    captures = [e for e in await events(engine, agent) if e["kind"] == "capture"]
    assert [e["amount"] for e in captures] == [str(GPT_PRICE)] * 2
    assert (await engine.agent_state(agent)).balance_micros == 6 * T


async def test_capture_replay_answers_the_cost(engine: Engine) -> None:
    agent = await ready(engine)
    hold = await engine.hold(agent, "gpt_call", idempotency_key="h")
    replayed = await engine.hold(agent, "gpt_call", idempotency_key="h")
    assert (replayed.replayed, replayed.hold_id, replayed.amount_micros, replayed.fixed) == (
        True, hold.hold_id, GPT_PRICE, True)
    first = await engine.capture(agent, hold.hold_id, idempotency_key="c")
    second = await engine.capture(agent, hold.hold_id, idempotency_key="c")
    assert second.replayed and second.cost_micros == first.cost_micros == GPT_PRICE


async def test_variable_holds_still_capture_any_cost_up_to_the_hold(engine: Engine) -> None:
    agent = await ready(engine)
    default = await engine.hold(agent, "llm_summarize")
    assert default.amount_micros == 80_000 and not default.fixed
    with pytest.raises(errors.InvalidRequest, match="cost"):
        await engine.capture(agent, default.hold_id)
    assert (await engine.capture(agent, default.hold_id, 0)).cost_micros == 0


async def test_free_tool_cannot_be_held(engine: Engine) -> None:
    agent = await ready(engine)
    with pytest.raises(errors.InvalidRequest):
        await engine.hold(agent, "calc")


# ---- the scripts are the last guard: a caller that bypasses the Python checks ----------

def hold_call(engine: Engine, tool: str, max_cost: str) -> tuple[list[str], list[str]]:
    k = engine.agent_keys("fx")
    hold_id = ids.hold_id()
    return ([k.agent_hash, k.window, k.hold(hold_id), k.holds, k.idempotency("x"), k.events,
             k.webhooks, k.tools],
            ["fx", ids.uuid7(), hold_id, tool, max_cost, str(engine.settings.amount_max_micros),
             "60000", "3600000", "", "", ""])


def charge_call(engine: Engine, tool: str, cost: str) -> tuple[list[str], list[str]]:
    k = engine.agent_keys("fx")
    return ([k.agent_hash, k.window, k.idempotency("x"), k.events, k.webhooks, k.tools],
            ["fx", ids.uuid7(), tool, cost, str(engine.settings.amount_max_micros), "", "", ""])


def capture_call(engine: Engine, hold_id: str, cost: str) -> tuple[list[str], list[str]]:
    k = engine.agent_keys("fx")
    return ([k.agent_hash, k.window, k.hold(hold_id), k.holds, k.idempotency("x"), k.events,
             k.tools],
            ["fx", ids.uuid7(), hold_id, cost, str(engine.settings.amount_max_micros), "", "",
             ""])


async def test_hold_script_refuses_a_max_cost_below_a_fixed_price(engine: Engine) -> None:
    await ready(engine)
    before = await snapshot(engine)
    reply = await engine.scripts.run("hold", *hold_call(engine, "gpt_call", "1"))
    assert reply[:2] == [Code.HOLD_BELOW_PRICE, GPT_PRICE]
    assert await snapshot(engine) == before
    held = await engine.scripts.run("hold", *hold_call(engine, "gpt_call", "9000000"))
    assert held[0] == Code.OK and held[5] == GPT_PRICE


async def test_charge_script_takes_no_cost_for_a_fixed_tool(engine: Engine) -> None:
    await ready(engine)
    before = await snapshot(engine)
    for cost in ("0", "1", str(GPT_PRICE)):
        reply = await engine.scripts.run("charge", *charge_call(engine, "gpt_call", cost))
        assert reply[:2] == [Code.COST_FIXED, GPT_PRICE]
    assert await engine.scripts.run("charge", *charge_call(engine, "nope", "")) == [
        Code.TOOL_NOT_FOUND]
    assert await snapshot(engine) == before
    reply = await engine.scripts.run("charge", *charge_call(engine, "gpt_call", ""))
    assert reply[0] == Code.OK and reply[4:] == [GPT_PRICE, b"llm", b""]


async def test_capture_script_refuses_another_cost_for_a_fixed_hold(engine: Engine) -> None:
    agent = await ready(engine)
    hold = await engine.hold(agent, "gpt_call")
    before = await snapshot(engine)
    for cost in ("0", "1", str(GPT_PRICE - 1)):
        reply = await engine.scripts.run("capture", *capture_call(engine, hold.hold_id, cost))
        assert reply[:2] == [Code.COST_FIXED, GPT_PRICE]
    assert await snapshot(engine) == before
    reply = await engine.scripts.run("capture", *capture_call(engine, hold.hold_id, ""))
    assert reply[0] == Code.OK and reply[5] == GPT_PRICE


# ---- every route that can charge, over HTTP --------------------------------------------

def _gpt_agent(gateway: Gateway) -> str:
    with gateway.admin() as admin:
        assert admin.put("/v1/tools/gpt_call", json={"price": "2",
                                                     "category": "llm"}).status_code == 200
    return new_agent(gateway, "10")[1]


def test_http_hold_and_capture_cannot_lower_a_fixed_price(gateway: Gateway) -> None:
    key = _gpt_agent(gateway)
    with gateway.agent(key) as agent:
        low = agent.post("/v1/holds", json={"tool": "gpt_call", "max_cost": "0.000001"})
        assert low.status_code == 422 and low.json()["field"] == "max_cost"
        high = agent.post("/v1/holds", json={"tool": "gpt_call", "max_cost": "5"})
        assert high.status_code == 201 and high.json()["amount"] == "2"
        hold_id = high.json()["hold_id"]
        zero = agent.post(f"/v1/holds/{hold_id}/capture", json={"cost": "0"})
        assert zero.status_code == 422 and zero.json()["field"] == "cost"
        assert agent.get("/v1/balance").json()["held"] == "2"
        captured = agent.post(f"/v1/holds/{hold_id}/capture", json={})
        assert captured.status_code == 200, captured.text
        assert (captured.json()["cost"], captured.json()["balance"]) == ("2", "8")
        variable = agent.post("/v1/holds", json={"tool": "llm_summarize", "max_cost": "1"})
        missing = agent.post(f"/v1/holds/{variable.json()['hold_id']}/capture", json={})
        assert missing.status_code == 422 and missing.json()["field"] == "cost"


def test_http_charge_and_batch_cannot_name_a_fixed_price(gateway: Gateway) -> None:
    key = _gpt_agent(gateway)
    with gateway.agent(key) as agent:
        named = agent.post("/v1/charge", json={"tool": "gpt_call", "cost": "0"})
        assert named.status_code == 422 and named.json()["field"] == "cost"
        batch = agent.post("/v1/charges", json={"charges": [
            {"tool": "gpt_call", "cost": "0.000001"}, {"tool": "gpt_call"}]})
        assert batch.status_code == 200
        first, second = batch.json()["results"]
        assert first["error"] == "invalid_request" and second["cost"] == "2"
        assert agent.get("/v1/balance").json()["balance"] == "8"


def test_http_invoke_holds_and_captures_exactly_the_price(gateway: Gateway) -> None:
    key = _gpt_agent(gateway)
    with ok_upstream() as upstream, gateway.admin() as admin, gateway.agent(key) as agent:
        assert admin.put("/v1/tools/gpt_proxied", json={
            "price": "2", "category": "llm", "upstream": upstream}).status_code == 200
        chosen = agent.post("/v1/tools/gpt_proxied/invoke", json={},
                            headers={"x-iou-max-cost": "0.000001"})
        assert chosen.status_code == 422 and chosen.json()["field"] == "X-IOU-Max-Cost"
        invoked = agent.post("/v1/tools/gpt_proxied/invoke", json={})
        assert invoked.status_code == 200 and invoked.headers["x-iou-balance"] == "8"
        state = agent.get("/v1/balance").json()
        assert (state["balance"], state["held"]) == ("8", "0")
