"""A real Redis Cluster on loopback ports for the tests (redis-cli --cluster create): 3
masters, and with ``replicas=1`` a replica of each (for failover tests)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from gateway.store.embedded import find_server_binary


@dataclass
class Cluster:
    ports: list[int]
    processes: list[subprocess.Popen[bytes]]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port)

    def process(self, port: int) -> subprocess.Popen[bytes]:
        return self.processes[self.ports.index(port)]

    def master_of(self, slot: int) -> int:
        """The port of the master serving ``slot``, as a live node sees it."""
        return self.nodes_of(slot)[0]

    def replica_of(self, slot: int) -> int:
        return self.nodes_of(slot)[1]

    def nodes_of(self, slot: int) -> list[int]:
        """The ports of the nodes of ``slot``: its master first, then its replicas."""
        live = next(p for p in self.ports if self.process(p).poll() is None)
        reply = run(self, live, "CLUSTER", "SLOTS")
        assert isinstance(reply, list)
        for start, end, *nodes in reply:
            if start <= slot <= end:
                return [int(node[1]) for node in nodes]
        raise AssertionError(f"slot {slot} is not served")


def _cli() -> str:
    path = shutil.which("redis-cli") or shutil.which("valkey-cli")
    assert path, "redis-cli is needed (Debian's redis-tools, installed with redis-server)"
    return path


@contextmanager
def redis_cluster(masters: int = 3, replicas: int = 0, node_timeout_ms: int = 15_000
                  ) -> Iterator[Cluster]:
    """``node_timeout_ms``: how long a master may be silent before its replica takes over."""
    found = find_server_binary()
    assert found is not None
    root = Path(tempfile.mkdtemp(prefix="iou-cluster-"))
    ports = [_cluster_port() for _ in range(masters * (1 + replicas))]
    processes = []
    try:
        for port in ports:
            node_dir = root / str(port)
            node_dir.mkdir()
            processes.append(subprocess.Popen(
                [found[0], "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir),
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--appendonly", "yes", "--maxmemory-policy", "noeviction", "--save", "",
                 "--cluster-node-timeout", str(node_timeout_ms),
                 # A replica cut off from its master still takes over (a test makes it).
                 "--cluster-replica-validity-factor", "0"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in ports:
            _wait(lambda p=port: redis.Redis(host="127.0.0.1", port=p).ping())
        subprocess.run([_cli(), "--cluster", "create",
                        *[f"127.0.0.1:{p}" for p in ports], "--cluster-replicas", str(replicas),
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        for port in ports:
            _wait(lambda p=port: _state(p) == "ok")
        for port in ports:
            _wait(lambda p=port: _replicating(p))
        yield Cluster(ports, processes)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            process.wait(20)
        shutil.rmtree(root, ignore_errors=True)


def _state(port: int) -> str:
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        state: str = client.cluster("info")["cluster_state"]
        return state
    finally:
        client.close()


def _replicating(port: int) -> bool:
    """A master, or a replica whose link to its master is up (it has the data)."""
    client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
    try:
        info = client.info("replication")
        return info["role"] == "master" or info.get("master_link_status") == "up"
    finally:
        client.close()


def run(cluster: Cluster, port: int, *args: object) -> object:
    """One command on one node (redis-py's execute_command is untyped)."""
    client = cluster.client(port)
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    import random
    import socket

    while True:
        port = random.randint(20000, 45000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


def _wait(ready: object) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if ready():  # type: ignore[operator]
                return
        except redis.RedisError:
            pass
        assert time.monotonic() < deadline, "the cluster did not come up"
        time.sleep(0.1)
