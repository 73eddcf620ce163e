"""`iou serve` started while its PostgreSQL ledger is down (a compose file's order, a
database restarting): the workers serve the contract's 503 instead of dying in their
start-up with a traceback, and once PostgreSQL is up the ledger is migrated, the store's
identity settled, and calls are charged and reach the ledger."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.gateway_proc import ADMIN_TOKEN, SECRET_KEY, WEBHOOK_SECRET
from tests.pg import postgres_server
from tests.servers import free_port

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def _environ(data_dir: Path, ledger_url: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    environ.update({"IOU_LEDGER_URL": ledger_url, "IOU_DATA_DIR": str(data_dir),
                    "IOU_ADMIN_TOKEN": ADMIN_TOKEN, "IOU_WEBHOOK_SECRET": WEBHOOK_SECRET,
                    "IOU_SECRET_KEY": SECRET_KEY})
    return environ


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, headers=ADMIN, timeout=2)
    except httpx.HTTPError:
        return None


def _until(predicate: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s"
        time.sleep(0.2)


def _answers(url: str, status: int) -> bool:
    response = _get(url)
    return response is not None and response.status_code == status


def test_serve_with_its_postgres_down_answers_503_then_serves(tmp_path: Path) -> None:
    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}"
    log_path = tmp_path / "gateway.log"
    with postgres_server() as pg:
        pg.stop()
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli.main", "serve", "--port", str(http_port)],
                stdout=log, stderr=subprocess.STDOUT, env=_environ(tmp_path / "iou", pg.dsn))
        try:
            # Without its ledger the worker serves, and says it cannot vouch for the store.
            _until(lambda: process.poll() is not None or _get(url + "/healthz") is not None,
                   "the gateway answers")
            assert process.poll() is None, log_path.read_text()
            waiting = _get(url + "/v1/agents")
            assert waiting is not None and waiting.status_code == 503, waiting
            assert waiting.json()["error"] == "unavailable"
            assert "127.0.0.1" not in waiting.json()["message"]
            assert process.poll() is None, log_path.read_text()
            pg.start()
            _until(lambda: _answers(url + "/v1/agents", 200), "serving once PostgreSQL is up")
            priced = httpx.put(url + "/v1/tools/search", headers=ADMIN, timeout=10,
                               json={"price": "1.5", "category": "search"})
            assert priced.status_code == 200, priced.text
            made = httpx.post(url + "/v1/agents", json={"name": "late", "grant": "5"},
                              headers=ADMIN, timeout=10)
            assert made.status_code == 201, made.text
            paid = httpx.post(url + "/v1/charge", json={"tool": "search"}, timeout=10,
                              headers={"authorization": f"Bearer {made.json()['api_key']}"})
            assert paid.status_code == 200, paid.text

            def in_ledger() -> bool:
                rows = _get(url + "/v1/agents/late/ledger?kind=charge")
                return rows is not None and rows.status_code == 200 and any(
                    e["kind"] == "charge" for e in rows.json()["entries"])

            _until(in_ledger, "the charge reaches the PostgreSQL ledger")
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    log_text = log_path.read_text(errors="replace")
    assert "Traceback" not in log_text, log_text
