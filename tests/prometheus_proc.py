"""A real Prometheus (Debian's `prometheus` package) on a free loopback port, scraping a
test's gateway with the project's alerting rules, with short intervals."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = sorted((ROOT / "deploy" / "alerts").glob("*.yml"))
START_TIMEOUT_S = 30


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def query(self, expr: str) -> dict[str, Any]:
        """The /api/v1/query answer (``status`` "success" or "error") for ``expr`` now."""
        answer: dict[str, Any] = httpx.get(self.url + "/api/v1/query", params={"query": expr},
                                           timeout=10).json()
        return answer

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts (/api/v1/alerts)."""
        body = httpx.get(self.url + "/api/v1/alerts", timeout=10).json()
        alerts: list[dict[str, Any]] = body["data"]["alerts"]
        return alerts

    def targets_up(self) -> bool:
        body = httpx.get(self.url + "/api/v1/targets", timeout=10).json()
        active = body["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    assert path, "prometheus not found: apt-get install -y prometheus (scripts/test.sh does)"
    return path


@contextmanager
def running_prometheus(target: str, interval_s: int = 1) -> Iterator[Prometheus]:
    """Prometheus scraping ``target`` (host:port) every ``interval_s`` and evaluating the
    project's rule files as often; stopped by its pid afterwards."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="iou-prom-") as folder:
        config = {"global": {"scrape_interval": f"{interval_s}s",
                             "evaluation_interval": f"{interval_s}s"},
                  "rule_files": [str(p) for p in RULE_FILES],
                  "scrape_configs": [{"job_name": "iou-gateway", "metrics_path": "/metrics",
                                      "static_configs": [{"targets": [target]}]}]}
        config_path = Path(folder) / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        log_path = Path(folder) / "prometheus.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [prometheus_binary(), f"--config.file={config_path}",
                 f"--storage.tsdb.path={Path(folder) / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log_path)
        try:
            _wait_ready(prometheus)
            yield prometheus
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(prometheus: Prometheus) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(prometheus.url + "/-/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if prometheus.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("prometheus did not start:\n" + prometheus.log_path.read_text())
        time.sleep(0.1)
