"""A real PostgreSQL for the tests: Debian's postgresql-15 binaries, a fresh cluster in a
temp dir on a free loopback port, run as the postgres user when the tests run as root."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    assert path, f"{name} not found: install postgresql (the test command does)"
    return path


def _as_postgres(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    return ["runuser", "-u", "postgres", "--", *args]


@dataclass
class Postgres:
    dsn: str
    data_dir: Path
    port: int

    def stop(self) -> None:
        subprocess.run(_as_postgres([pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast",
                                     "-w", "stop"]), check=True, capture_output=True)

    def start(self) -> None:
        log = self.data_dir / "server.log"
        subprocess.run(_as_postgres([
            pg_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(log), "-w", "-t", "60",
            "-o", f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 "
                  "-c fsync=on -c max_connections=50", "start"]), check=True,
            capture_output=True)
        deadline = time.monotonic() + 30
        while subprocess.run([pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    root = Path(tempfile.mkdtemp(prefix="iou-pg-"))
    data_dir = root / "data"
    data_dir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data_dir, "postgres")
    subprocess.run(_as_postgres([pg_bin("initdb"), "-D", str(data_dir), "-A", "trust", "-U",
                                 "postgres", "--no-sync"]), check=True, capture_output=True)
    port = free_port()
    server = Postgres(f"postgresql://postgres@127.0.0.1:{port}/postgres", data_dir, port)
    server.start()
    try:
        yield server
    finally:
        with suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def reset_database(dsn: str) -> None:
    """Drop every table of the test database (between tests sharing one server)."""
    subprocess.run([pg_bin("psql"), dsn, "-q", "-c",
                    "DROP SCHEMA public CASCADE; CREATE SCHEMA public;"],
                   check=True, capture_output=True)
