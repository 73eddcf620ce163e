"""Ledger writer benchmark: drain rate into SQLite and PostgreSQL, and lag under load.

    python -m loadtests.bench_writer [--events 200000] [--load-s 10] [--json PATH]

Also the stores alone: batched inserts of 100,000 charge rows, 1,000 per transaction.
Starts its own redis-server (appendfsync always, as the embedded default) and PostgreSQL
on loopback ports, and stops them afterwards. One run; the figures are ratios and rates
measured together on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from gateway.config import load_settings
from gateway.ledger.entries import LedgerEntry
from gateway.ledger.factory import open_store
from gateway.ledger.lag import ledger_backlog
from gateway.ledger.store import LedgerStore
from gateway.ledger.writer import LedgerWriter, stream_names
from gateway.metering.engine import Engine
from gateway.metering.ids import uuid7
from gateway.store.resp import RedisConnection, parse_redis_url
from loadtests.servers import postgres_server, redis_server, reset_database

AGENTS = 1000
WAVE = 1000


async def engine_on(url: str) -> Engine:
    engine = Engine(RedisConnection(parse_redis_url(url)), load_settings({"IOU_REDIS_URL": url}))
    await engine.start(background=False)
    return engine


async def fill(engine: Engine, events: int) -> float:
    """Create agents and charge ``events`` times as fast as one process can; charges/s."""
    await engine.conn.call_or_raise(b"FLUSHALL")  # a fresh store: ledger rows count anew
    await engine.start(background=False)
    await engine.set_tool("web_search", 1, "tool")
    names = [f"bench-{i}" for i in range(AGENTS)]
    await asyncio.gather(*(engine.create_agent(n, grant_micros=10**12) for n in names))
    started = time.perf_counter()
    for start in range(0, events, WAVE):
        await asyncio.gather(*(engine.charge(names[(start + i) % AGENTS], "web_search")
                               for i in range(min(WAVE, events - start))))
    return events / (time.perf_counter() - started)


async def drain_rate(engine: Engine, store: LedgerStore, events: int) -> dict[str, float]:
    writer = LedgerWriter(engine.conn.url, store, engine.partitions,
                          "bench")
    await writer.prepare()
    started = time.perf_counter()
    await writer.drain()
    elapsed = time.perf_counter() - started
    rows = writer.stats.committed
    return {"rows": rows, "seconds": round(elapsed, 3), "rows_per_s": round(rows / elapsed)}


async def insert_rate(store: LedgerStore, rows: int = 100_000, batch: int = 1000
                      ) -> dict[str, float]:
    """The store alone: batched inserts of charge rows shaped like the real ones (UUIDv7
    ids, 1,000 agents, stream positions), in one transaction per batch."""
    base_ms = int(time.time() * 1000)
    batches = [[LedgerEntry(uuid7(), "p01", base_ms + b, i, base_ms, "charge",
                            f"bench-{(b * batch + i) % AGENTS}", "web_search", "tool", 1,
                            10**12, None, None, None, None, None, None, None)
                for i in range(batch)] for b in range(rows // batch)]
    started = time.perf_counter()
    for rows_of_batch in batches:
        await store.write(rows_of_batch)
    elapsed = time.perf_counter() - started
    return {"rows": rows, "batch": batch, "rows_per_s": round(rows / elapsed)}


async def drain_rate_processes(engine: Engine, redis_url: str, ledger_url: str,
                               processes: int) -> dict[str, float]:
    """Drain the filled streams with several `iou writer` processes sharing the group."""
    lengths = await asyncio.gather(*(engine.conn.call_or_raise(b"XLEN", s)
                                     for s in stream_names(engine.partitions)))
    events_total = sum(lengths)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env.update({"IOU_REDIS_URL": redis_url, "IOU_LEDGER_URL": ledger_url})
    store = open_store(load_settings({"IOU_LEDGER_URL": ledger_url}))
    await store.migrate()
    before = await store.count()
    started = time.perf_counter()
    writers = [subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "writer"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(processes)]
    try:
        while await store.count() - before < events_total:
            assert time.perf_counter() - started < 300, "writers did not drain in 300 s"
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        for w in writers:
            w.terminate()
            w.wait()
        await store.close()
    return {"processes": processes, "rows": events_total, "seconds": round(elapsed, 3),
            "rows_per_s": round(events_total / elapsed)}


async def lag_under_load(engine: Engine, redis_url: str, ledger_url: str, seconds: float
                         ) -> dict[str, Any]:
    """Charge at full speed here while an `iou writer` process drains; sample the lag."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env.update({"IOU_REDIS_URL": redis_url, "IOU_LEDGER_URL": ledger_url})
    writer = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "writer"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = open_store(load_settings({"IOU_LEDGER_URL": ledger_url}))
    try:
        await asyncio.sleep(1.5)
        rows_before = await store.count()
        names = [f"bench-{i}" for i in range(AGENTS)]
        lags: list[float] = []
        charged = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            await asyncio.gather(*(engine.charge(names[i % AGENTS], "web_search")
                                   for i in range(WAVE)))
            charged += WAVE
            lags.append((await ledger_backlog(engine.conn, engine.partitions))[0])
        elapsed = time.perf_counter() - started
        await asyncio.sleep(2)
        committed = await store.count() - rows_before
    finally:
        writer.terminate()
        writer.wait()
        await store.close()
    lags.sort()
    return {"charges_per_s": round(charged / elapsed), "seconds": round(elapsed, 2),
            "lag_p50_s": round(statistics.median(lags), 3),
            "lag_p99_s": round(lags[int(len(lags) * 0.99) - 1], 3),
            "committed_rows": committed, "charged": charged}


async def main(events: int, load_s: float) -> dict[str, Any]:
    results: dict[str, Any] = {"events": events}
    with redis_server("--appendfsync", "always") as (url, _), postgres_server() as pg:
        engine = await engine_on(url)
        with tempfile.TemporaryDirectory() as tmp:
            sqlite_url = f"sqlite:///{Path(tmp) / 'ledger.db'}"
            for name, ledger_url in (("sqlite", sqlite_url), ("postgres", pg.dsn)):
                if name == "postgres":
                    reset_database(pg.dsn)
                results[f"fill_charges_per_s_{name}"] = round(await fill(engine, events))
                store = open_store(load_settings({"IOU_LEDGER_URL": ledger_url}))
                await store.migrate()
                results[f"insert_{name}"] = await insert_rate(store)
                results[f"drain_{name}"] = await drain_rate(engine, store, events)
                await store.close()
                await fill(engine, events)
                # Includes the writers' start-up (~1 s each, in parallel): a lower bound.
                results[f"drain_2_writers_{name}"] = await drain_rate_processes(
                    engine, url, ledger_url, 2)
                results[f"load_{name}"] = await lag_under_load(engine, url, ledger_url, load_s)
                load = results[f"load_{name}"]
                results[f"ratio_drain_to_charge_rate_{name}"] = round(
                    results[f"drain_{name}"]["rows_per_s"] / load["charges_per_s"], 2)
        engine.conn.close()
    return results


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--load-s", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = asyncio.run(main(args.events, args.load_s))
    text = orjson.dumps(results, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    cli()
