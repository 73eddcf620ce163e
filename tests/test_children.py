"""Delegation through the engine and the ledger: exact counts under races, the family's money
constant, limits only tighter, reconcile and recover."""

from __future__ import annotations

import asyncio
import random

import pytest

from gateway.ledger.reconcile import reconcile
from gateway.ledger.recover import recover
from gateway.ledger.store import LedgerStore
from gateway.metering import errors
from gateway.metering.children import partition_name
from gateway.metering.engine import Engine
from gateway.store import keys
from tests.conftest import flush
from tests.helpers import T, setup_catalog, snapshot
from tests.ledger_helpers import writer_for


def kid(engine: Engine, parent: str, n: int) -> str:
    found = partition_name(f"{parent}-kid{n}", keys.partition_of(parent, engine.partitions),
                           engine.partitions)
    assert found is not None
    return found


async def family_micros(engine: Engine, names: list[str]) -> int:
    states = [await engine.agent_state(n) for n in names]
    return sum(s.balance_micros + s.held_micros for s in states)


async def test_concurrent_children_from_a_parent_with_money_for_seven(
        real_engine: Engine) -> None:
    await real_engine.create_agent("fam-race", grant_micros=700_000)
    names = [kid(real_engine, "fam-race", n) for n in range(60)]
    results = await asyncio.gather(*(real_engine.create_child("fam-race", name, 100_000)
                                     for name in names), return_exceptions=True)
    made = [r for r in results if not isinstance(r, BaseException)]
    assert len(made) == 7
    assert all(isinstance(r, errors.BalanceInsufficient) for r in results
               if isinstance(r, BaseException))
    assert (await real_engine.agent_state("fam-race")).balance_micros == 0
    listed = set(await real_engine.agent_names(1000))
    assert {m.agent for m in made} <= listed
    assert not (set(names) - {m.agent for m in made}) & listed  # refused: nothing created
    assert await family_micros(real_engine, ["fam-race", *(m.agent for m in made)]) == 700_000


async def test_concurrent_moves_never_create_or_lose_a_micro(real_engine: Engine) -> None:
    engine = real_engine
    await engine.create_agent("fam-sum", grant_micros=10 * T)
    children = [kid(engine, "fam-sum", n) for n in range(40)]
    rng = random.Random(7)

    async def move(i: int) -> None:
        child = children[i % len(children)]
        try:
            if rng.random() < 0.5:
                await engine.create_child("fam-sum", child, rng.randint(1, T))
            else:
                await engine.reclaim(child, "fam-sum", rng.choice([None, rng.randint(1, T)]))
        except errors.GatewayError:
            pass  # refused: exists, not found, more than there is

    await asyncio.gather(*(move(i) for i in range(400)))
    existing = [c for c in children if c in set(await engine.agent_names(1000))]
    assert existing
    assert await family_micros(engine, ["fam-sum", *existing]) == 10 * T


async def test_a_childs_limits_are_only_tighter(real_engine: Engine) -> None:
    engine = real_engine
    await setup_catalog(engine)
    await engine.create_agent("fam-lim", grant_micros=10 * T)
    await engine.set_limits("fam-lim", {"per_call": T, "daily": 5 * T,
                                        "categories.llm.hourly": 2 * T,
                                        "tools.calc.calls.per_day": 3, "require_task": True,
                                        "low_balance": 2 * T})
    before = await snapshot(engine)
    for changes, field in (({"per_call": T + 1}, "per_call"), ({"daily": None}, "daily"),
                           ({"categories.llm.hourly": 3 * T}, "categories.llm.hourly"),
                           ({"tools.calc.calls.per_day": 4}, "tools.calc.calls.per_day"),
                           ({"require_task": False}, "require_task")):
        with pytest.raises(errors.InvalidRequest) as refused:
            await engine.create_child("fam-lim", kid(engine, "fam-lim", 1), T, changes)
        assert refused.value.details["field"] == field
    assert await snapshot(engine) == before
    made = await engine.create_child("fam-lim", kid(engine, "fam-lim", 1), 3 * T, {
        "per_call": 500_000, "weekly": 4 * T, "tools.calc.calls.per_day": 2,
        "low_balance": 100_000})
    state = await engine.agent_state(made.agent)
    limits = state.limits
    assert (limits.per_call_micros, limits.daily_micros, limits.weekly_micros) == (
        500_000, 5 * T, 4 * T)
    assert limits.categories["llm"].hourly_micros == 2 * T
    assert limits.tools["calc"].calls.per_day == 2
    assert limits.require_task and limits.low_balance_micros == 100_000
    # The walls are on (x): the inherited call cap of the tool refuses its third call.
    with pytest.raises(errors.LimitExceeded):
        await engine.charge(made.agent, "web_search")  # require_task, inherited


