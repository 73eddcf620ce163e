"""Refunds and debits through the engine and the ledger: exact counts under races, both
ledger stores, reconcile and recover."""

from __future__ import annotations

import asyncio

import pytest

from gateway.ledger.entries import LedgerEntry
from gateway.ledger.reconcile import reconcile
from gateway.ledger.recover import recover
from gateway.ledger.refunds import charge_ref, minted_ms, wait_for_charge
from gateway.ledger.store import LedgerStore
from gateway.ledger.usage import HOUR_MS, usage
from gateway.metering import errors
from gateway.metering.engine import Engine
from gateway.metering.refunds import ChargeRef
from tests.conftest import flush
from tests.helpers import T, setup_catalog, snapshot
from tests.ledger_helpers import writer_for


async def charged(engine: Engine, agent: str, cost_micros: int) -> ChargeRef:
    result = await engine.charge(agent, "llm_summarize", cost_micros)
    now_ms = await engine.clock_ms()
    return ChargeRef(result.charge_id, agent, "llm_summarize", "llm", cost_micros, now_ms, 0)


async def test_concurrent_refunds_never_exceed_the_charge(real_engine: Engine) -> None:
    """400 concurrent refunds of 0.07 on a charge of 1.00: exactly 14 pass."""
    await setup_catalog(real_engine)
    await real_engine.create_agent("refund-race", grant_micros=5 * T)
    charge = await charged(real_engine, "refund-race", T)
    results = await asyncio.gather(*(real_engine.refund(charge, 70_000) for _ in range(400)),
                                   return_exceptions=True)
    passed = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, errors.InvalidRequest)]
    assert (len(passed), len(refused)) == (14, 386)
    assert {r.details["field"] for r in refused} == {"amount"}
    assert (await real_engine.agent_state("refund-race")).balance_micros == 4 * T + 980_000
    last = await real_engine.refund(charge)  # what is left: 0.02
    assert last.amount_micros == 20_000
    assert (await real_engine.agent_state("refund-race")).balance_micros == 5 * T


