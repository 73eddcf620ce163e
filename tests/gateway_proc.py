"""A real gateway: ``iou serve`` in a subprocess on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.servers import free_port

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
WEBHOOK_SECRET = "test-webhook-secret-0123456789"
# Upstream credentials are stored encrypted with it; pass IOU_SECRET_KEY="" to run without.
SECRET_KEY = "test-secret-key-0123456789abcdef-0123456789"


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"authorization": f"Bearer {ADMIN_TOKEN}"})

    def agent(self, api_key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"authorization": f"Bearer {api_key}"})

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_gateway(redis_url: str | None, workers: int = 1, admin_token: str | None = ADMIN_TOKEN,
                    writer: bool = True, data_dir: Path | None = None, fault: str | None = None,
                    **env: str) -> Iterator[Gateway]:
    """``iou serve`` on a free port; with ``redis_url`` None it runs on the embedded default,
    and with ``admin_token`` None it generates its own under the data dir (a new one unless
    ``data_dir`` is given: a restart passes the one it ran on). ``fault`` plants one of
    tests/fault_entry.py's faults (in one worker: uvicorn runs it in the patched process)."""
    assert fault is None or workers == 1, "a planted fault reaches only an in-process worker"
    entry = ["gateway.cli.main"] if fault is None else ["tests.fault_entry", fault]
    port = free_port()
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="iou-gw-"))
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_path = data_dir / "gateway.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    environ.update({"IOU_WEBHOOK_SECRET": WEBHOOK_SECRET, "IOU_SECRET_KEY": SECRET_KEY,
                    "IOU_DATA_DIR": str(data_dir), **env})
    if admin_token is not None:
        environ["IOU_ADMIN_TOKEN"] = admin_token
    if redis_url is not None:
        environ["IOU_REDIS_URL"] = redis_url
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", *entry, "serve", "--port", str(port),
             "--workers", str(workers), *([] if writer else ["--no-writer"])],
            stdout=log, stderr=subprocess.STDOUT, env=environ)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log_path)
        yield Gateway(url, process, log_path, data_dir)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


START_S_MAX = 90  # generous: a loaded 2-core machine has taken over 30 s to start a gateway


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_S_MAX
    while True:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("gateway did not start:\n" + log_path.read_text())
        time.sleep(0.1)
