"""The servers the benchmarks start for themselves: a free loopback port, redis-server, and
a throwaway PostgreSQL cluster (Debian's binaries).

Their own small copies, so that loadtests/ (which ships in the image) imports nothing from
tests/. Each server is started here and stopped by its own pid afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from gateway.store.embedded import find_server_binary, ping

READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def redis_server(*extra: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server (or valkey-server) on 127.0.0.1:<free port>; yields (url, process)."""
    found = find_server_binary()
    if found is None:
        raise SystemExit("no redis-server or valkey-server: install one (apt-get install "
                         "redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="iou-bench-redis-") as data_dir:
        args = [found[0], "--port", str(port), "--bind", "127.0.0.1", "--dir", data_dir,
                "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                "--maxmemory-policy", "noeviction", *extra]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not ping(url, 0.3):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis did not start (exit {process.returncode})")
                time.sleep(0.05)
            yield url, process
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    path = found[-1] if found else shutil.which(name)
    if not path:
        raise SystemExit(f"{name} not found: install postgresql")
    return path


def _as_postgres(args: list[str]) -> list[str]:
    # initdb and the server refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@dataclass(frozen=True)
class Postgres:
    dsn: str
    data_dir: Path
    port: int


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster in a temp dir on a free loopback port."""
    root = Path(tempfile.mkdtemp(prefix="iou-bench-pg-"))
    data_dir = root / "data"
    data_dir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data_dir, "postgres")
    subprocess.run(_as_postgres([_pg_bin("initdb"), "-D", str(data_dir), "-A", "trust", "-U",
                                 "postgres", "--no-sync"]), check=True, capture_output=True)
    port = free_port()
    server = Postgres(f"postgresql://postgres@127.0.0.1:{port}/postgres", data_dir, port)
    subprocess.run(_as_postgres([
        _pg_bin("pg_ctl"), "-D", str(data_dir), "-l", str(data_dir / "server.log"), "-w",
        "-t", "60", "-o", f"-p {port} -k {data_dir} -c listen_addresses=127.0.0.1 -c fsync=on",
        "start"]), check=True, capture_output=True)
    try:
        yield server
    finally:
        with suppress(subprocess.CalledProcessError):
            subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(data_dir), "-m", "fast",
                                         "-w", "stop"]), check=True, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def reset_database(dsn: str) -> None:
    """Drop every table of the database."""
    subprocess.run([_pg_bin("psql"), dsn, "-q", "-c",
                    "DROP SCHEMA public CASCADE; CREATE SCHEMA public;"],
                   check=True, capture_output=True)
