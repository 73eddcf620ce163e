"""The verifiable ledger: each stream's rows form a SHA-256 chain in stream order, sealed by
the writer in both stores, and `iou verify`'s check names the first row changed, removed or
inserted with SQL behind the gateway's back."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from typing import Any

import asyncpg
import pytest

from gateway.ledger import chain, schema
from gateway.ledger.postgres import dollar
from gateway.ledger.store import LedgerStore
from gateway.metering.engine import Engine
from tests.gateway_proc import Gateway
from tests.helpers import T, setup_catalog
from tests.http_helpers import new_agent
from tests.ledger_helpers import store_for, writer_for

COLUMNS = chain.CHAIN_COLUMNS
CLI_TIMEOUT_S = 60
WRITER_DEATH_TIMEOUT_S = 60


async def activity(engine: Engine, prefix: str, agents: int = 3) -> None:
    """Money and configuration events over a few partitions, metadata included."""
    await setup_catalog(engine)
    for i in range(agents):
        name = f"{prefix}-{i}"
        await engine.create_agent(name, grant_micros=5 * T)
        await engine.fund(name, T)
        for n in range(4):
            await engine.charge(name, "web_search", metadata={"q": "ünïcode", "n": n})
        hold = await engine.hold(name, "llm_summarize", 300_000)
        await engine.capture(name, hold.hold_id, 80_000)
        await engine.set_limits(name, {"daily": 4 * T})


async def sql(ledger_url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run SQL on the ledger directly, as someone with database access would."""
    if ledger_url.startswith("sqlite:///"):
        db = sqlite3.connect(ledger_url[len("sqlite:///"):], isolation_level=None)
        try:
            return [tuple(r) for r in db.execute(statement, params).fetchall()]
        finally:
            db.close()
    conn = await asyncpg.connect(ledger_url)
    try:
        return [tuple(r) for r in await conn.fetch(dollar(statement), *params)]
    finally:
        await conn.close()


def json_cast(ledger_url: str) -> str:
    return "" if ledger_url.startswith("sqlite") else "::text"


async def stream_rows(ledger_url: str, stream: str) -> list[tuple[Any, ...]]:
    return await sql(ledger_url, chain.chain_query(json_cast(ledger_url)), stream)


def documented_hash(prev_hash: str, row: tuple[Any, ...]) -> str:
    """The formula of docs/operations.md, written out independently of gateway code."""
    fields = {c: v for c, v in zip(COLUMNS, row, strict=True) if v is not None}
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(bytes.fromhex(prev_hash) + body.encode()).hexdigest()


async def problems(store: LedgerStore) -> list[tuple[str, str, str]]:
    return [(r.stream, r.problem.entry_id, r.problem.kind)
            for r in await store.verify_chains() if r.problem is not None]


async def sealed_ledger(engine: Engine, store: LedgerStore, prefix: str) -> None:
    await activity(engine, prefix)
    await writer_for(engine, store).drain()
    assert await problems(store) == []


async def busiest_stream(ledger_url: str) -> str:
    rows = await sql(ledger_url, "SELECT stream, COUNT(*) AS n FROM ledger_entries "
                     "WHERE stream != 'tools' GROUP BY stream ORDER BY n DESC LIMIT 1")
    return str(rows[0][0])


async def test_every_row_is_chained_in_stream_order(real_engine: Engine, store: LedgerStore,
                                                    ledger_url: str) -> None:
    await sealed_ledger(real_engine, store, "chain")
    reports = await store.verify_chains()
    assert {r.stream for r in reports} >= {"tools"} and len(reports) >= 3
    for report in reports:
        rows = await stream_rows(ledger_url, report.stream)
        assert report.checked == len(rows) and report.unsealed == 0
        prev = chain.GENESIS
        for row in rows:
            assert row[-2] == prev
            assert row[-1] == documented_hash(prev, row[:-2])
            prev = row[-1]
        assert report.head.hash == prev and report.head.entry_id == rows[-1][0]
        assert report.head.rows == len(rows)


async def test_recorded_heads_are_where_the_chains_end(real_engine: Engine,
                                                       store: LedgerStore) -> None:
    await sealed_ledger(real_engine, store, "heads")
    recomputed = {r.stream: (r.head.hash, r.head.entry_id, r.checked)
                  for r in await store.verify_chains()}
    recorded = {h.stream: (h.hash, h.entry_id, h.rows) for h in await store.chain_heads()}
    assert recorded == recomputed and len(recorded) >= 3


