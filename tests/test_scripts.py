"""Every return code of every script at its boundaries, on real Redis and on fakeredis."""

from __future__ import annotations

import pytest

from gateway.api.responses import http_status
from gateway.metering import errors
from gateway.metering.engine import Engine
from tests.helpers import T, events, setup_catalog, snapshot


async def new_agent(engine: Engine, balance: int, name: str = "a1") -> str:
    await setup_catalog(engine)
    await engine.create_agent(name, grant_micros=balance)
    return name


async def test_exact_balance_then_one_micro_over(engine: Engine) -> None:
    agent = await new_agent(engine, 100_000)  # exactly two web_search
    await engine.charge(agent, "web_search")
    result = await engine.charge(agent, "web_search")
    assert result.balance_micros == 0
    before = await snapshot(engine)
    with pytest.raises(errors.BalanceInsufficient) as info:
        await engine.charge(agent, "web_search")
    assert info.value.details == {"balance": "0", "cost": "0.05"}
    assert await snapshot(engine) == before


async def test_one_micro_short(engine: Engine) -> None:
    agent = await new_agent(engine, 49_999)
    with pytest.raises(errors.BalanceInsufficient):
        await engine.charge(agent, "web_search")
    assert (await engine.agent_state(agent)).balance_micros == 49_999


async def test_free_tool_at_zero_balance_is_in_the_ledger(engine: Engine) -> None:
    agent = await new_agent(engine, 0)
    result = await engine.charge(agent, "calc")
    assert (result.cost_micros, result.balance_micros) == (0, 0)
    kinds = [(e["kind"], e.get("tool")) for e in await events(engine, agent)]
    assert ("charge", "calc") in kinds


async def test_frozen_agent_refused_paid_but_free_allowed(engine: Engine) -> None:
    agent = await new_agent(engine, T)
    await engine.freeze(agent, True)
    with pytest.raises(errors.AgentFrozen):
        await engine.charge(agent, "web_search")
    with pytest.raises(errors.AgentFrozen):
        await engine.hold(agent, "llm_summarize", 100_000)
    await engine.charge(agent, "calc")
    await engine.freeze(agent, False)
    assert (await engine.charge(agent, "web_search")).balance_micros == T - 50_000


async def test_unknown_agent_and_tool(engine: Engine) -> None:
    await setup_catalog(engine)
    with pytest.raises(errors.NotFound, match="agent ghost"):
        await engine.charge("ghost", "web_search")
    with pytest.raises(errors.NotFound, match="tool"):
        await engine.charge("ghost", "no_such_tool")
    with pytest.raises(errors.NotFound):
        await engine.fund("ghost", T)
    with pytest.raises(errors.NotFound):
        await engine.freeze("ghost", True)
    with pytest.raises(errors.NotFound):
        await engine.set_limits("ghost", {"daily": T})


async def test_per_call_cap_exact_and_over(engine: Engine) -> None:
    agent = await new_agent(engine, 10 * T)
    await engine.set_limits(agent, {"per_call": 80_000})
    await engine.charge(agent, "llm_summarize", cost_micros=80_000)
    with pytest.raises(errors.PerCallLimitExceeded) as info:
        await engine.charge(agent, "llm_summarize", cost_micros=80_001)
    assert http_status(info.value) == 403
    assert info.value.details["limit"] == "per_call"
    assert info.value.details["max"] == "0.08"


async def test_category_per_call_cap(engine: Engine) -> None:
    agent = await new_agent(engine, 10 * T)
    await engine.set_limits(agent, {"categories.commerce.per_call": 70_000})
    await engine.charge(agent, "buy")
    await engine.set_limits(agent, {"categories.commerce.per_call": 69_999})
    with pytest.raises(errors.PerCallLimitExceeded) as info:
        await engine.charge(agent, "buy")
    assert info.value.details["limit"] == "category_per_call"
    assert info.value.details["category"] == "commerce"
    await engine.charge(agent, "web_search")  # other categories unaffected


