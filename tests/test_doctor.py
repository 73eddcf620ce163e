"""`iou doctor` against real deployments, each check made to fail for real: a Redis started
with allkeys-lru, with AOF off, with its clock 5 s ahead (faketime), a cluster missing a slot,
a ledger unreachable and one read-only, a writer stalled, a store with other partitions and
another identity; and the embedded default passing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from click.testing import CliRunner
from redis.crc import key_slot

from gateway.cli.main import main
from gateway.config import load_settings
from gateway.ledger.factory import open_store
from gateway.ledger.writer import stream_names
from gateway.store import keys
from tests.cluster import redis_cluster, run
from tests.gateway_proc import Gateway, running_gateway
from tests.http_helpers import new_agent, seed_tools
from tests.pg import Postgres, pg_bin
from tests.proc_helpers import writer_pids
from tests.servers import free_port, redis_server

CHECKS = ["redis reachable", "maxmemory-policy", "persistence (AOF)", "clocks",
          "cluster slots", "ledger", "writer lag", "partitions", "store identity"]


def doctor(redis_url: str | None, data_dir: Path, ledger_url: str | None = None,
           **env: str) -> tuple[int, dict[str, dict[str, object]], str]:
    """(exit code, checks by name from --json, the text output of a second run)."""
    environ: dict[str, str | None] = {k: None for k in os.environ if k.startswith("IOU_")}
    environ.update({"IOU_REDIS_URL": redis_url, "IOU_DATA_DIR": str(data_dir),
                    "IOU_LEDGER_URL": ledger_url, **env})
    runner = CliRunner()
    result = runner.invoke(main, ["--json", "doctor"], env=environ)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    checks = {c["check"]: c for c in orjson.loads(result.output)["checks"]}
    assert list(checks) == CHECKS
    text = runner.invoke(main, ["doctor"], env=environ)
    assert text.exit_code == result.exit_code
    assert len(text.output.strip().splitlines()) == len(CHECKS)  # one line per check
    return result.exit_code, checks, text.output


def failed(checks: dict[str, dict[str, object]]) -> set[str]:
    return {name for name, c in checks.items() if not c["ok"]}


@pytest.fixture(scope="module")
def deployment() -> Iterator[tuple[Gateway, str]]:
    """A gateway on a real Redis (AOF, noeviction) with its SQLite ledger and writer."""
    with redis_server() as (url, _), running_gateway(url) as gw:
        seed_tools(gw)
        wait_writer_started(gw.data_dir / "ledger.db")
        yield gw, url


def wait_writer_started(ledger: Path, timeout_s: float = 30) -> None:
    """The writer records the partitions in the ledger as it starts (a loaded machine can
    take seconds to start its process)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.closing(sqlite3.connect(ledger)) as db:
            if db.execute("SELECT value FROM meta WHERE name = 'partitions'").fetchone():
                return
        assert time.monotonic() < deadline, "the ledger writer did not start"
        time.sleep(0.1)


def run_on(deployment: tuple[Gateway, str], **env: str
           ) -> tuple[int, dict[str, dict[str, object]], str]:
    gw, url = deployment
    return doctor(url, gw.data_dir, f"sqlite:///{gw.data_dir / 'ledger.db'}", **env)


def test_a_sound_deployment_passes(deployment: tuple[Gateway, str]) -> None:
    code, checks, text = run_on(deployment)
    assert code == 0 and not failed(checks), text
    assert all(line.startswith("ok ") for line in text.splitlines()), text


def test_an_evicting_policy_fails_naming_the_setting(deployment: tuple[Gateway, str]) -> None:
    client = redis.Redis.from_url(deployment[1])
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        code, checks, text = run_on(deployment)
    finally:
        client.config_set("maxmemory-policy", "noeviction")
    assert code == 1 and failed(checks) == {"maxmemory-policy"}, text
    assert "allkeys-lru" in text and "maxmemory-policy noeviction" in text


def test_aof_off_fails_naming_the_setting(deployment: tuple[Gateway, str]) -> None:
    client = redis.Redis.from_url(deployment[1])
    client.config_set("appendonly", "no")
    try:
        code, checks, text = run_on(deployment)
    finally:
        client.config_set("appendonly", "yes")
    assert code == 1 and failed(checks) == {"persistence (AOF)"}, text
    assert "appendonly yes" in text


def test_a_stalled_writer_fails_the_lag_check(deployment: tuple[Gateway, str]) -> None:
    gw, _ = deployment
    writers = writer_pids(gw.process.pid)
    assert writers
    _, key = new_agent(gw)
    for pid in writers:
        os.kill(pid, signal.SIGSTOP)
    try:
        with gw.agent(key) as client:
            assert client.post("/v1/charge", json={"tool": "web_search"}).status_code == 200
        time.sleep(1.5)  # the event must be older than the doctor's 1 s limit below
        code, checks, text = run_on(deployment, IOU_LEDGER_LAG_MAX_S="1")
    finally:
        for pid in writers:
            os.kill(pid, signal.SIGCONT)
    # A writer stopped inside its SQLite transaction also holds the ledger's write lock:
    # the doctor then finds the ledger not writable too, and says so.
    assert code == 1 and "writer lag" in failed(checks), text
    assert failed(checks) <= {"writer lag", "ledger", "store identity"}, text
    assert "ledger writer running" in text