def test_the_heads_route_publishes_each_chain_head(gateway: Gateway) -> None:
    _, key = new_agent(gateway)
    with gateway.agent(key) as agent, gateway.admin() as admin:
        charge_id = agent.post("/v1/charge", json={"tool": "web_search"}).json()["charge_id"]
        deadline = time.monotonic() + WRITER_DEATH_TIMEOUT_S
        while True:  # sealed within about a second of reaching the ledger
            heads = admin.get("/v1/ledger/heads").json()["heads"]
            if any(h["head_entry_id"] == charge_id for h in heads):
                break
            assert time.monotonic() < deadline, heads
            time.sleep(0.2)
        assert all(len(h["head_hash"]) == 64 and h["rows"] > 0 for h in heads)
        assert agent.get("/v1/ledger/heads").status_code == 403


async def test_changed_row_is_named(real_engine: Engine, store: LedgerStore,
                                    ledger_url: str) -> None:
    await sealed_ledger(real_engine, store, "changed")
    stream = await busiest_stream(ledger_url)
    rows = await stream_rows(ledger_url, stream)
    amount = COLUMNS.index("amount")
    victim = next(r for r in rows[len(rows) // 2:] if r[amount] is not None)
    await sql(ledger_url, "UPDATE ledger_entries SET amount = amount + 1 WHERE entry_id = ?",
              victim[0])
    assert await problems(store) == [(stream, victim[0], "changed")]
    await sql(ledger_url, "UPDATE ledger_entries SET amount = amount - 1 WHERE entry_id = ?",
              victim[0])
    assert await problems(store) == []
    # Its own link edited, the contents left alone: still the row that changed.
    await sql(ledger_url, "UPDATE ledger_entries SET prev_hash = ? WHERE entry_id = ?",
              "ab" * 32, victim[0])
    assert await problems(store) == [(stream, victim[0], "changed")]


async def test_removed_row_is_named(real_engine: Engine, store: LedgerStore,
                                    ledger_url: str) -> None:
    await sealed_ledger(real_engine, store, "removed")
    stream = await busiest_stream(ledger_url)
    rows = await stream_rows(ledger_url, stream)
    middle = len(rows) // 2
    await sql(ledger_url, "DELETE FROM ledger_entries WHERE entry_id = ?", rows[middle][0])
    # The removed row's id is gone with it: the report names the row after the gap.
    assert await problems(store) == [(stream, rows[middle + 1][0], "removed")]


async def test_removed_head_is_named(real_engine: Engine, store: LedgerStore,
                                     ledger_url: str) -> None:
    await sealed_ledger(real_engine, store, "head")
    stream = await busiest_stream(ledger_url)
    rows = await stream_rows(ledger_url, stream)
    await sql(ledger_url, "DELETE FROM ledger_entries WHERE entry_id = ?", rows[-1][0])
    assert await problems(store) == [(stream, rows[-1][0], "removed")]


async def _insert_copy(ledger_url: str, row: tuple[Any, ...], entry_id: str,
                       seq: int, link: tuple[str | None, str | None]) -> None:
    values = [entry_id, *row[1:3], seq, *row[4:len(COLUMNS)]]
    cols = ", ".join([*COLUMNS, "prev_hash", "hash"])
    marks = ", ".join(["?"] * (len(COLUMNS) + 2))
    if not ledger_url.startswith("sqlite"):
        marks = ", ".join("?::jsonb" if c in chain.JSON_COLUMNS else "?"
                          for c in [*COLUMNS, "x", "y"])
    await sql(ledger_url, f"INSERT INTO ledger_entries ({cols}) VALUES ({marks})",
              *values, *link)


def _gap(rows: list[tuple[Any, ...]]) -> int:
    """A row (not the first) after which a forged row fits: the next position is free."""
    for i in range(1, len(rows) - 1):
        if (int(rows[i + 1][2]), int(rows[i + 1][3])) > (int(rows[i][2]), int(rows[i][3]) + 1):
            return i
    raise AssertionError("no gap between two rows")


async def test_inserted_row_is_named(real_engine: Engine, store: LedgerStore,
                                     ledger_url: str) -> None:
    await sealed_ledger(real_engine, store, "inserted")
    stream = await busiest_stream(ledger_url)
    rows = await stream_rows(ledger_url, stream)
    before = rows[_gap(rows)]
    forged_seq = int(before[3]) + 1  # sorts right after `before`
    await _insert_copy(ledger_url, before[:len(COLUMNS)], "forged-1", forged_seq, (None, None))
    assert await problems(store) == [(stream, "forged-1", "inserted")]
    await sql(ledger_url, "DELETE FROM ledger_entries WHERE entry_id = 'forged-1'")
    assert await problems(store) == []
    # A careful forger links the row after `before` properly: the next row gives it away.
    forged = ("forged-2", *before[1:3], forged_seq, *before[4:len(COLUMNS)])
    digest = chain.link(before[-1], forged)
    await _insert_copy(ledger_url, before[:len(COLUMNS)], "forged-2", forged_seq,
                       (before[-1], digest))
    assert await problems(store) == [(stream, "forged-2", "inserted")]


async def test_head_record_edited_is_found_and_not_resealed(
        real_engine: Engine, store: LedgerStore, ledger_url: str) -> None:
    await sealed_ledger(real_engine, store, "headrec")
    stream = await busiest_stream(ledger_url)
    rows = await stream_rows(ledger_url, stream)
    await sql(ledger_url, "DELETE FROM ledger_chain_heads WHERE stream = ?", stream)
    assert await problems(store) == [(stream, rows[0][0], "changed")]
    await writer_for(real_engine, store).drain()  # the writer leaves the evidence alone
    assert await problems(store) == [(stream, rows[0][0], "changed")]


async def test_rows_from_before_the_migration_are_chained_from_genesis(
        real_engine: Engine, ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    full = schema.MIGRATIONS
    chain_at = next(i for i, m in enumerate(full) if any("prev_hash" in s for s in m))
    monkeypatch.setattr(schema, "MIGRATIONS", full[:chain_at])
    old = store_for(ledger_url)
    await old.migrate()
    # The columns of the migrations after the chain's, which today's rows need, are added by
    # hand; the new store below counts those migrations as done.
    for statement in (s for m in full[chain_at + 1:] for s in m):
        await sql(ledger_url, statement)
    await activity(real_engine, "old")
    writer = writer_for(real_engine, old)
    writer.trim = _nothing  # type: ignore[method-assign,assignment]
    writer._chain_from = _no_chain  # type: ignore[method-assign,assignment]  # as then
    await writer.drain()
    await old.close()
    count = (await sql(ledger_url, "SELECT COUNT(*) FROM ledger_entries"))[0][0]
    assert count > 10
    monkeypatch.setattr(schema, "MIGRATIONS", [*full[:chain_at + 1],
                                               *([] for _ in full[chain_at + 1:])])
    new = store_for(ledger_url)
    try:
        await new.migrate()
        assert all(r.checked == 0 for r in await new.verify_chains())
        monkeypatch.setattr(chain, "SEAL_ROWS_MAX", 3)  # a long backlog: pass after pass
        await writer_for(real_engine, new).drain()
        reports = await new.verify_chains()
        assert sum(r.checked for r in reports) == count
        assert [r.problem for r in reports] == [None] * len(reports)
    finally:
        await new.close()


async def _nothing(*_: Any) -> int:
    return 0


async def _no_chain(*_: Any) -> dict[str, chain.Position]:
    return {}


async def test_two_writers_under_load_chain_in_stream_order(
        real_engine: Engine, ledger_url: str) -> None:
    """Two writers share the group and commit batches of one stream out of order while
    charges keep coming: the chain still follows stream order and covers every row."""
    await setup_catalog(real_engine)
    names = [f"duo-{i}" for i in range(8)]
    await asyncio.gather(*(real_engine.create_agent(n, grant_micros=10**6 * T) for n in names))
    stores = [store_for(ledger_url) for _ in range(2)]
    writers = [writer_for(real_engine, s, f"duo-writer-{i}") for i, s in enumerate(stores)]
    running = [asyncio.create_task(w.run()) for w in writers]
    try:
        for _ in range(30):
            await asyncio.gather(*(real_engine.charge(n, "web_search") for n in names * 10))
            await asyncio.sleep(0.02)
    finally:
        for w in writers:
            w.stop()
        await asyncio.gather(*running)
    # A fresh writer catches up (a stopped one reads nothing new).
    catch_up = writer_for(real_engine, stores[0], "duo-writer-0")
    await catch_up.drain()
    catch_up.close()
    reports = await stores[0].verify_chains()
    assert [r.problem for r in reports] == [None] * len(reports)
    assert sum(r.unsealed for r in reports) == 0
    assert sum(r.checked for r in reports) == await stores[0].count()
    assert await stores[0].count() > 2400
    for s in stores:
        await s.close()
    for w in writers:
        w.close()


async def test_a_batch_committed_late_is_chained_in_its_place(
        real_engine: Engine, ledger_url: str) -> None:
    """Writer A reads a batch and is slow to commit it; writer B commits the later entries
    of the same stream and seals meanwhile: nothing after A's batch is sealed before A's
    rows are in, and then the chain runs in stream order through both."""
    await setup_catalog(real_engine)
    await real_engine.create_agent("late", grant_micros=100 * T)
    stores = [store_for(ledger_url) for _ in range(2)]
    slow, fast = writer_for(real_engine, stores[0], "a"), writer_for(real_engine, stores[1], "b")
    try:
        await fast.drain()  # the catalog and the grant: sealed
        sealed_before = sum(r.checked for r in await stores[0].verify_chains())
        for _ in range(5):
            await real_engine.charge("late", "web_search")
        held = await slow._read([b">"] * len(slow._streams), 0)  # read, not committed
        assert sum(len(e) for _, e in held) == 5
        for _ in range(5):
            await real_engine.charge("late", "web_search")
        assert await fast.read_new(0, linger=False) == 5
        await fast.trim()
        reports = await stores[0].verify_chains()
        assert sum(r.checked for r in reports) == sealed_before  # B's rows wait for A's
        assert sum(r.unsealed for r in reports) == 5
        await slow._commit(await slow._prepare(held))
        await fast.trim()
        reports = await stores[0].verify_chains()
        assert [r.problem for r in reports] == [None] * len(reports)
        assert sum(r.checked for r in reports) == sealed_before + 10
        assert sum(r.unsealed for r in reports) == 0
    finally:
        for s in stores:
            await s.close()
        slow.close()
        fast.close()


def _env(engine: Engine, ledger_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env.update({"IOU_REDIS_URL": engine.conn.url, "IOU_LEDGER_URL": ledger_url})
    return env


def _iou_verify(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", *args, "verify"], env=env,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S)


async def _crashing_writer(env: dict[str, str], fault: str, engine: Engine,
                           names: list[str]) -> int:
    """An `iou writer` with a planted kill -9, under charges until it has died; returns how
    many charges were made meanwhile."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.fault_entry", fault, "writer",
                             "--consumer", "crashy"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    charged = 0
    try:
        deadline = time.monotonic() + WRITER_DEATH_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.gather(*(engine.charge(n, "web_search") for n in names * 10))
            charged += len(names) * 10
            await asyncio.sleep(0.05)
        assert proc.returncode == -signal.SIGKILL, "the planted fault never struck"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return charged


@pytest.mark.slow
async def test_kill9_writer_mid_stream_then_verify(real_engine: Engine, ledger_url: str
                                                   ) -> None:
    """`iou writer` killed by SIGKILL between commit and acknowledgement and inside the
    sealing transaction, again and again while charges come in; once a writer has caught
    up, `iou verify` passes (exit 0, every head printed), and after an edit it names the row
    (exit 1)."""
    await setup_catalog(real_engine)
    names = [f"kill-{i}" for i in range(6)]
    await asyncio.gather(*(real_engine.create_agent(n, grant_micros=1000 * T) for n in names))
    env = _env(real_engine, ledger_url)
    charged = 0
    for fault in ["after_commit:0.3", "mid_seal:0.2", "mid_seal:0.2", "after_commit:0.3"]:
        charged += await _crashing_writer(env, fault, real_engine, names)
    store = store_for(ledger_url)
    try:
        await writer_for(real_engine, store, "crashy").drain()  # the same consumer resumes
        assert await store.count() >= charged
    finally:
        await store.close()
    intact = _iou_verify(env)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "ledger intact" in intact.stdout
    report = json.loads(_iou_verify(env, "--json").stdout)
    assert report["intact"] is True
    heads = {c["stream"]: c["head_hash"] for c in report["chains"]}
    assert len(heads) >= 2 and all(f"{s}  head {h}" in intact.stdout for s, h in heads.items())
    assert sum(c["unsealed"] for c in report["chains"]) == 0
    victim = (await sql(ledger_url, "SELECT entry_id FROM ledger_entries WHERE kind = 'charge' "
                        "ORDER BY stream_ms LIMIT 1"))[0][0]
    await sql(ledger_url, "UPDATE ledger_entries SET amount = 0 WHERE entry_id = ?", victim)
    altered = _iou_verify(env)
    assert altered.returncode == 1
    assert f"entry {victim} changed" in altered.stdout, altered.stdout
