"""Real servers for the tests: redis-server on a free loopback port, and fakeredis over TCP.

Each server is started by the test process and stopped by its own pid afterwards.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from gateway.store.embedded import find_server_binary, ping


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def redis_server(*extra: str, port: int | None = None
                 ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server (or valkey-server) on 127.0.0.1:<port> (a free one unless given);
    yields (url, process)."""
    found = find_server_binary()
    assert found is not None, "no redis-server: run the README's test command, it installs one"
    binary = found[0]
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="iou-redis-") as data_dir:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", data_dir,
                "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                "--maxmemory-policy", "noeviction", *extra]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            _wait_ready(url, process)
            yield url, process
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while not ping(url, 0.3):
        assert process.poll() is None, f"redis exited with {process.returncode}"
        assert time.monotonic() < deadline, "redis did not start in 15 s"
        time.sleep(0.05)


@contextmanager
def fake_server() -> Iterator[str]:
    """fakeredis served over TCP (in a thread), so the same client code talks to it."""
    from fakeredis import TcpFakeServer

    port = free_port()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.shutdown()
        server.server_close()
