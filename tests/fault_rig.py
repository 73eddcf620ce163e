"""The fault matrix's rig: a real `iou serve` on a Redis and a ledger the test controls, and
a client that keeps its own record of what it sent and what it was answered.

Every process is started here and killed by its pid; all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gateway.ledger.store import LedgerStore
from gateway.store.embedded import find_server_binary, ping
from tests.gateway_proc import ADMIN_TOKEN, SECRET_KEY, WEBHOOK_SECRET
from tests.ledger_helpers import store_for
from tests.proc_helpers import wait_for, wait_gone, writer_pids
from tests.servers import free_port

BATCH_ITEMS = 4
OP_DEADLINE_S = 60.0  # a call is retried (same key) until answered or this long
RETRY_WAIT_S = 0.2
PRICE = "0.05"


class RedisProc:
    """A redis-server on a fixed port and data dir: killed and restarted on the same AOF."""

    def __init__(self, root: Path, *extra: str) -> None:
        found = find_server_binary()
        assert found is not None
        self.dir = root / "redis"
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.args = [found[0], "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
                     str(self.dir), "--save", "", "--appendonly", "yes", "--appendfsync",
                     "always", "--maxmemory-policy", "noeviction", *extra]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_for("redis up", lambda: ping(self.url, 0.3), 20)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def wipe(self) -> None:
        """Kill it, delete its data (the AOF) and start it empty."""
        self.kill9()
        shutil.rmtree(self.dir)
        self.dir.mkdir()
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)


class Serve:
    """`iou serve` on a fixed port, data dir and environment, restartable after kill -9."""

    def __init__(self, root: Path, redis_url: str | None, ledger_url: str | None,
                 **env: str) -> None:
        self.data_dir = root / "data"
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "gateway.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
        environ.update({"IOU_ADMIN_TOKEN": ADMIN_TOKEN, "IOU_WEBHOOK_SECRET": WEBHOOK_SECRET,
                        "IOU_SECRET_KEY": SECRET_KEY,
                        "IOU_DATA_DIR": str(self.data_dir), **env})
        if redis_url is not None:
            environ["IOU_REDIS_URL"] = redis_url
        if ledger_url is not None:
            environ["IOU_LEDGER_URL"] = ledger_url
        self.env = environ
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli.main", "serve", "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=self.env)
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 60) -> None:
        wait_for("readyz 200", lambda: self.readyz() == 200, timeout_s, 0.1)

    def readyz(self) -> int:
        try:
            return httpx.get(self.url + "/readyz", timeout=5).status_code
        except httpx.HTTPError:
            return 0

    def kill9(self) -> None:
        """SIGKILL the gateway process; its writer child notices and stops by itself."""
        assert self.process is not None
        writers = writer_pids(self.process.pid)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        for pid in writers:
            wait_gone(pid, 15)

    def kill9_writer(self) -> int:
        assert self.process is not None
        pid = wait_for("one writer", lambda: writer_pids(self.process.pid)  # type: ignore[union-attr]
                       , 30)[0]
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid)
        return pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def iou(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli.main", *args], env=self.env,
                              capture_output=True, text=True, timeout=180)

    def metric(self, name: str) -> float | None:
        text = httpx.get(self.url + "/metrics", timeout=10).text
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        return None if found is None else float(found.group(1))

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"authorization": f"Bearer {ADMIN_TOKEN}"})


@dataclass
class Op:
    """One call the client made (possibly several attempts with the same key)."""

    key: str
    agent: str
    batch: bool
    answers: list[tuple[int, Any]] = field(default_factory=list)  # (status, body or error)

    @property
    def acknowledged(self) -> dict[str, Any] | None:
        """The first complete answer (a batch's with every item settled)."""
        for status, body in self.answers:
            if status == 200 and not _items_to_retry(self, body):
                return body  # type: ignore[no-any-return]
        return None

    def charge_ids(self) -> list[str]:
        """The charge ids of the first successful answer."""
        body = self.acknowledged
        if body is None:
            return []
        if not self.batch:
            return [body["charge_id"]]
        return [r["charge_id"] for r in body["results"] if "charge_id" in r]


@dataclass
class Client:
    """Drives keyed charges and keyed batches, retrying each with its key until answered."""

    url: str
    keys: dict[str, str]  # agent -> api key
    singles: list[str]  # agents charged one call at a time
    batchers: list[str]  # agents charged in batches
    ops: list[Op] = field(default_factory=list)
    unexpected: list[tuple[int, str]] = field(default_factory=list)
    # A threading.Event: faults run in threads and may stop the client from there.
    _stop: threading.Event = field(default_factory=threading.Event)

    async def run(self, loops: int = 6, seconds_max: float = 120) -> None:
        limits = httpx.Limits(max_connections=loops * 2)
        async with httpx.AsyncClient(base_url=self.url, timeout=10, limits=limits) as http:
            deadline = time.monotonic() + seconds_max
            await asyncio.gather(*(self._loop(http, i, deadline) for i in range(loops)))

    def stop(self) -> None:
        self._stop.set()

    async def _loop(self, http: httpx.AsyncClient, index: int, deadline: float) -> None:
        n = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            n += 1
            batch = index % 3 == 2  # a third of the loops send batches
            pool = self.batchers if batch else self.singles
            op = Op(uuid.uuid4().hex, pool[(index + n) % len(pool)], batch)
            self.ops.append(op)
            await self._complete(http, op)

    async def _complete(self, http: httpx.AsyncClient, op: Op) -> None:
        path, body = ("/v1/charges", {"charges": [{"tool": "web_search"}] * BATCH_ITEMS}) \
            if op.batch else ("/v1/charge", {"tool": "web_search"})
        headers = {"authorization": f"Bearer {self.keys[op.agent]}", "idempotency-key": op.key}
        give_up = time.monotonic() + OP_DEADLINE_S
        while time.monotonic() < give_up:
            try:
                response = await http.post(path, json=body, headers=headers)
            except httpx.HTTPError as exc:
                op.answers.append((0, type(exc).__name__))
                await asyncio.sleep(RETRY_WAIT_S)
                continue
            answer = _json(response)
            op.answers.append((response.status_code, answer))
            if response.status_code == 200 and not _items_to_retry(op, answer):
                return
            if response.status_code not in (409, 500, 503):
                self.unexpected.append((response.status_code, response.text[:300]))
                return
            await asyncio.sleep(RETRY_WAIT_S)  # outcome unknown: the same key again

    @property
    def acknowledged(self) -> int:
        return sum(1 for op in self.ops if op.acknowledged is not None)


RETRIED_ITEM_ERRORS = ("unavailable", "internal")


def _items_to_retry(op: Op, answer: Any) -> bool:
    """A keyed batch answered with items that failed for want of Redis (or inside the
    gateway) is sent again with its key: its charged items replay, the others run."""
    return op.batch and any(r.get("error") in RETRIED_ITEM_ERRORS for r in answer["results"])


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:300]


