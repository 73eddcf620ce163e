"""`iou replay` benchmark: ledger rows replayed per second.

    python -m loadtests.bench_replay [--rows 1000000] [--agents 1000] [--json PATH]

Writes a large ledger straight into a fresh SQLite file (one grant per agent, then charges
of four tools in two categories and, every 20th call, a hold and its capture, spread over 30
simulated days), then replays all of it under a proposed limits object that refuses a share
of the calls (per-call, daily, category daily and hourly call caps), on the scratch server
`iou replay` starts. One run; the rate depends on the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import orjson

from gateway.api.body import parse_json_object
from gateway.api.limits_body import limit_changes
from gateway.config import load_settings
from gateway.ledger import schema
from gateway.ledger.factory import open_store
from gateway.ledger.replay import Proposed, replay
from gateway.metering.ids import uuid7

DAY_MS = 86_400_000
START_MS = 1_790_000_000_000  # 2026-09-21, a Monday
DAYS = 30
PARTITIONS = 16
TOOLS = (("web_search", "tool", 50_000), ("web_browse", "tool", 120_000),
         ("email_send", "tool", 20_000), ("llm_summarize", "llm", None))
LIMITS: dict[str, Any] = {"per_call": "0.1", "daily": "3",
                          "categories": {"llm": {"daily": "1"}},
                          "calls": {"per_hour": 40}}
INSERT_ROWS = 10_000


Call = tuple[str | None, str | None, int]  # tool, category, amount micros


def _row(kind: str, agent: str, stream: str, at_ms: int, call: Call, **extra: Any
         ) -> tuple[Any, ...]:
    """One ledger row in ``schema.INSERT_ENTRY``'s column order."""
    tool, category, amount = call
    return (uuid7(), stream, at_ms, 0, at_ms, kind, agent, tool, category, amount,
            None, extra.get("held"), None, None, extra.get("hold_id"),
            extra.get("expires_at_ms"), None, None, None, None, None)


def ledger_rows(rows: int, agents: int, seed: int = 18) -> list[tuple[Any, ...]]:
    """Grants, then calls in time order (holds with their capture 2 s later)."""
    rng = random.Random(seed)
    names = [f"bench-{i:05d}" for i in range(agents)]
    streams = {n: f"p{zlib.crc32(n.encode()) % PARTITIONS:02d}" for n in names}
    out = [_row("grant", n, streams[n], START_MS - DAY_MS, (None, None, 10**12))
           for n in names]
    step_ms = DAYS * DAY_MS // max(rows, 1)
    at_ms = START_MS
    while len(out) < rows:
        at_ms += step_ms + 1
        agent = names[rng.randrange(agents)]
        tool, category, price = TOOLS[rng.randrange(len(TOOLS))]
        cost = price if price is not None else rng.randrange(10, 150) * 1000
        if len(out) % 20 == 0:
            hold_id = uuid7()
            out.append(_row("hold", agent, streams[agent], at_ms, (tool, category, cost),
                            hold_id=hold_id, expires_at_ms=at_ms + 300_000))
            out.append(_row("capture", agent, streams[agent], at_ms + 2_000,
                            (tool, category, cost), hold_id=hold_id, held=cost))
        else:
            out.append(_row("charge", agent, streams[agent], at_ms, (tool, category, cost)))
    return out


def write_ledger(path: Path, rows: list[tuple[Any, ...]]) -> None:
    db = sqlite3.connect(path)
    try:
        with db:
            for i in range(0, len(rows), INSERT_ROWS):
                db.executemany(schema.INSERT_ENTRY, rows[i:i + INSERT_ROWS])
    finally:
        db.close()


async def bench(rows: int, agents: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="iou-bench-replay-") as folder:
        path = Path(folder) / "ledger.db"
        store = open_store(load_settings({"IOU_LEDGER_URL": f"sqlite:///{path}"}))
        await store.migrate()
        made = time.perf_counter()
        write_ledger(path, ledger_rows(rows, agents))
        written_s = time.perf_counter() - made
        proposed = Proposed(limit_changes(parse_json_object(orjson.dumps(LIMITS)), 10**15))
        cpu = time.process_time()
        try:
            result = await replay(store, proposed, scratch_dir=Path(folder))
        finally:
            await store.close()
        cpu_s = time.process_time() - cpu
    refused = sum(a.refused.count for a in result.agents)
    return {"rows": result.rows, "agents": len(result.agents),
            "ledger_written_s": round(written_s, 1), "replay_s": round(result.seconds, 1),
            "rows_per_s": round(result.rows / result.seconds),
            # The replaying process's own CPU (reading the ledger, building and sending the
            # calls): on a loaded machine the wall-clock rate says more about the load.
            "python_cpu_s": round(cpu_s, 1),
            "python_cpu_us_per_row": round(cpu_s * 1e6 / result.rows),
            "scratch_redis_cpu_s": round(result.scratch_cpu_s, 1),
            "scratch_redis_cpu_us_per_row": round(result.scratch_cpu_s * 1e6 / result.rows),
            "load_average_1m": round(os.getloadavg()[0], 1), "refused": refused,
            "limits": LIMITS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None, help="Write the figures here.")
    args = parser.parse_args()
    figures = asyncio.run(bench(args.rows, args.agents))
    text = orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
