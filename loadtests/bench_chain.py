"""What the hash chain (gateway/ledger/chain.py) costs the ledger writer: drain rate with the
chain (sealed as each batch is inserted, or by the sealing pass) and without it,
alternating (ABBA) on the same stores.

    python -m loadtests.bench_chain [--events 50000] [--rounds 2] [--json PATH]

Starts its own redis-server and PostgreSQL on loopback ports (as loadtests.bench_writer).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from gateway.config import load_settings
from gateway.ledger.factory import open_store
from gateway.ledger.store import LedgerStore
from gateway.ledger.writer import LedgerWriter
from gateway.metering.engine import Engine
from loadtests.bench_writer import engine_on, fill
from loadtests.servers import postgres_server, redis_server, reset_database


async def _no_seal(floors: dict[str, tuple[int, int]]) -> int:
    return 0


async def _no_chain(firsts: dict[str, str]) -> dict[str, tuple[int, int]]:
    return {}  # no batch chained as it is inserted either


async def drain(engine: Engine, store: LedgerStore, events: int, seal: bool) -> float:
    """Fill the streams with ``events`` charges, drain them; rows/s (the seal included)."""
    await fill(engine, events)
    writer = LedgerWriter(engine.conn.url, store, engine.partitions, "bench")
    if not seal:
        writer.seal = _no_seal  # type: ignore[method-assign]
        writer._chain_from = _no_chain  # type: ignore[method-assign]
    await writer.prepare()
    started = time.perf_counter()
    await writer.drain()
    elapsed = time.perf_counter() - started
    writer.close()
    return writer.stats.committed / elapsed


async def sealed_afterwards(engine: Engine, store: LedgerStore) -> int:
    """Seal what the unsealed rounds left, so every later round starts from a sealed head."""
    writer = LedgerWriter(engine.conn.url, store, engine.partitions, "bench")
    await writer.drain()
    writer.close()
    return writer.stats.sealed


async def compare(engine: Engine, ledger_url: str, events: int, rounds: int
                  ) -> dict[str, Any]:
    store = open_store(load_settings({"IOU_LEDGER_URL": ledger_url}))
    await store.migrate()
    rates: dict[bool, list[float]] = {True: [], False: []}
    try:
        for _ in range(rounds):
            for seal in (False, True, True, False):
                rates[seal].append(await drain(engine, store, events, seal))
                if not seal:
                    await sealed_afterwards(engine, store)
        intact = all(r.problem is None for r in await store.verify_chains())
    finally:
        await store.close()
    without, with_seal = statistics.median(rates[False]), statistics.median(rates[True])
    return {"rows_per_s_without_chain": round(without), "rows_per_s_with_chain": round(with_seal),
            "ratio": round(with_seal / without, 3), "runs_each": len(rates[True]),
            "chains_intact": intact}


async def main(events: int, rounds: int) -> dict[str, Any]:
    results: dict[str, Any] = {"events_per_run": events}
    with redis_server("--appendfsync", "always") as (url, _), postgres_server() as pg:
        engine = await engine_on(url)
        with tempfile.TemporaryDirectory() as tmp:
            reset_database(pg.dsn)
            for name, ledger_url in (("sqlite", f"sqlite:///{Path(tmp) / 'ledger.db'}"),
                                     ("postgres", pg.dsn)):
                results[name] = await compare(engine, ledger_url, events, rounds)
        engine.conn.close()
    return results


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = asyncio.run(main(args.events, args.rounds))
    text = orjson.dumps(results, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    cli()
