"""Sealing in the insert: a writer that reads a stream's next entries in order and finds
nothing older than them still unacknowledged chains them from the rows in hand, in the
transaction that inserts them, with the same hashes the sealing pass gives; whenever it
cannot be sure (an older entry pending elsewhere, a row already there, a tampered head) it
leaves the rows to the pass, and the chain still holds."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.ledger import chain
from gateway.ledger import sqlite as sqlite_store
from gateway.ledger.entries import LedgerEntry
from gateway.ledger.store import ENTRY_COLUMNS, LedgerStore, row_to_entry
from gateway.metering.engine import Engine
from tests.helpers import T, setup_catalog
from tests.ledger_helpers import store_for, writer_for
from tests.test_ledger_chain import activity, problems, sql, stream_rows


async def _all_rows(store: LedgerStore) -> list[LedgerEntry]:
    rows = await store.query(f"SELECT {ENTRY_COLUMNS} FROM ledger_entries "
                             "ORDER BY stream, stream_ms, stream_seq", [])
    return [row_to_entry(r) for r in rows]


async def _hashes(ledger_url: str) -> dict[str, tuple[str | None, str | None]]:
    rows = await sql(ledger_url, "SELECT entry_id, prev_hash, hash FROM ledger_entries")
    return {r[0]: (r[1], r[2]) for r in rows}


async def test_a_batch_read_in_order_is_sealed_by_its_own_commit(
        real_engine: Engine, store: LedgerStore, ledger_url: str) -> None:
    """No trim and no sealing pass: the rows are chained when they are committed."""
    await activity(real_engine, "inline")
    writer = writer_for(real_engine, store)
    try:
        await writer.prepare()
        settled = await writer.read_new(0, linger=False)
    finally:
        writer.close()
    reports = await store.verify_chains()
    assert settled == await store.count() > 20
    assert [r.problem for r in reports] == [None] * len(reports)
    assert sum(r.unsealed for r in reports) == 0
    assert sum(r.checked for r in reports) == settled
    assert writer.stats.sealed == 0  # no pass ran


async def test_sealing_in_the_insert_gives_the_pass_s_hashes(
        real_engine: Engine, store: LedgerStore, ledger_url: str, tmp_path: Any) -> None:
    """The same rows written plainly and sealed by the pass get the same hashes: the chain's
    definition did not change (JSON columns, Unicode, configuration events included)."""
    await activity(real_engine, "same")
    await writer_for(real_engine, store).drain()
    inline = await _hashes(ledger_url)
    rows = await _all_rows(store)
    other_url = f"sqlite:///{tmp_path / 'plain.db'}" if ledger_url.startswith("sqlite") \
        else ledger_url
    if other_url == ledger_url:
        await sql(ledger_url, "DELETE FROM ledger_entries")
        await sql(ledger_url, "DELETE FROM ledger_chain_heads")
    plain = store_for(other_url)
    try:
        await plain.migrate()
        assert await plain.write(rows) == len(rows)
        assert sum(r.checked for r in await plain.verify_chains()) == 0  # nothing sealed yet
        floors = {e.stream: (e.stream_ms, e.stream_seq + 1) for e in rows}
        assert (await plain.seal(floors))[0] == len(rows)
        assert await _hashes(other_url) == inline
        assert all(h is not None for _, h in inline.values())
    finally:
        await plain.close()


async def test_an_older_entry_pending_elsewhere_leaves_the_batch_to_the_pass(
        real_engine: Engine, ledger_url: str) -> None:
    """Writer A holds the stream's first entries; B's later batch is committed unsealed
    (not chained past A's), A's own batch is chained at its commit, the pass does B's."""
    await setup_catalog(real_engine)
    await real_engine.create_agent("older", grant_micros=100 * T)
    stores = [store_for(ledger_url) for _ in range(2)]
    slow, fast = writer_for(real_engine, stores[0], "a"), writer_for(real_engine, stores[1], "b")
    try:
        await fast.drain()
        sealed_before = sum(r.checked for r in await stores[0].verify_chains())
        for _ in range(3):
            await real_engine.charge("older", "web_search")
        held = await slow._read([b">"] * len(slow._streams), 0)
        for _ in range(4):
            await real_engine.charge("older", "web_search")
        assert await fast.read_new(0, linger=False) == 4
        reports = await stores[0].verify_chains()
        assert (sum(r.checked for r in reports), sum(r.unsealed for r in reports)) == \
            (sealed_before, 4)
        await slow._commit(await slow._prepare(held, in_order=True))
        reports = await stores[0].verify_chains()
        assert [r.problem for r in reports] == [None] * len(reports)
        assert (sum(r.checked for r in reports), sum(r.unsealed for r in reports)) == \
            (sealed_before + 3, 4)
        await fast.trim()
        reports = await stores[0].verify_chains()
        assert [r.problem for r in reports] == [None] * len(reports)
        assert sum(r.checked for r in reports) == sealed_before + 7
    finally:
        for s in stores:
            await s.close()
        slow.close()
        fast.close()


def _charge(entry_id: str, seq: int) -> LedgerEntry:
    return LedgerEntry(entry_id, "p03", 1_000, seq, 1_000, "charge", "a", "web_search", "tool",
                       10, 90 - seq, None, None, None, None, None, None, None)


async def test_rows_already_in_the_ledger_are_not_chained_from_the_batch(
        store: LedgerStore) -> None:
    """A batch some of whose rows are already there (a redelivery) is written without
    links, so no hash names a row this batch did not insert; the pass chains it later."""
    batch = [_charge(f"dup-{i}", i) for i in range(5)]
    assert await store.write(batch[2:3]) == 1
    assert await store.write(batch, {"p03": (1_000, 0)}) == 4
    report = next(r for r in await store.verify_chains() if r.stream == "p03")
    assert (report.checked, report.unsealed, report.problem) == (0, 5, None)
    assert (await store.seal({"p03": (1_000, 5)}))[0] == 5
    report = next(r for r in await store.verify_chains() if r.stream == "p03")
    assert (report.checked, report.unsealed, report.problem) == (5, 0, None)


async def test_unsealed_rows_below_the_batch_are_chained_first(store: LedgerStore) -> None:
    """Rows another writer committed below the batch without sealing them are chained in the
    same transaction, before the batch's own rows."""
    rows = [_charge(f"gap-{i}", i) for i in range(6)]
    assert await store.write(rows[:2], {"p03": (1_000, 0)}) == 2
    assert await store.write(rows[2:4]) == 2  # committed by a writer that could not seal
    assert await store.write(rows[4:], {"p03": (1_000, 4)}) == 2
    report = next(r for r in await store.verify_chains() if r.stream == "p03")
    assert (report.checked, report.unsealed, report.problem) == (6, 0, None)
    assert report.head.entry_id == "gap-5" and report.head.rows == 6


async def test_a_tampered_head_is_not_sealed_over(store: LedgerStore, ledger_url: str
                                                  ) -> None:
    """Sealed rows past the recorded head (someone moved the head back): the batch is
    written unsealed and `iou verify` still names the edit."""
    rows = [_charge(f"t-{i}", i) for i in range(4)]
    assert await store.write(rows[:2], {"p03": (1_000, 0)}) == 2
    await sql(ledger_url, "UPDATE ledger_chain_heads SET stream_seq = 0, entry_id = 't-0', "
              "rows = 1 WHERE stream = 'p03'")
    assert await store.write(rows[2:], {"p03": (1_000, 2)}) == 2
    hashes = await _hashes(ledger_url)
    assert {hashes["t-2"], hashes["t-3"]} == {chain.UNLINKED}
    assert [kind for _, _, kind in await problems(store)] == ["changed"]


async def test_chained_rows_match_the_documented_formula(
        real_engine: Engine, store: LedgerStore, ledger_url: str) -> None:
    await activity(real_engine, "formula")
    writer = writer_for(real_engine, store)
    try:
        await writer.prepare()
        await writer.read_new(0, linger=False)
    finally:
        writer.close()
    from tests.test_ledger_chain import documented_hash

    for report in await store.verify_chains():
        prev = chain.GENESIS
        for row in await stream_rows(ledger_url, report.stream):
            assert row[-2] == prev and row[-1] == documented_hash(prev, row[:-2])
            prev = row[-1]


async def test_rows_below_the_batch_in_many_streams(store: LedgerStore,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """More streams than one statement reads the rows below of (SQLite): each is chained."""
    monkeypatch.setattr(sqlite_store, "BELOW_STREAMS_MAX", 2)
    streams = [f"p{i:02d}" for i in range(5)]
    below = [_charge(f"m-{s}-{i}", i)._replace(stream=s) for s in streams for i in range(2)]
    batch = [_charge(f"m-{s}-{i}", i)._replace(stream=s) for s in streams for i in range(2, 4)]
    assert await store.write(below) == 10
    assert await store.write(batch, {s: (1_000, 2) for s in streams}) == 10
    reports = [r for r in await store.verify_chains() if r.stream in streams]
    assert [(r.checked, r.unsealed, r.problem) for r in reports] == [(4, 0, None)] * 5
