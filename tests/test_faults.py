"""Fault tests (slow): writers killed with SIGKILL, Redis killed, PostgreSQL stopped.

Each test starts its own servers and processes on loopback and kills only those, by pid.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys

import pytest

from gateway.config import load_settings
from gateway.ledger.reconcile import reconcile
from gateway.ledger.store import LedgerStore
from gateway.metering.engine import Engine
from gateway.store.resp import RedisConnection, parse_redis_url
from tests.ledger_helpers import store_for, writer_for
from tests.load import Load, make_agents
from tests.pg import Postgres, reset_database
from tests.servers import redis_server

pytestmark = pytest.mark.slow


async def engine_on(url: str) -> Engine:
    engine = Engine(RedisConnection(parse_redis_url(url)),
                    load_settings({"IOU_REDIS_URL": url}))
    await engine.start(background=False)
    return engine


def writer_process(redis_url: str, ledger_url: str, fault: str = "",
                   consumer: str | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env.update({"IOU_REDIS_URL": redis_url, "IOU_LEDGER_URL": ledger_url})
    # A fault is planted by the tests' own entry point (production code has no hook).
    entry = ["tests.fault_entry", fault] if fault else ["gateway.cli.main"]
    args = [sys.executable, "-m", *entry, "writer"]
    if consumer:
        args += ["--consumer", consumer]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


async def ledger_charge_ids(store: LedgerStore, agents: list[str]) -> list[str]:
    ids: list[str] = []
    for agent in agents:
        ids += [e.entry_id for e in await store.entries(agent, 100_000, kind="charge")]
    return ids


async def test_writer_killed_30_times_loses_and_doubles_nothing(ledger_url: str,
                                                                store: LedgerStore) -> None:
    with redis_server() as (url, _):
        engine = await engine_on(url)
        agents = await make_agents(engine, 50)
        load = Load(engine, agents, rate_per_s=1500)
        running = asyncio.create_task(load.run(120))
        rng = random.Random(5)
        for i in range(30):
            # Every third life crashes itself at a precise point; the rest die from outside.
            fault = ["", "after_read", "after_commit"][i % 3]
            proc = writer_process(url, ledger_url, fault, consumer=f"w{i % 4}")
            await asyncio.sleep(rng.uniform(0.2, 1.2))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
        load.stop()
        await running
        writer = writer_for(engine, store, "final")
        drift = await reconcile(engine, store, writer)
        ids = await ledger_charge_ids(store, agents)
        assert len(ids) == len(set(ids))  # 0 duplicated
        assert set(load.accepted) <= set(ids)  # 0 lost
        assert len(ids) == len(load.accepted)  # nothing the clients did not get
        assert drift == []
        assert len(load.accepted) > 1000
        engine.conn.close()


async def test_redis_killed_under_load_reconciles(tmp_path_factory: pytest.TempPathFactory,
                                                  ledger_url: str, store: LedgerStore) -> None:
    with redis_server("--appendfsync", "always") as (url, process):
        engine = await engine_on(url)
        agents = await make_agents(engine, 50)
        load = Load(engine, agents, rate_per_s=2000)
        running = asyncio.create_task(load.run(30))
        await asyncio.sleep(2)
        process.send_signal(signal.SIGKILL)
        process.wait()
        await asyncio.sleep(0.5)
        load.stop()
        await running
        assert load.failed > 0  # the load really ran into the dead server
        args = [str(a) for a in process.args]  # type: ignore[union-attr]
        restarted = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        try:
            await asyncio.sleep(1)
            engine.conn.close()
            engine = await engine_on(url)
            writer = writer_for(engine, store)
            assert await reconcile(engine, store, writer) == []
            ids = set(await ledger_charge_ids(store, agents))
            assert set(load.accepted) <= ids  # every acknowledged charge survived
        finally:
            restarted.terminate()
            restarted.wait()
            engine.conn.close()


async def test_postgres_stopped_60s_under_load(pg_server: Postgres) -> None:
    reset_database(pg_server.dsn)
    store = store_for(pg_server.dsn)
    await store.migrate()
    with redis_server() as (url, _):
        engine = await engine_on(url)
        agents = await make_agents(engine, 20)
        writer = writer_for(engine, store, "pg-writer")
        writing = asyncio.create_task(writer.run())
        load = Load(engine, agents, rate_per_s=300)
        running = asyncio.create_task(load.run(90))
        await asyncio.sleep(3)
        pg_server.stop()
        before_outage = len(load.accepted)
        await asyncio.sleep(60)
        during = len(load.accepted) - before_outage
        streams_len = sum([await engine.conn.call_or_raise(b"XLEN", f"iou:{{p{p:02d}}}:events")
                           for p in range(engine.partitions)])
        assert during > 1000  # charging went on without the ledger
        assert streams_len >= during  # nothing trimmed that was not committed
        pg_server.start()
        load.stop()
        await running
        deadline = asyncio.get_running_loop().time() + 60
        while await store_count_or_zero(store) < len(load.accepted) + 2 * len(agents) + 1:
            assert asyncio.get_running_loop().time() < deadline, "backlog did not drain"
            await asyncio.sleep(0.5)
        writer.stop()
        await writing
        ids = await ledger_charge_ids(store, agents)
        assert sorted(ids) == sorted(load.accepted)
        assert await reconcile(engine, store, writer_for(engine, store, "check")) == []
        engine.conn.close()
    await store.close()


async def store_count_or_zero(store: LedgerStore) -> int:
    try:
        return await store.count()
    except Exception:
        return 0


async def test_hundred_thousand_charges_thousand_agents(real_engine: Engine,
                                                        store: LedgerStore) -> None:
    from tests.test_ledger import charge_storm

    accepted = await charge_storm(real_engine, 1000, 100_000)
    writer = writer_for(real_engine, store)
    await writer.drain()
    ids = await ledger_charge_ids(store, [f"storm-{i}" for i in range(1000)])
    assert len(ids) == len(set(ids)) == accepted
    assert await reconcile(real_engine, store, writer) == []