async def test_refusals_create_nothing(real_engine: Engine) -> None:
    engine = real_engine
    await engine.create_agent("fam-no", grant_micros=T)
    await engine.create_agent("fam-no-frozen", grant_micros=T)
    await engine.freeze("fam-no-frozen", True)
    taken = kid(engine, "fam-no", 1)
    await engine.create_agent(taken, grant_micros=0)
    before = await snapshot(engine)
    wrong = "fam-no-x"
    while keys.partition_of(wrong, engine.partitions) == keys.partition_of(
            "fam-no", engine.partitions):
        wrong += "x"
    with pytest.raises(errors.InvalidRequest) as refused:
        await engine.create_child("fam-no", wrong, 1)
    assert refused.value.details["field"] == "name"
    suggestion = refused.value.details["reason"].split("'")[-2]
    assert keys.partition_of(suggestion, engine.partitions) == keys.partition_of(
        "fam-no", engine.partitions)
    with pytest.raises(errors.BalanceInsufficient):
        await engine.create_child("fam-no", kid(engine, "fam-no", 2), T + 1)
    with pytest.raises(errors.AgentExists):
        await engine.create_child("fam-no", taken, 1)
    with pytest.raises(errors.AgentFrozen):
        await engine.create_child("fam-no-frozen", kid(engine, "fam-no-frozen", 1), 1)
    with pytest.raises(errors.NotFound):
        await engine.create_child("fam-nobody", kid(engine, "fam-nobody", 1), 1)
    with pytest.raises(errors.InvalidRequest):
        await engine.create_child("fam-no", kid(engine, "fam-no", 3), 0)
    with pytest.raises(errors.Forbidden):
        await engine.reclaim(taken, "fam-no")  # a top-level agent is nobody's child
    assert await snapshot(engine) == before


async def test_ledger_reconcile_and_recover_keep_the_family(
        real_engine: Engine, real_redis_url: str, store: LedgerStore) -> None:
    engine = real_engine
    await setup_catalog(engine)
    await engine.create_agent("fam-led", grant_micros=5 * T)
    child = kid(engine, "fam-led", 1)
    made = await engine.create_child("fam-led", child, 2 * T, {"per_call": 300_000})
    await engine.charge(child, "web_search")
    await engine.reclaim(child, "fam-led", 500_000)
    writer = writer_for(engine, store)
    await writer.drain()
    rows = await store.entries(child, 10)
    assert [(e.kind, e.amount, e.ref) for e in rows] == [
        ("transfer_out", 500_000, "fam-led"), ("charge", 50_000, None),
        ("transfer_in", 2 * T, "fam-led")]
    parent_rows = await store.entries("fam-led", 10)
    assert [(e.kind, e.amount, e.ref) for e in parent_rows][:2] == [
        ("transfer_in", 500_000, child), ("transfer_out", 2 * T, child)]
    assert await reconcile(engine, store, writer) == []
    states = {n: await engine.agent_state(n) for n in ("fam-led", child)}
    await store.set_meta("partitions", str(engine.partitions))
    flush(real_redis_url)
    await engine.scripts.preload()
    await recover(engine, store)
    for name, state in states.items():
        assert await engine.agent_state(name) == state, name
    assert await engine.parent_of(child) == "fam-led"
    assert await engine.parent_of("fam-led") is None
    assert await engine.children_of("fam-led") == [child]
    assert (await engine.agent_state(child)).parent == "fam-led"
    done = await engine.reclaim(child, "fam-led")
    assert done.amount_micros == 2 * T - 550_000
    assert made.key_id
    assert await reconcile(engine, store, writer_for(engine, store, "second")) == []