async def test_concurrent_debits_stop_at_the_balance(real_engine: Engine) -> None:
    await real_engine.create_agent("debit-race", grant_micros=T)
    results = await asyncio.gather(*(real_engine.debit("debit-race", 70_000, "correction")
                                     for _ in range(200)), return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 14
    assert all(isinstance(r, errors.BalanceInsufficient) for r in results
               if isinstance(r, BaseException))
    assert (await real_engine.agent_state("debit-race")).balance_micros == 20_000


async def test_refusals_change_nothing(real_engine: Engine) -> None:
    await setup_catalog(real_engine)
    await real_engine.create_agent("refund-no", grant_micros=T)
    charge = await charged(real_engine, "refund-no", 100_000)
    before = await snapshot(real_engine)
    with pytest.raises(errors.InvalidRequest):
        await real_engine.refund(charge, 100_001)
    with pytest.raises(errors.InvalidRequest):
        await real_engine.refund(charge, 0)
    with pytest.raises(errors.InvalidRequest):
        await real_engine.refund(charge, 1, reason="\x00")
    with pytest.raises(errors.BalanceInsufficient):
        await real_engine.debit("refund-no", T, "too much")
    with pytest.raises(errors.InvalidRequest):
        await real_engine.debit("refund-no", 1, "")
    with pytest.raises(errors.NotFound):
        await real_engine.debit("nobody-here", 1, "x")
    gone = ChargeRef(charge.charge_id, "nobody-here", "llm_summarize", "llm", 100, 0, 0)
    with pytest.raises(errors.NotFound):
        await real_engine.refund(gone)
    free = ChargeRef(charge.charge_id, "refund-no", "calc", "tool", 0, 0, 0)
    with pytest.raises(errors.InvalidRequest):
        await real_engine.refund(free)
    assert await snapshot(real_engine) == before


async def test_refund_idempotency_key(real_engine: Engine) -> None:
    await setup_catalog(real_engine)
    await real_engine.create_agent("refund-idem", grant_micros=T)
    charge = await charged(real_engine, "refund-idem", 100_000)
    first = await real_engine.refund(charge, 30_000, "rk-1", reason="r")
    again = await real_engine.refund(charge, 30_000, "rk-1", reason="r")
    assert again.replayed and again.refund_id == first.refund_id
    assert again.balance_micros == first.balance_micros == 930_000
    with pytest.raises(errors.IdempotencyConflict):
        await real_engine.refund(charge, 30_000, "rk-1", reason="other")
    debit = await real_engine.debit("refund-idem", 5, "x", "dk-1")
    assert (await real_engine.debit("refund-idem", 5, "x", "dk-1")).entry_id == debit.entry_id
    assert (await real_engine.agent_state("refund-idem")).balance_micros == 929_995


async def test_ledger_keeps_refunds_and_debits(real_engine: Engine, real_redis_url: str,
                                               store: LedgerStore) -> None:
    """Both stores keep ref and reason; the ledger's refunded total bounds a later refund;
    reconcile is clean; recover rebuilds balances and today's spending net of refunds."""
    engine = real_engine
    await setup_catalog(engine)
    await engine.create_agent("refund-led", grant_micros=5 * T)
    result = await engine.charge("refund-led", "llm_summarize", 400_000)
    hold = await engine.hold("refund-led", "llm_summarize", 300_000)
    captured = await engine.capture("refund-led", hold.hold_id, 200_000)
    writer = writer_for(engine, store)
    await writer.drain()
    charge = await charge_ref(store, result.charge_id)
    assert charge is not None
    assert (charge.agent, charge.tool, charge.category, charge.cost_micros,
            charge.refunded_micros) == ("refund-led", "llm_summarize", "llm", 400_000, 0)
    await engine.refund(charge, 150_000, reason="wrong answer")
    capture = await charge_ref(store, captured.charge_id)
    assert capture is not None and capture.cost_micros == 200_000
    await engine.refund(capture)
    await engine.debit("refund-led", 250_000, "duplicate grant")
    await writer.drain()
    rows = await store.entries("refund-led", 3)
    assert [(e.kind, e.amount, e.ref, e.reason) for e in rows] == [
        ("debit", 250_000, None, "duplicate grant"),
        ("refund", 200_000, captured.charge_id, None),
        ("refund", 150_000, result.charge_id, "wrong answer")]
    assert [e.kind for e in await store.entries("refund-led", 10, kind="refund")] == [
        "refund", "refund"]
    again = await charge_ref(store, result.charge_id)
    assert again is not None and again.refunded_micros == 150_000
    assert await charge_ref(store, hold.hold_id) is None
    assert await charge_ref(store, rows[0].entry_id) is None  # a debit is no charge
    assert await reconcile(engine, store, writer) == []
    state = await engine.agent_state("refund-led")
    assert state.spent_today_micros == 250_000  # 0.4 + 0.2 - 0.15 - 0.2
    # Redis lost: recover from the ledger, and the refunded total still bounds refunds.
    await store.set_meta("partitions", str(engine.partitions))
    flush(real_redis_url)
    await engine.scripts.preload()
    await recover(engine, store)
    assert await engine.agent_state("refund-led") == state
    with pytest.raises(errors.InvalidRequest):
        await engine.refund(again, 250_001)
    assert (await engine.refund(again)).amount_micros == 250_000
    assert await reconcile(engine, store, writer_for(engine, store, "second")) == []


async def test_a_refund_gives_back_to_the_charges_task(real_engine: Engine,
                                                      store: LedgerStore) -> None:
    engine = real_engine
    await setup_catalog(engine)
    await engine.create_agent("refund-task", grant_micros=5 * T)
    task = await engine.open_task("refund-task", T)
    result = await engine.charge("refund-task", "llm_summarize", 600_000, task=task.task_id)
    plain = await engine.charge("refund-task", "llm_summarize", 100_000)
    await writer_for(engine, store).drain()
    charge = await charge_ref(store, result.charge_id)
    assert charge is not None and charge.task == task.task_id
    untasked = await charge_ref(store, plain.charge_id)
    assert untasked is not None and untasked.task is None
    await engine.refund(charge, 200_000)
    await engine.refund(untasked)
    after = await engine.task("refund-task", task.task_id)
    assert after.spent_micros == 400_000
    assert after.spent_by_tool == {"llm_summarize": 400_000}
    # What was given back fits again: 0.6 more fit the budget of 1.
    await engine.charge("refund-task", "llm_summarize", 600_000, task=task.task_id)


async def test_waiting_for_a_charge_the_writer_has_not_written(real_engine: Engine,
                                                              store: LedgerStore) -> None:
    await setup_catalog(real_engine)
    await real_engine.create_agent("refund-wait", grant_micros=T)
    result = await real_engine.charge("refund-wait", "web_search")
    minted = minted_ms(result.charge_id)
    assert abs(minted - await real_engine.clock_ms()) < 5000
    writer = writer_for(real_engine, store)
    oldest: list[int | None] = [minted - 10]  # the charge's own event still waits

    async def backlog() -> int | None:
        return oldest[0]

    assert await wait_for_charge(store, result.charge_id, backlog, wait_s=0.2) is None

    async def write_soon() -> None:
        await asyncio.sleep(0.2)
        await writer.drain()
        oldest[0] = None

    task = asyncio.create_task(write_soon())
    found = await wait_for_charge(store, result.charge_id, backlog, wait_s=10)
    await task
    assert found is not None and found.cost_micros == 50_000
    assert await wait_for_charge(store, "not-an-id", backlog) is None
    # Only newer events wait: an unknown id of that age is missing for good, at once.
    unknown = result.charge_id[:-1] + ("0" if result.charge_id[-1] != "0" else "1")
    assert minted_ms(unknown) == minted
    oldest[0] = minted + 60_000
    started = asyncio.get_running_loop().time()
    assert await wait_for_charge(store, unknown, backlog, wait_s=10) is None
    assert asyncio.get_running_loop().time() - started < 5


def entry(kind: str, agent: str, at_ms: int, paid: tuple[str, str, int], seq: int,
          ref: str | None = None) -> LedgerEntry:
    tool, category, amount = paid
    return LedgerEntry(f"{kind}-{seq}", "p00", at_ms, seq, at_ms, kind, agent, tool, category,
                       amount, 0, None, None, None, None, None, None, None, ref, None)


async def test_usage_is_net_of_refunds_in_the_charges_bucket(store: LedgerStore) -> None:
    day0 = 20_000 * 86_400_000
    at = day0 + 10 * HOUR_MS
    search, buy = ("web_search", "tool", 50_000), ("buy", "commerce", 1_500_000)
    await store.write([
        entry("charge", "ann", at + 5, search, 1),
        entry("charge", "ann", at + 6, search, 2),
        entry("charge", "ann", at - HOUR_MS, search, 3),  # before the range
        entry("charge", "bob", at + 7, buy, 4),
        # Refunded an hour later: it lowers the charge's own hour.
        entry("refund", "ann", at + HOUR_MS + 1, ("web_search", "tool", 20_000), 5,
              "charge-1"),
        entry("refund", "ann", at + HOUR_MS + 2, ("web_search", "tool", 50_000), 6,
              "charge-3"),  # its charge is outside the range
        entry("refund", "bob", at + 8, ("buy", "commerce", 1_500_000), 7, "charge-4"),
    ])
    got = await usage(store, "tool", "hour", "ann", at, at + 2 * HOUR_MS)
    assert [(r.start_ms, r.key, r.calls, r.amount_micros) for r in got] == [
        (at, "web_search", 2, 80_000)]
    everyone = await usage(store, "category", "day", None, day0, day0 + 86_400_000)
    assert [(r.key, r.calls, r.amount_micros) for r in everyone] == [
        ("commerce", 1, 0), ("tool", 3, 80_000)]  # charge-3 is in this day