async def test_daily_cap_exact_and_over(engine: Engine) -> None:
    agent = await new_agent(engine, 10 * T)
    await engine.set_limits(agent, {"daily": 100_000})
    first = await engine.charge(agent, "web_search")
    assert first.warnings == ()
    second = await engine.charge(agent, "web_search")
    assert "daily_near" in second.warnings
    with pytest.raises(errors.WindowLimitExceeded) as info:
        await engine.charge(agent, "web_search")
    assert http_status(info.value) == 429
    assert info.value.details["limit"] == "daily"
    assert info.value.details["spent"] == "0.1"
    assert 0 < info.value.details["retry_after_s"] <= 86_400
    await engine.charge(agent, "calc")  # free calls do not count


async def test_category_daily_cap(engine: Engine) -> None:
    agent = await new_agent(engine, 10 * T)
    await engine.set_limits(agent, {"categories.llm.daily": 100_000})
    await engine.charge(agent, "llm_summarize", cost_micros=100_000)
    with pytest.raises(errors.WindowLimitExceeded) as info:
        await engine.charge(agent, "llm_summarize", cost_micros=1)
    assert info.value.details["limit"] == "category_daily"
    await engine.charge(agent, "web_search")


async def test_daily_cap_counts_open_holds(engine: Engine) -> None:
    agent = await new_agent(engine, 10 * T)
    await engine.set_limits(agent, {"daily": 200_000})
    await engine.hold(agent, "llm_summarize", 150_000)
    with pytest.raises(errors.WindowLimitExceeded):
        await engine.charge(agent, "buy")
    await engine.charge(agent, "web_search")


async def test_low_balance_crossing_reported_once(engine: Engine) -> None:
    agent = await new_agent(engine, 200_000)
    await engine.set_limits(agent, {"low_balance": 100_000})
    first = await engine.charge(agent, "web_search")  # 0.15 left
    assert first.warnings == () and not first.low_crossed
    second = await engine.charge(agent, "web_search")  # 0.10 left: not below
    assert not second.low_crossed
    third = await engine.charge(agent, "web_search")  # 0.05: crossed
    assert third.low_crossed and "low_balance" in third.warnings
    fourth = await engine.charge(agent, "web_search")  # 0: still low, not a new crossing
    assert not fourth.low_crossed and "low_balance" in fourth.warnings
    await engine.fund(agent, T)
    await engine.charge(agent, "web_search")
    await engine.set_limits(agent, {"low_balance": 920_000})  # 0.95 left: above
    crossed = await engine.charge(agent, "web_search")
    assert crossed.low_crossed


async def test_idempotent_replay_and_conflict(engine: Engine) -> None:
    agent = await new_agent(engine, T)
    first = await engine.charge(agent, "web_search", idempotency_key="k1")
    again = await engine.charge(agent, "web_search", idempotency_key="k1")
    assert again.replayed and again.charge_id == first.charge_id
    assert again.balance_micros == first.balance_micros == T - 50_000
    with pytest.raises(errors.IdempotencyConflict):
        await engine.charge(agent, "web_browse", idempotency_key="k1")
    assert (await engine.agent_state(agent)).balance_micros == T - 50_000
    assert len([e for e in await events(engine, agent) if e["kind"] == "charge"]) == 1


async def test_idempotency_keys_scoped_per_agent(engine: Engine) -> None:
    await new_agent(engine, T, "a1")
    await engine.create_agent("a2", grant_micros=T)
    one = await engine.charge("a1", "web_search", idempotency_key="same")
    two = await engine.charge("a2", "web_search", idempotency_key="same")
    assert not two.replayed and one.charge_id != two.charge_id


async def test_fund_and_overflow(engine: Engine) -> None:
    agent = await new_agent(engine, 0)
    result = await engine.fund(agent, 20 * T, idempotency_key="f1")
    assert result.balance_micros == 20 * T
    assert (await engine.fund(agent, 20 * T, idempotency_key="f1")).replayed
    for _ in range(9):
        await engine.fund(agent, engine.settings.amount_max_micros)
    with pytest.raises(errors.InvalidRequest, match="balance"):
        await engine.fund(agent, engine.settings.amount_max_micros)


