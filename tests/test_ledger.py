"""The ledger writer and stores: every event once, reconcile, recover, dead letters."""

from __future__ import annotations

import asyncio
import random

import pytest

from gateway.ledger.reconcile import reconcile
from gateway.ledger.recover import NotEmpty, recover
from gateway.ledger.store import LedgerStore
from gateway.metering import errors
from gateway.metering.engine import Engine
from gateway.store import keys
from tests.conftest import flush
from tests.helpers import T, setup_catalog
from tests.ledger_helpers import writer_for


async def busy_day(engine: Engine, agents: int = 5) -> int:
    """Every kind of event for a few agents; returns the number of money events."""
    await setup_catalog(engine)
    events = 0
    for i in range(agents):
        name = f"ledger-{i}"
        await engine.create_agent(name, grant_micros=5 * T)
        await engine.fund(name, T, idempotency_key=f"fund-{i}")
        await engine.charge(name, "web_search", idempotency_key=f"c-{i}",
                            metadata={"q": "pricing", "n": i})
        await engine.charge(name, "calc")
        hold = await engine.hold(name, "llm_summarize", 300_000, idempotency_key=f"h-{i}")
        await engine.capture(name, hold.hold_id, 80_000)
        other = await engine.hold(name, "llm_summarize", 100_000)
        await engine.release(name, other.hold_id)
        await engine.hold(name, "llm_summarize", 200_000)  # stays open
        await engine.set_limits(name, {"daily": 4 * T, "categories.llm.per_call": T,
                                       "weekly": 9 * T, "tools.calc.calls.per_day": 1})
        await engine.freeze(name, i % 2 == 0)
        await engine.add_key(name)
        events += 9  # grant, fund, 2 charges, 3 holds, capture, release
    return events


async def test_every_event_once_and_reconcile_clean(real_engine: Engine,
                                                    store: LedgerStore) -> None:
    money_events = await busy_day(real_engine)
    writer = writer_for(real_engine, store)
    await writer.drain()
    await writer.drain()  # a second pass finds nothing new and duplicates nothing
    assert await store.count() == money_events + 5 * 4 + 6  # + agent/limits/freeze/key, tools
    assert writer.stats.duplicates == 0
    assert await reconcile(real_engine, store, writer) == []
    page = await store.entries("ledger-1", 3)
    assert [e.kind for e in page] == ["hold", "release", "hold"]
    older = await store.entries("ledger-1", 100, before=page[-1].entry_id)
    assert [e.kind for e in older] == ["capture", "hold", "charge", "charge", "fund", "grant"]
    charges = await store.entries("ledger-1", 100, kind="charge", tool="web_search")
    assert len(charges) == 1 and charges[0].idempotency_key == "c-1"
    assert charges[0].metadata is not None and '"pricing"' in charges[0].metadata
    streams = [keys.events(p) for p in range(real_engine.partitions)]
    lengths = await asyncio.gather(*(real_engine.conn.call_or_raise(b"XLEN", s)
                                     for s in streams))
    assert sum(lengths) == 0  # everything committed was trimmed


async def test_reconcile_reports_drift(real_engine: Engine, store: LedgerStore) -> None:
    await busy_day(real_engine, 2)
    writer = writer_for(real_engine, store)
    await writer.drain()
    k = real_engine.agent_keys("ledger-0")
    await real_engine.conn.call_or_raise(b"HINCRBY", k.agent_hash, b"bal", 1)  # tampering
    drift = await reconcile(real_engine, store, writer)
    assert [(d.agent, d.redis_micros - (d.ledger_micros or 0)) for d in drift
            if d.redis_micros is not None] == [("ledger-0", 1)]


async def test_recover_rebuilds_an_empty_redis(real_engine: Engine, real_redis_url: str,
                                               store: LedgerStore) -> None:
    engine = real_engine
    await busy_day(engine, 3)
    before = {n: await engine.agent_state(n) for n in ("ledger-0", "ledger-1", "ledger-2")}
    writer = writer_for(engine, store)
    await writer.drain()
    await store.set_meta("partitions", str(engine.partitions))
    with pytest.raises(NotEmpty):
        await recover(engine, store)
    flush(real_redis_url)
    await engine.scripts.preload()
    done = await recover(engine, store)
    assert (done.agents, done.holds) == (3, 3)
    for name, state in before.items():
        after = await engine.agent_state(name)
        assert after == state, name
    assert await reconcile(engine, store, writer_for(engine, store, "second")) == []
    # Charges continue at the right balances, keys still work, replays still replay.
    again = await engine.charge("ledger-1", "web_search", idempotency_key="c-1",
                                metadata={"q": "pricing", "n": 1})
    assert again.replayed and again.balance_micros == 6 * T - 50_000  # the first answer
    fresh = await engine.charge("ledger-1", "web_search")
    assert fresh.balance_micros == before["ledger-1"].balance_micros - 50_000
    with pytest.raises(errors.AgentFrozen):
        await engine.charge("ledger-0", "web_search")
    # The walls are on again (the agent's x flag): the tool's call cap still counts.
    await engine.charge("ledger-1", "calc")
    with pytest.raises(errors.WindowLimitExceeded):
        await engine.charge("ledger-1", "calc")
    assert [t.name for t in engine.tools()] == sorted(
        ["buy", "calc", "email_send", "llm_summarize", "web_browse", "web_search"])


