"""The store knows it is the one the ledger describes: a wiped or replaced Redis is not
served (503 until `iou recover`), a new pair gets one identity, and the embedded default
rebuilds a wiped store by itself at start."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.gateway_proc import Gateway, running_gateway
from tests.http_helpers import error_of, new_agent, seed_tools
from tests.proc_helpers import children, cmdline, wait_for, wait_gone, writer_pids
from tests.servers import redis_server

DETECT_S = 10  # the background check runs every second


def ready(gw: Gateway) -> httpx.Response:
    return httpx.get(gw.url + "/readyz", timeout=10)


def iou(gw: Gateway, *args: str, redis_url: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env["IOU_DATA_DIR"] = str(gw.data_dir)
    if redis_url is not None:
        env["IOU_REDIS_URL"] = redis_url
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def ledger_identity(gw: Gateway) -> str | None:
    with sqlite3.connect(gw.data_dir / "ledger.db") as db:
        row = db.execute("SELECT store_id FROM store_identity").fetchone()
    return None if row is None else str(row[0])


def charge(gw: Gateway, key: str) -> httpx.Response:
    with gw.agent(key) as client:
        return client.post("/v1/charge", json={"tool": "web_search"})


def in_ledger(gw: Gateway, agent: str, charge_ids: set[str]) -> bool:
    with gw.admin() as admin:
        page = admin.get(f"/v1/agents/{agent}/ledger", params={"kind": "charge",
                                                               "limit": 1000})
    return page.status_code == 200 and charge_ids <= {
        e["entry_id"] for e in page.json()["entries"]}


@pytest.fixture
def external() -> Iterator[tuple[str, Gateway]]:
    with redis_server() as (url, _), running_gateway(url) as gw:
        seed_tools(gw)
        yield url, gw


def test_a_new_pair_gets_one_identity_in_redis_and_the_ledger(
        external: tuple[str, Gateway]) -> None:
    url, gw = external
    client = redis.Redis.from_url(url, decode_responses=True)
    stored = client.hget("iou:meta", "store_id")
    client.close()
    assert stored and stored == ledger_identity(gw)
    assert ready(gw).json()["checks"]["store"] == "ok"


def test_a_wiped_redis_answers_503_until_iou_recover(external: tuple[str, Gateway]) -> None:
    url, gw = external
    agent, key = new_agent(gw)
    _, unused_key = new_agent(gw)  # never looked up before the wipe (not in any cache)
    first = charge(gw, key)
    assert first.status_code == 200
    wait_for("the charge in the ledger", lambda: in_ledger(gw, agent, {
        first.json()["charge_id"]}), 20, 0.2)
    client = redis.Redis.from_url(url)
    client.flushall()  # what a deleted AOF and a restart leave behind
    client.close()
    # The key is unknown to the wiped store: that is a 503, not a 401, even at once.
    refused = charge(gw, unused_key)
    assert refused.status_code == 503 and error_of(refused) == "unavailable", refused.text
    wait_for("readyz 503", lambda: ready(gw).status_code == 503, DETECT_S)
    assert ready(gw).json()["checks"]["store"].startswith("wiped")
    refused = charge(gw, key)
    assert refused.status_code == 503 and error_of(refused) == "unavailable", refused.text
    with gw.admin() as admin:
        assert admin.get("/v1/agents").status_code == 503
    done = iou(gw, "recover", redis_url=url)
    assert done.returncode == 0, done.stderr
    wait_for("readyz 200", lambda: ready(gw).status_code == 200, DETECT_S)
    second = charge(gw, key)
    assert second.status_code == 200, second.text
    assert second.json()["balance"] == "9.9"  # 10 - 2 x 0.05: nothing lost, nothing doubled
    wait_for("the new charge in the ledger", lambda: in_ledger(gw, agent, {
        second.json()["charge_id"]}), 20, 0.2)
    reconciled = iou(gw, "reconcile", redis_url=url)
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr


def test_a_replaced_redis_answers_503(external: tuple[str, Gateway]) -> None:
    url, gw = external
    _, key = new_agent(gw)
    client = redis.Redis.from_url(url)
    client.hset("iou:meta", "store_id", "another-deployment")
    client.close()
    wait_for("readyz 503", lambda: ready(gw).status_code == 503, DETECT_S)
    assert ready(gw).json()["checks"]["store"].startswith("replaced")
    refused = charge(gw, key)
    assert refused.status_code == 503 and error_of(refused) == "unavailable"
    assert "another-deployment" not in refused.text


def _embedded_pids(gw: Gateway) -> list[int]:
    return [p for p in children(gw.process.pid) if b"-server" in cmdline(p)]


def test_the_embedded_default_recovers_a_wiped_store_at_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_gateway(None, data_dir=data_dir) as gw:
        seed_tools(gw)
        agent, key = new_agent(gw)
        ids = {charge(gw, key).json()["charge_id"] for _ in range(3)}
        wait_for("the charges in the ledger", lambda: in_ledger(gw, agent, ids), 20, 0.2)
    shutil.rmtree(data_dir / "appendonlydir")  # the embedded store's data is gone
    with running_gateway(None, data_dir=data_dir) as gw:
        assert ready(gw).status_code == 200
        again = charge(gw, key)
        assert again.status_code == 200, again.text
        assert again.json()["balance"] == "9.8"  # 10 - 4 x 0.05
        assert "rebuilding it from the ledger" in gw.log_text()


def test_serve_killed_with_its_redis_comes_back_with_every_acknowledged_charge(
        tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_gateway(None, data_dir=data_dir) as gw:
        seed_tools(gw)
        agent, key = new_agent(gw, grant="100")
        doomed = [gw.process.pid, *_embedded_pids(gw), *writer_pids(gw.process.pid)]
        assert len(doomed) == 3
        ids = asyncio.run(_charge_many(gw.url, key, 200))
        for pid in doomed:  # nothing gets to flush or shut down cleanly
            os.kill(pid, signal.SIGKILL)
        for pid in doomed:
            wait_gone(pid)
    with running_gateway(None, data_dir=data_dir) as gw:
        with gw.agent(key) as client:
            status = client.get("/v1/balance").json()
        assert status["balance"] == str(100 - len(ids) * 0.05).rstrip("0").rstrip(".")
        wait_for("every acknowledged charge in the ledger",
                 lambda: in_ledger(gw, agent, ids), 30, 0.2)
        assert iou(gw, "reconcile").returncode == 0


async def _charge_many(url: str, key: str, count: int) -> set[str]:
    """Charges sent 20 at a time; the ids of those acknowledged."""
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        async def one() -> str:
            response = await client.post("/v1/charge", json={"tool": "web_search"})
            assert response.status_code == 200, response.text
            charge_id: str = response.json()["charge_id"]
            return charge_id

        ids: set[str] = set()
        for _ in range(count // 20):
            ids |= set(await asyncio.gather(*(one() for _ in range(20))))
        return ids