async def test_create_agent_exists_and_grant(engine: Engine) -> None:
    await setup_catalog(engine)
    created = await engine.create_agent("fresh")
    assert created.balance_micros == 10 * T  # IOU_SIGNUP_GRANT default
    assert created.api_key.startswith("iou_") and len(created.api_key) >= 36
    with pytest.raises(errors.AgentExists):
        await engine.create_agent("fresh")
    kinds = [e["kind"] for e in await events(engine, "fresh")]
    assert kinds == ["agent", "grant"]


async def test_keys_add_authenticate_revoke(engine: Engine) -> None:
    created = await (lambda: engine.create_agent("keyed"))()
    assert await engine.authenticate(created.api_key) == "keyed"
    key_id, api_key = await engine.add_key("keyed")
    assert await engine.authenticate(api_key) == "keyed"
    await engine.revoke_key("keyed", key_id)
    assert await engine.authenticate(api_key) is None
    assert await engine.authenticate(created.api_key) == "keyed"
    assert await engine.authenticate("iou_" + "x" * 43) is None
    with pytest.raises(errors.NotFound):
        await engine.revoke_key("keyed", key_id)


async def test_set_limits_merge_and_remove(engine: Engine) -> None:
    agent = await new_agent(engine, T)
    limits = await engine.set_limits(agent, {"per_call": T, "daily": 5 * T,
                                             "categories.llm.per_call": 50_000,
                                             "webhook_url": "http://127.0.0.1:9/h"})
    assert (limits.per_call_micros, limits.daily_micros) == (T, 5 * T)
    assert limits.categories["llm"].per_call_micros == 50_000
    limits = await engine.set_limits(agent, {"per_call": None})
    assert limits.per_call_micros is None and limits.daily_micros == 5 * T
    before = await snapshot(engine)
    with pytest.raises(errors.InvalidRequest):
        await engine.set_limits(agent, {"daily": 0})
    with pytest.raises(errors.InvalidRequest):
        await engine.set_limits(agent, {"webhook_url": "ftp://x"})
    with pytest.raises(errors.InvalidRequest):
        await engine.set_limits(agent, {"nonsense": 1})
    assert await snapshot(engine) == before


async def test_fixed_price_refuses_client_cost(engine: Engine) -> None:
    agent = await new_agent(engine, T)
    with pytest.raises(errors.InvalidRequest, match="cost"):
        await engine.charge(agent, "web_search", cost_micros=1)
    with pytest.raises(errors.InvalidRequest, match="cost"):
        await engine.charge(agent, "llm_summarize")


async def test_tool_catalog(engine: Engine) -> None:
    await setup_catalog(engine)
    tool = await engine.set_tool("web_search", 60_000, "tool", upstream="http://127.0.0.1:9")
    assert tool.price_micros == 60_000
    await engine.delete_tool("buy")
    assert "buy" not in [t.name for t in engine.tools()]
    with pytest.raises(errors.NotFound):
        await engine.delete_tool("buy")


async def test_crossing_queues_webhooks_once_in_the_same_script(engine: Engine) -> None:
    agent = await new_agent(engine, 200_000)
    await engine.set_limits(agent, {"low_balance": 100_000,
                                    "webhook_url": "http://127.0.0.1:9/hook"})
    outbox = engine.agent_keys(agent).webhooks
    await engine.charge(agent, "web_search")
    await engine.charge(agent, "web_search")
    assert await engine.conn.call_or_raise(b"XLEN", outbox) == 0
    await engine.charge(agent, "web_search")  # crossed
    await engine.charge(agent, "web_search")
    entries = await engine.conn.call_or_raise(b"XRANGE", outbox, b"-", b"+")
    events_sent = [dict(zip(f[::2], f[1::2], strict=True))[b"event"] for _, f in entries]
    assert events_sent == [b"balance.low", b"refill.requested"]


async def test_a_thousand_concurrent_charges_go_out_in_one_write(real_engine: Engine) -> None:
    import asyncio

    await setup_catalog(real_engine)
    await real_engine.create_agent("batched", grant_micros=100 * T)
    writes, commands = real_engine.conn.writes, real_engine.conn.commands  # type: ignore[attr-defined]
    await asyncio.gather(*(real_engine.charge("batched", "web_search") for _ in range(1000)))
    assert real_engine.conn.commands - commands == 1000  # type: ignore[attr-defined]
    assert real_engine.conn.writes - writes == 1  # type: ignore[attr-defined]