def provision(serve: Serve, singles: int = 4, batchers: int = 2) -> Client:
    with serve.admin() as admin:
        assert admin.put("/v1/tools/web_search",
                         json={"price": PRICE, "category": "tool"}).status_code == 200
        keys: dict[str, str] = {}
        names = [f"s{i}" for i in range(singles)] + [f"b{i}" for i in range(batchers)]
        for name in names:
            created = admin.post("/v1/agents", json={"name": name, "grant": "100000"})
            assert created.status_code == 201, created.text
            keys[name] = created.json()["api_key"]
    return Client(serve.url, keys, names[:singles], names[singles:])


async def ledger_charges(ledger_url: str, agents: list[str]) -> list[tuple[str, str, str | None]]:
    """(agent, entry_id, idempotency_key) of every charge row of these agents."""
    store: LedgerStore = store_for(ledger_url)
    try:
        rows = []
        for agent in agents:
            for e in await store.entries(agent, 1_000_000, kind="charge"):
                rows.append((agent, e.entry_id, e.idempotency_key))
        return rows
    finally:
        await store.close()


def check_charged_once(client: Client, rows: list[tuple[str, str, str | None]]) -> None:
    """From the client's own record: every acknowledged charge is in the ledger exactly
    once, every call was answered, and no key (single or batch) was charged twice."""
    assert not client.unexpected, client.unexpected[:5]
    internal = [a for op in client.ops for s, a in op.answers if s == 500]
    assert not internal, internal[:3]  # a fault is a 503 (retry later), never a 500
    unanswered = [op for op in client.ops if op.acknowledged is None]
    assert not unanswered, [(op.key, op.answers[-3:]) for op in unanswered[:5]]
    in_ledger = Counter(entry_id for _, entry_id, _ in rows)
    assert max(in_ledger.values(), default=1) == 1
    for op in client.ops:
        ids = op.charge_ids()
        assert len(ids) == (BATCH_ITEMS if op.batch else 1), op.answers
        missing = [i for i in ids if in_ledger[i] != 1]
        assert not missing, (op.key, missing)
        replays = [a for s, a in op.answers if s == 200 and not _items_to_retry(op, a)]
        assert all(r == replays[0] for r in replays), op.answers  # a retry replays
        if op.batch:  # an item charged in an incomplete answer is the same charge later
            partial = {r["charge_id"] for s, a in op.answers if s == 200
                       for r in a["results"] if "charge_id" in r}
            assert partial == set(ids), op.answers
    # Nothing charged that the client was not answered for: per agent, the ledger holds
    # exactly the acknowledged charges (a retried key charged twice would add rows).
    acked: dict[str, set[str]] = defaultdict(set)
    for op in client.ops:
        acked[op.agent] |= set(op.charge_ids())
    by_agent: dict[str, set[str]] = defaultdict(set)
    for agent, entry_id, _ in rows:
        by_agent[agent].add(entry_id)
    for agent in client.singles + client.batchers:
        assert by_agent[agent] == acked[agent], (agent, len(by_agent[agent]), len(acked[agent]))
    # Singles carry the client's key, batch items one derived from the batch's: one row each.
    per_key = Counter(key for _, _, key in rows if key)
    assert max(per_key.values(), default=1) == 1


def reconcile_clean(serve: Serve) -> None:
    done = serve.iou("reconcile")
    assert done.returncode == 0, done.stdout + done.stderr