def test_other_partitions_and_another_identity_fail(deployment: tuple[Gateway, str]) -> None:
    client = redis.Redis.from_url(deployment[1])
    partitions = client.hget(keys.META, "partitions")
    store_id = client.hget(keys.META, "store_id")
    assert partitions is not None and store_id is not None
    client.hset(keys.META, "partitions", "7")
    try:
        code, checks, text = run_on(deployment)
    finally:
        client.hset(keys.META, "partitions", partitions)
    assert code == 1 and "partitions" in failed(checks), text
    assert "Redis has 7, the ledger 16" in text
    client.hset(keys.META, "store_id", "0" * 32)
    try:
        code, checks, text = run_on(deployment)
    finally:
        client.hset(keys.META, "store_id", store_id)
    assert code == 1 and failed(checks) == {"store identity"}, text
    assert "not the one the ledger describes" in text


def test_an_unreachable_redis_fails_and_skips_the_rest(tmp_path: Path) -> None:
    code, checks, _ = doctor(f"redis://127.0.0.1:{free_port()}/0", tmp_path)
    assert code == 1 and not checks["redis reachable"]["ok"]
    assert all(checks[n]["skipped"] for n in CHECKS if n not in {"redis reachable", "ledger"})


def test_redis_started_with_allkeys_lru_and_aof_off_fails_both(tmp_path: Path) -> None:
    with redis_server("--maxmemory-policy", "allkeys-lru", "--appendonly", "no") as (url, _):
        code, checks, text = doctor(url, tmp_path)
    assert code == 1 and {"maxmemory-policy", "persistence (AOF)"} <= failed(checks), text
    assert "allkeys-lru" in text and "appendonly" in text


def test_clocks_5_s_apart_fail(deployment: tuple[Gateway, str], tmp_path: Path) -> None:
    """The doctor runs on the gateway's host; here its clock runs 5 s behind Redis's
    (libfaketime on the doctor: Redis's jemalloc does not start under it)."""
    assert shutil.which("faketime"), "faketime not found: apt-get install -y faketime"
    gw, url = deployment
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    environ.update({"IOU_REDIS_URL": url, "IOU_DATA_DIR": str(gw.data_dir)})
    result = subprocess.run(["faketime", "-f", "-5s", sys.executable, "-m", "gateway.cli.main",
                             "doctor"], env=environ, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = {line.split(":")[0]: line for line in result.stdout.splitlines()}
    assert [n for n, line in lines.items() if line.startswith("FAIL")] == ["FAIL clocks"]
    assert "Redis is 5.0 s ahead of this host" in lines["FAIL clocks"]


def test_a_cluster_missing_a_slot_fails(tmp_path: Path) -> None:
    used = {key_slot(k.encode()) for k in [keys.META, *stream_names(16)]}
    missing = next(s for s in range(100, 16384) if s not in used)
    with redis_cluster() as cluster:
        code, checks, _ = doctor(cluster.url, tmp_path)
        assert checks["cluster slots"]["ok"], checks["cluster slots"]
        run(cluster, cluster.master_of(missing), "CLUSTER", "DELSLOTS", missing)
        deadline = time.monotonic() + 10
        while True:
            code, checks, text = doctor(cluster.url, tmp_path)
            if not checks["cluster slots"]["ok"]:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
    assert code == 1 and "16383 of 16384 slots assigned" in text, text


def test_an_unreachable_and_a_read_only_ledger_fail(deployment: tuple[Gateway, str],
                                                   pg_server: Postgres) -> None:
    gw, url = deployment
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    code, checks, text = doctor(url, gw.data_dir, dead)
    assert code == 1 and not checks["ledger"]["ok"] and "cannot be read" in text, text
    # A ledger that reads but refuses writes: a database in read-only mode.
    psql = [pg_bin("psql"), pg_server.dsn, "-q", "-c"]
    subprocess.run([*psql, "DROP DATABASE IF EXISTS doctor_ro"], check=True,
                   capture_output=True)
    subprocess.run([*psql, "CREATE DATABASE doctor_ro"], check=True, capture_output=True)
    read_only = pg_server.dsn.rsplit("/", 1)[0] + "/doctor_ro"
    asyncio.run(migrate(read_only))  # the ledger's own tables, then read-only
    subprocess.run([pg_bin("psql"), read_only, "-q", "-c",
                    "ALTER DATABASE doctor_ro SET default_transaction_read_only = on"],
                   check=True, capture_output=True)
    code, checks, text = doctor(url, gw.data_dir, read_only)
    assert code == 1 and not checks["ledger"]["ok"], text
    detail = str(checks["ledger"]["detail"])
    assert "readable but not writable" in detail and "read-only" in detail, detail


async def migrate(ledger_url: str) -> None:
    store = open_store(load_settings({"IOU_LEDGER_URL": ledger_url}))
    await store.migrate()
    await store.close()


def test_the_embedded_default_passes(tmp_path: Path) -> None:
    with running_gateway(None, data_dir=tmp_path / "iou") as gw:
        code, checks, text = doctor(None, gw.data_dir)
    assert code == 0 and not failed(checks), text
