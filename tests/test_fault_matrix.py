"""The fault matrix (slow suite): a client drives keyed charges and keyed batches through a
real `iou serve` while a fault strikes; afterwards `iou reconcile` is clean and, from the
client's own record of what it sent and what it was answered, every call was answered,
every acknowledged charge is in the ledger exactly once and no retried key was charged
twice. docs/operations.md ("What the tests prove still holds") lists the cases and what
each proves.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import orjson
import pytest
import redis

from gateway.config import PARTITIONS_DEFAULT
from gateway.ledger.writer import FAILURES_MAX
from gateway.store import keys
from tests.fault_rig import (
    Client,
    RedisProc,
    Serve,
    check_charged_once,
    ledger_charges,
    provision,
    reconcile_clean,
)
from tests.pg import Postgres, reset_database
from tests.proc_helpers import wait_for

pytestmark = pytest.mark.slow

UNDER_LOAD_S = 1.5  # load before, between and after faults


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    server: Postgres = request.getfixturevalue("pg_server")
    reset_database(server.dsn)
    return server.dsn


@pytest.fixture
def rig(tmp_path: Path, ledger: str) -> Iterator[tuple[RedisProc, Serve]]:
    redis_proc = RedisProc(tmp_path)
    redis_proc.start()
    serve = Serve(tmp_path, redis_proc.url, ledger)
    try:
        serve.start()
        yield redis_proc, serve
    finally:
        serve.stop()
        redis_proc.stop()


async def _under_load(client: Client, faults: list[object]) -> None:
    """Run the client; between stretches of load, strike each fault (a callable run in a
    thread, so the client keeps going meanwhile); then stop and let every call finish."""
    running = asyncio.create_task(client.run())
    await asyncio.sleep(UNDER_LOAD_S)
    for fault in faults:
        await asyncio.to_thread(fault)  # type: ignore[arg-type]
        await asyncio.sleep(UNDER_LOAD_S)
    client.stop()
    await running


def _finish(serve: Serve, client: Client, ledger: str) -> None:
    serve.wait_ready()
    reconcile_clean(serve)
    rows = asyncio.run(ledger_charges(ledger, client.singles + client.batchers))
    check_charged_once(client, rows)
    assert client.acknowledged > 20  # the load really ran


def test_gateway_killed(rig: tuple[RedisProc, Serve], ledger: str) -> None:
    """kill -9 of `iou serve` (its writer goes with it) three times under load."""
    _, serve = rig
    client = provision(serve)

    def crash_and_restart() -> None:
        serve.kill9()
        serve.start()

    asyncio.run(_under_load(client, [crash_and_restart] * 3))
    _finish(serve, client, ledger)


def test_writer_killed(rig: tuple[RedisProc, Serve], ledger: str) -> None:
    """kill -9 of the ledger writer child three times: the supervisor restarts it."""
    _, serve = rig
    client = provision(serve)
    asyncio.run(_under_load(client, [serve.kill9_writer] * 3))
    _finish(serve, client, ledger)
    wait_for("3 restarts counted", lambda: serve.metric(
        "iou_ledger_writer_restarts_total") == 3, 10)


def test_redis_killed(rig: tuple[RedisProc, Serve], ledger: str) -> None:
    """kill -9 of Redis twice, restarted on the same AOF (appendfsync always)."""
    redis_proc, serve = rig
    client = provision(serve)

    def crash_and_restart() -> None:
        redis_proc.kill9()
        time.sleep(0.5)  # calls meanwhile are 503 and retried
        redis_proc.start()

    asyncio.run(_under_load(client, [crash_and_restart] * 2))
    _finish(serve, client, ledger)


def test_redis_out_of_memory(rig: tuple[RedisProc, Serve], ledger: str) -> None:
    """Redis over its maxmemory for 2 s: calls answer 503 (never 500), and the gateway
    serves again by itself once memory is back."""
    redis_proc, serve = rig
    client = provision(serve)

    def squeeze() -> None:
        admin = redis.Redis.from_url(redis_proc.url)
        admin.config_set("maxmemory", 1)  # every write that may grow memory is refused
        try:
            wait_for("a 503", lambda: _answered(client, 503), 10)
            time.sleep(1)
        finally:
            admin.config_set("maxmemory", 0)
            admin.close()

    asyncio.run(_under_load(client, [squeeze]))
    _finish(serve, client, ledger)


def test_redis_loading(tmp_path: Path, ledger: str) -> None:
    """Redis restarted on a data set that takes ~2 s to load: calls answer 503 while it
    says LOADING (never 500), and the gateway serves again by itself afterwards."""
    redis_proc = RedisProc(tmp_path, "--key-load-delay", "50")  # µs per key while loading
    redis_proc.start()
    filler = redis.Redis.from_url(redis_proc.url)
    with filler.pipeline(transaction=False) as pipe:
        for i in range(40_000):
            pipe.set(f"filler:{i}", "x")
        pipe.execute()
    filler.bgrewriteaof()  # an RDB base file, whose keys the delay applies to
    wait_for("the rewrite", lambda: filler.info("persistence")[
        "aof_rewrite_in_progress"] == 0, 30)
    filler.close()
    serve = Serve(tmp_path, redis_proc.url, ledger)
    try:
        serve.start()
        client = provision(serve)

        def restart_loading() -> None:
            redis_proc.kill9()
            redis_proc.start()  # returns once it answers PING, i.e. after loading

        asyncio.run(_under_load(client, [restart_loading]))
        assert _answered(client, 503)
        _finish(serve, client, ledger)
    finally:
        serve.stop()
        redis_proc.stop()


def _answered(client: Client, status: int) -> bool:
    return any(s == status for op in list(client.ops) for s, _ in op.answers)


def test_postgres_stopped(tmp_path: Path, pg_server: Postgres) -> None:
    """PostgreSQL stopped for 10 s: charging goes on, /readyz turns 503 once the lag passes
    IOU_LEDGER_LAG_MAX_S (here 3 s) and 200 again after the backlog is written."""
    reset_database(pg_server.dsn)
    redis_proc = RedisProc(tmp_path)
    redis_proc.start()
    serve = Serve(tmp_path, redis_proc.url, pg_server.dsn, IOU_LEDGER_LAG_MAX_S="3")
    try:
        serve.start()
        client = provision(serve)
        seen: list[int] = []

        def outage() -> None:
            pg_server.stop()
            try:
                wait_for("readyz 503 on ledger lag", lambda: serve.readyz() == 503, 15)
                seen.append(503)
                time.sleep(5)
            finally:
                pg_server.start()

        asyncio.run(_under_load(client, [outage]))
        assert seen == [503]
        _finish(serve, client, pg_server.dsn)
    finally:
        serve.stop()
        redis_proc.stop()


def _poison(redis_url: str, agent: str, postgres: bool) -> list[str]:
    """XADD events the ledger refuses into the agent's partition stream; their ids."""
    stream = keys.events(keys.partition_of(agent, PARTITIONS_DEFAULT))
    base = {"id": uuid.uuid4().hex, "at": str(int(time.time() * 1000)), "kind": "charge",
            "agent": agent, "tool": "web_search", "category": "tool"}
    poisons = [{**base, "amount": "12x"}]  # not an amount: refused by the parser
    if postgres:  # JSONB refuses \u0000 (SQLite's TEXT keeps it, so it is no poison there)
        poisons.append({**base, "id": uuid.uuid4().hex, "amount": "1",
                        "meta": orjson.dumps({"note": "a\u0000b"}).decode()})
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ids = [str(client.xadd(stream, p)) for p in poisons]  # type: ignore[arg-type]
    client.close()
    return ids


