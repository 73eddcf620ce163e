"""Ledger writer benchmark: drain rate into SQLite and PostgreSQL, and lag under load.

    python -m loadtests.bench_writer [--events 200000] [--load-s 10] [--json PATH]
    python -m loadtests.bench_writer --cpu [--events 40000] [--per-stream 1000]

``--cpu`` measures only the writer's CPU per row against its store's own: fill the streams
with charges, drain them with one writer in this process (CPU from ``time.process_time``,
the store's thread included; Redis is another process and is not counted), and time the
store's batched inserts the same way, in the same run. ``--per-stream`` caps the entries one
read takes from each stream (6 is what 50 ms of linger gathers at about 2,000 charges/s over
17 streams). ``--cpu --paced RATE`` runs an `iou writer` process instead, as `iou serve`
does (its linger and batches), under charges made here at RATE per second for ``--load-s``
seconds.

Also the stores alone: batched inserts of 100,000 charge rows, 1,000 per transaction.
Starts its own redis-server (appendfsync always, as the embedded default) and PostgreSQL
on loopback ports, and stops them afterwards. One run; the figures are ratios and rates
measured together on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from gateway.config import load_settings
from gateway.ledger import writer as writer_module
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


async def cpu_per_row(events: int, per_stream: int, ledger: str) -> dict[str, Any]:
    """Writer CPU-µs per row draining ``events`` charges ÷ the store's own batched-insert
    CPU-µs per row, one run, one ledger ("sqlite" or "postgres"), each on a fresh ledger."""
    results: dict[str, Any] = {"events": events, "per_stream": per_stream, "ledger": ledger}
    with redis_server("--appendfsync", "always") as (url, _), \
            tempfile.TemporaryDirectory() as tmp, _fresh_ledgers(ledger, Path(tmp)) as fresh:
        engine = await engine_on(url)
        await fill(engine, events)
        store = open_store(load_settings({"IOU_LEDGER_URL": fresh()}))
        await store.migrate()
        before_s = time.process_time()
        results["insert"] = await insert_rate(store, rows=20_000)
        results["insert"]["cpu_us_per_row"] = round(
            (time.process_time() - before_s) / 20_000 * 1e6, 2)
        await store.close()
        store = open_store(load_settings({"IOU_LEDGER_URL": fresh()}))
        results["drain"] = await _drain_cpu(url, engine.partitions, store, per_stream)
        assert results["drain"]["rows"] >= events, results["drain"]
        await store.close()
        engine.conn.close()
    results["writer_ratio"] = round(results["drain"]["cpu_us_per_row"]
                                    / results["insert"]["cpu_us_per_row"], 2)
    results["load_average"] = os.getloadavg()[0]
    return results


async def _drain_cpu(url: str, partitions: int, store: LedgerStore, per_stream: int
                     ) -> dict[str, Any]:
    writer = LedgerWriter(url, store, partitions, "bench")
    await writer.prepare()
    writer_module.BATCH_SIZE_MAX = per_stream  # entries one read takes from a stream
    before_s, started = time.process_time(), time.perf_counter()
    await writer.drain()
    cpu_s, wall_s = time.process_time() - before_s, time.perf_counter() - started
    writer.close()
    rows = writer.stats.committed
    return {"rows": rows, "batches": writer.stats.batches, "sealed": writer.stats.sealed,
            "rows_per_s": round(rows / wall_s), "cpu_us_per_row": round(cpu_s / rows * 1e6, 2)}


async def paced_cpu(rate_per_s: int, seconds: float) -> dict[str, Any]:
    """An `iou writer` process (as `iou serve` runs it: its linger, its batches) draining
    charges made here at ``rate_per_s`` for ``seconds``: its CPU-µs per row from /proc,
    read once it has committed them all, ÷ the SQLite store's own batched-insert CPU-µs per
    row measured in this process in the same run."""
    with redis_server("--appendfsync", "always") as (url, _), \
            tempfile.TemporaryDirectory() as tmp, _fresh_ledgers("sqlite", Path(tmp)) as fresh:
        engine = await engine_on(url)
        await fill(engine, AGENTS)  # the agents, and a first batch for the writer's start-up
        store = open_store(load_settings({"IOU_LEDGER_URL": fresh()}))
        await store.migrate()
        before_s = time.process_time()
        insert = await insert_rate(store, rows=20_000)
        insert["cpu_us_per_row"] = round((time.process_time() - before_s) / 20_000 * 1e6, 2)
        await store.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
        env.update({"IOU_REDIS_URL": url, "IOU_LEDGER_URL": fresh()})
        writer = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "writer"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await _settled(engine)
            cpu_before = _cpu_s(writer.pid)
            started = time.perf_counter()
            charged, lags = await _charge_at(engine, rate_per_s, seconds)
            achieved_per_s = charged / (time.perf_counter() - started)
            await _settled(engine)
            cpu_us_per_row = (_cpu_s(writer.pid) - cpu_before) / charged * 1e6
        finally:
            writer.terminate()
            writer.wait()
        engine.conn.close()
    lags.sort()
    # Under a loaded machine this process may fall short of the rate: the batches are then
    # smaller than the rate implies; the rate reached is reported.
    return {"rate_per_s": rate_per_s, "reached_per_s": round(achieved_per_s),
            "seconds": seconds, "rows": charged,
            "insert": insert, "writer_cpu_us_per_row": round(cpu_us_per_row, 2),
            "writer_ratio": round(cpu_us_per_row / insert["cpu_us_per_row"], 2),
            "lag_p99_s": round(lags[int(len(lags) * 0.99) - 1], 3) if lags else None,
            "load_average": os.getloadavg()[0]}


async def _charge_at(engine: Engine, rate_per_s: int, seconds: float
                     ) -> tuple[int, list[float]]:
    """Charges in waves every 50 ms at ``rate_per_s``; (charges made, lag samples)."""
    names = [f"bench-{i}" for i in range(AGENTS)]
    wave = max(rate_per_s // 20, 1)
    charged, lags = 0, []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        await asyncio.gather(*(engine.charge(names[(charged + i) % AGENTS], "web_search")
                               for i in range(wave)))
        charged += wave
        if charged % (wave * 4) == 0:
            lags.append((await ledger_backlog(engine.conn, engine.partitions))[0])
        await asyncio.sleep(max(charged / rate_per_s - (time.perf_counter() - started), 0))
    return charged, lags


async def _settled(engine: Engine, timeout_s: float = 120.0) -> None:
    started = time.perf_counter()
    while (await ledger_backlog(engine.conn, engine.partitions))[1] > 0:
        assert time.perf_counter() - started < timeout_s, "the writer did not catch up"
        await asyncio.sleep(0.05)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:13]) / os.sysconf("SC_CLK_TCK")  # utime stime


@contextlib.contextmanager
def _fresh_ledgers(ledger: str, tmp: Path) -> Iterator[Callable[[], str]]:
    """A function giving the URL of an empty ledger each time it is called."""
    made = iter(range(1_000))
    if ledger == "sqlite":
        yield lambda: f"sqlite:///{tmp / f'ledger-{next(made)}.db'}"
        return
    with postgres_server() as pg:
        def fresh() -> str:
            reset_database(pg.dsn)
            return pg.dsn

        yield fresh


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--load-s", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--cpu", action="store_true",
                        help="only the writer's CPU per row ÷ the store's (one writer, here)")
    parser.add_argument("--per-stream", type=int, default=1000)
    parser.add_argument("--ledger", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--paced", type=int, default=0, metavar="CHARGES_PER_S",
                        help="with --cpu: an `iou writer` process under charges at this rate")
    args = parser.parse_args()
    if args.cpu and args.paced:
        results = asyncio.run(paced_cpu(args.paced, args.load_s))
    elif args.cpu:
        results = asyncio.run(cpu_per_row(args.events, args.per_stream, args.ledger))
    else:
        results = asyncio.run(main(args.events, args.load_s))
    text = orjson.dumps(results, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    cli()
