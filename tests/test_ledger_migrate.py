"""Several processes (gateway workers, writers) migrating one fresh SQLite ledger at once:
exactly one applies each migration and none fails (a worker whose start-up fails stops a
multi-worker `iou serve`, resetting every open connection)."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

from gateway.ledger.sqlite import SqliteStore

MIGRATORS = 6
ROUNDS = 5


def _migrate(path: str, start: multiprocessing.synchronize.Event) -> None:
    start.wait()
    store = SqliteStore(Path(path))

    async def run() -> None:
        try:
            await store.migrate()
        finally:
            await store.close()

    asyncio.run(run())


def test_concurrent_migrations_of_a_fresh_sqlite_ledger(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for round_ in range(ROUNDS):
        path = str(tmp_path / f"ledger-{round_}.db")
        start = context.Event()
        workers = [context.Process(target=_migrate, args=(path, start))
                   for _ in range(MIGRATORS)]
        for worker in workers:
            worker.start()
        start.set()
        for worker in workers:
            worker.join(60)
        assert [w.exitcode for w in workers] == [0] * MIGRATORS, f"round {round_}"
