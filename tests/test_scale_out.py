"""Two gateway processes and three ledger writers on one store, under load (slow)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import threading
import time

import httpx
import pytest

from gateway.ledger.reconcile import reconcile
from tests.gateway_proc import running_gateway
from tests.http_helpers import new_agent, seed_tools
from tests.ledger_helpers import store_for, writer_for
from tests.pg import Postgres, reset_database
from tests.servers import redis_server
from tests.test_faults import engine_on, ledger_charge_ids, writer_process

pytestmark = pytest.mark.slow
AGENTS = 20
REQUESTS = 4000


def test_two_gateways_three_writers_kill_one(pg_server: Postgres) -> None:
    reset_database(pg_server.dsn)
    with redis_server() as (url, _), \
            running_gateway(url, writer=False, IOU_LEDGER_URL=pg_server.dsn) as one, \
            running_gateway(url, writer=False, IOU_LEDGER_URL=pg_server.dsn) as two:
        seed_tools(one)
        agents = [new_agent(one, "2", "scale") for _ in range(AGENTS)]  # 40 calls each
        writers = [writer_process(url, pg_server.dsn, consumer=f"scale-{i}") for i in range(3)]
        accepted: list[str] = []
        refused = 0
        lock = threading.Lock()

        def worker(offset: int) -> None:
            nonlocal refused
            clients = [httpx.Client(base_url=gw.url, timeout=30) for gw in (one, two)]
            for i in range(offset, REQUESTS, 8):
                _, key = agents[i % AGENTS]
                response = clients[i % 2].post("/v1/charge", json={"tool": "web_search"},
                                               headers={"authorization": f"Bearer {key}"})
                with lock:
                    if response.status_code == 200:
                        accepted.append(response.json()["charge_id"])
                    else:
                        assert response.json()["error"] == "balance_insufficient"
                        refused += 1
            for c in clients:
                c.close()

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            running = [pool.submit(worker, i) for i in range(8)]
            time.sleep(1.0)
            writers[0].send_signal(signal.SIGKILL)  # mid-run
            for f in running:
                f.result()
        for w in writers[1:]:
            w.terminate()
        for w in writers:
            w.wait()
        assert len(accepted) == AGENTS * 40 and refused == REQUESTS - AGENTS * 40

        async def check() -> None:
            engine = await engine_on(url)
            store = store_for(pg_server.dsn)
            writer = writer_for(engine, store, "final")
            assert await reconcile(engine, store, writer) == []  # drains what was left
            ids = await ledger_charge_ids(store, [name for name, _ in agents])
            assert len(ids) == len(set(ids))  # 0 duplicated
            assert sorted(ids) == sorted(accepted)  # 0 lost, nothing extra
            for name, _ in agents:
                assert (await engine.agent_state(name)).balance_micros == 0  # never below
            writer.close()
            await store.close()
            engine.conn.close()

        asyncio.run(check())