async def test_poisoned_entry_goes_to_dead_letters(real_engine: Engine,
                                                   store: LedgerStore) -> None:
    await setup_catalog(real_engine)
    await real_engine.create_agent("poison", grant_micros=T)
    stream = real_engine.agent_keys("poison").events
    await real_engine.conn.call_or_raise(b"XADD", stream, b"*", b"id", b"bad-1", b"at", b"1",
                                         b"kind", b"charge", b"agent", b"poison",
                                         b"amount", b"nan")
    await real_engine.charge("poison", "web_search")
    writer = writer_for(real_engine, store)
    await writer.prepare()
    for _ in range(6):
        await writer.drain_pending()
        await writer.read_new(0)
    assert await store.count("dead_letters") == 1
    assert writer.stats.dead_letters == 1
    kinds = [e.kind for e in await store.entries("poison", 10)]
    assert kinds == ["charge", "grant"]
    await writer.drain()
    assert await real_engine.conn.call_or_raise(b"XLEN", stream) == 0


async def test_many_charges_many_agents(real_engine: Engine, store: LedgerStore) -> None:
    """10,000 charges over 100 agents (the 100,000 x 1,000 run is in the slow suite)."""
    accepted = await charge_storm(real_engine, 100, 10_000)
    writer = writer_for(real_engine, store)
    await writer.drain()
    assert await store.count() - 2 * 100 - 6 == accepted  # minus agent+grant, tools
    assert await reconcile(real_engine, store, writer) == []


async def charge_storm(engine: Engine, agents: int, charges: int, seed: int = 7) -> int:
    """Random charges (some refused for balance) in concurrent waves; returns accepted."""
    await setup_catalog(engine)
    names = [f"storm-{i}" for i in range(agents)]
    for start in range(0, agents, 200):
        await asyncio.gather(*(engine.create_agent(n, grant_micros=random.Random(n).randint(
            T // 2, 3 * T)) for n in names[start:start + 200]))
    rng = random.Random(seed)
    tools = ["web_search", "web_browse", "email_send", "buy"]
    accepted = 0

    async def one(name: str, tool: str) -> bool:
        try:
            await engine.charge(name, tool)
            return True
        except errors.BalanceInsufficient:
            return False

    for start in range(0, charges, 500):
        wave = [one(rng.choice(names), rng.choice(tools)) for _ in range(min(500,
                                                                             charges - start))]
        accepted += sum(await asyncio.gather(*wave))
    return accepted


async def test_row_the_database_refuses_is_isolated(real_engine: Engine, ledger_url: str,
                                                    store: LedgerStore) -> None:
    await setup_catalog(real_engine)
    await real_engine.create_agent("isolated", grant_micros=T)
    stream = real_engine.agent_keys("isolated").events
    # Parses fine, but PostgreSQL's JSONB refuses the metadata; SQLite stores it as text.
    await real_engine.conn.call_or_raise(
        b"XADD", stream, b"*", b"id", b"odd-1", b"at", b"1", b"kind", b"fund", b"agent",
        b"isolated", b"amount", b"5", b"balance_after", b"5", b"meta", b"{not json")
    await real_engine.charge("isolated", "web_search")
    writer = writer_for(real_engine, store)
    await writer.prepare()
    for _ in range(6):
        await writer.drain_pending()
        await writer.read_new(0)
    kinds = [e.kind for e in await store.entries("isolated", 10)]
    if ledger_url.startswith("postgresql"):
        assert kinds == ["charge", "grant"] and await store.count("dead_letters") == 1
    else:
        assert kinds == ["charge", "fund", "grant"]


async def test_a_dead_writers_pending_entries_are_taken_over(real_engine: Engine,
                                                             store: LedgerStore) -> None:
    await busy_day(real_engine, 2)
    dead = writer_for(real_engine, store, "dead")
    await dead.prepare()
    stolen = await dead._read([b">"] * len(dead._streams), 0)  # read, then "die": no ack
    assert sum(len(entries) for _, entries in stolen) > 0
    dead.close()
    alive = writer_for(real_engine, store, "alive")
    assert await alive.read_new(0) == 0  # nothing new: all of it is pending with "dead"
    await alive.claim_stale(idle_ms=0)  # in service: after CLAIM_IDLE_MS of silence
    assert await reconcile(real_engine, store, alive) == []
    assert await store.count() == sum(len(entries) for _, entries in stolen)
    alive.close()


async def test_a_trickle_is_gathered_while_the_writer_lingers(
        real_engine: Engine, store: LedgerStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a small batch the writer waits LINGER_MS before reading again, so entries
    that arrive meanwhile come in the next read (without the wait it would find nothing
    and return with only the agent's creation settled)."""
    from gateway.ledger import writer as writer_module

    monkeypatch.setattr(writer_module, "LINGER_MS", 400)  # room for a slow, shared machine
    await setup_catalog(real_engine)
    writer = writer_for(real_engine, store)
    await writer.drain()
    before = await store.count()
    await real_engine.create_agent("trickle", grant_micros=T)
    reading = asyncio.create_task(writer.read_new(0, batches_max=2))
    await asyncio.sleep(0.05)
    for i in range(3):
        await real_engine.charge("trickle", "web_search", idempotency_key=f"t-{i}")
    settled = await reading
    assert [e.kind for e in await store.entries("trickle", 10)].count("charge") == 3
    assert settled == await store.count() - before
    writer.close()