def test_poison_rows_are_dead_lettered(rig: tuple[RedisProc, Serve], ledger: str) -> None:
    """Rows the ledger refuses go to dead_letters after FAILURES_MAX tries, show in
    /metrics, and hold nothing else back."""
    redis_proc, serve = rig
    client = provision(serve)
    postgres = ledger.startswith("postgres")
    poisoned: list[str] = []
    asyncio.run(_under_load(client, [lambda: poisoned.extend(
        _poison(redis_proc.url, "s0", postgres))]))
    wait_for("the dead letters in /metrics", lambda: serve.metric(
        "iou_ledger_dead_letters") == len(poisoned), 10 + 3 * FAILURES_MAX)
    _finish(serve, client, ledger)
    rows = asyncio.run(_dead_letters(ledger))
    assert sorted(rows) == sorted(poisoned)


async def _dead_letters(ledger_url: str) -> list[str]:
    """The stream ids in the dead_letters table."""
    if ledger_url.startswith("sqlite"):
        with sqlite3.connect(ledger_url[len("sqlite:///"):]) as db:
            return [r[0] for r in db.execute("SELECT stream_id FROM dead_letters")]
    conn = await asyncpg.connect(ledger_url)
    try:
        return [r[0] for r in await conn.fetch("SELECT stream_id FROM dead_letters")]
    finally:
        await conn.close()


def test_wiped_store(tmp_path: Path) -> None:
    """Redis loses its AOF and comes back empty: not ready and every call 503 (the client
    retries with its keys) until `iou recover`; then the same agents, keys and balances
    serve again. (A wipe loses what the ledger had not got yet: here it had caught up.)"""
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    redis_proc = RedisProc(tmp_path)
    redis_proc.start()
    serve = Serve(tmp_path, redis_proc.url, ledger)
    try:
        serve.start()
        client = provision(serve)
        asyncio.run(_under_load(client, []))
        wait_for("the ledger caught up", lambda: serve.metric(
            "iou_ledger_pending_entries") == 0, 30)
        redis_proc.wipe()
        wait_for("readyz 503", lambda: serve.readyz() == 503, 10)

        def recover() -> None:
            recovered = serve.iou("recover")
            assert recovered.returncode == 0, recovered.stderr
            serve.wait_ready(10)

        again = Client(serve.url, client.keys, client.singles, client.batchers, client.ops)
        asyncio.run(_under_load(again, [recover]))
        assert any(status == 503 for op in again.ops for status, _ in op.answers)
        _finish(serve, again, ledger)
    finally:
        serve.stop()
        redis_proc.stop()
