"""Started before its Redis (a compose file's order, a Redis restarting): the one-shot
commands say so in one line, and `iou serve`'s workers and ledger writer wait for it instead
of dying with a traceback; once Redis is up, calls are charged and reach the ledger."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.gateway_proc import ADMIN_TOKEN, SECRET_KEY, WEBHOOK_SECRET
from tests.servers import free_port, redis_server


def _environ(data_dir: Path, redis_port: int) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    environ.update({"IOU_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                    "IOU_DATA_DIR": str(data_dir), "IOU_ADMIN_TOKEN": ADMIN_TOKEN,
                    "IOU_WEBHOOK_SECRET": WEBHOOK_SECRET, "IOU_SECRET_KEY": SECRET_KEY})
    return environ


@pytest.mark.parametrize("command", [["reconcile"], ["recover"], ["--json", "reconcile"]])
def test_a_one_shot_command_says_redis_is_unreachable(tmp_path: Path,
                                                       command: list[str]) -> None:
    redis_port = free_port()  # nothing listens there
    done = subprocess.run([sys.executable, "-m", "gateway.cli.main", *command],
                          env=_environ(tmp_path, redis_port), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    # The connection's own warning (with the system's reason) may come first; the last line
    # is the command's error.
    lines = done.stderr.strip().splitlines()
    assert len(lines) <= 2, done.stderr
    if "--json" in command:
        error = orjson.loads(lines[-1])
        assert error["error"] == "unavailable"
        assert f"127.0.0.1:{redis_port}" in error["message"]
    else:
        assert lines[-1].startswith("error: unavailable: Redis at ")
        assert f"127.0.0.1:{redis_port}" in lines[-1] and "IOU_REDIS_URL" in lines[-1]


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None


def _until(predicate: object, what: str, timeout_s: float = 40) -> None:
    deadline = time.monotonic() + timeout_s
    while not callable(predicate) or not predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s"
        time.sleep(0.2)


def test_serve_waits_for_redis_and_then_charges(tmp_path: Path) -> None:
    redis_port, http_port = free_port(), free_port()
    log_path = tmp_path / "gateway.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli.main", "serve", "--port", str(http_port)],
            stdout=log, stderr=subprocess.STDOUT, env=_environ(tmp_path, redis_port))
    url = f"http://127.0.0.1:{http_port}"
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        # Without its Redis the worker waits (not ready, no traceback, no exit) and says so.
        _until(lambda: "waiting for Redis at 127.0.0.1:" in log_path.read_text(),
               "the gateway says it waits for Redis")
        time.sleep(2)  # the writer has met the missing Redis too
        assert process.poll() is None, log_path.read_text()
        assert _get(url + "/readyz") is None or httpx.get(url + "/readyz").status_code == 503
        with redis_server(port=redis_port):
            _until(lambda: (r := _get(url + "/readyz")) is not None and r.status_code == 200,
                   "ready once Redis is up")
            priced = httpx.put(url + "/v1/tools/search", headers=admin, timeout=10,
                               json={"price": "1.5", "category": "search"})
            assert priced.status_code == 200, priced.text
            made = httpx.post(url + "/v1/agents", json={"name": "late", "grant": "5"},
                              headers=admin, timeout=10)
            assert made.status_code == 201, made.text
            key = made.json()["api_key"]
            paid = httpx.post(url + "/v1/charge", json={"tool": "search"},
                              headers={"authorization": f"Bearer {key}"}, timeout=10)
            assert paid.status_code == 200, paid.text

            def in_ledger() -> bool:
                rows = httpx.get(url + "/v1/agents/late/ledger", headers=admin,
                                 timeout=5).json()
                return any(e.get("kind") == "charge" for e in rows.get("entries", []))

            _until(in_ledger, "the charge reaches the ledger (the writer waited for Redis)")
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log_text = log_path.read_text(errors="replace")
    assert "Traceback" not in log_text, log_text
    assert "restart 1" not in log_text, log_text  # the writer waited instead of dying


def test_serve_waiting_for_redis_stops_on_sigterm(tmp_path: Path) -> None:
    """A start-up waiting for Redis still obeys SIGTERM (docker stop, Ctrl-C): the worker,
    the writer and `iou serve` exit, instead of waiting for a Redis that never comes."""
    redis_port, http_port = free_port(), free_port()
    log_path = tmp_path / "gateway.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli.main", "serve", "--port", str(http_port)],
            stdout=log, stderr=subprocess.STDOUT, env=_environ(tmp_path, redis_port))
    try:
        _until(lambda: "waiting for Redis at 127.0.0.1:" in log_path.read_text(),
               "the gateway says it waits for Redis")
        writer = _child_pids(process.pid)
        process.terminate()
        assert process.wait(20) is not None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    _until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in writer),
           "its ledger writer is gone too", 20)


def _child_pids(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []



def test_a_signal_taken_before_the_wait_began_stops_it(tmp_path: Path) -> None:
    """A SIGTERM that uvicorn's handler took while the app was still being imported (before
    the start-up began to wait for Redis) stops the wait: uvicorn only marks its server to
    exit and runs the start-up anyway, so a wait that listened for new signals only went on
    for ever (CI: `iou serve` outlived SIGTERM by more than 20 s)."""
    import asyncio
    import signal

    import uvicorn

    from gateway.config import load_settings
    from gateway.runtime import StartAbandoned, open_runtime

    server = uvicorn.Server(uvicorn.Config(app="gateway.cli.main:serve_app"))
    before = signal.signal(signal.SIGTERM, server.handle_exit)
    try:
        signal.raise_signal(signal.SIGTERM)  # taken by uvicorn, as during the app's import
        assert server.should_exit
        settings = load_settings(_environ(tmp_path, free_port()))
        with pytest.raises(StartAbandoned):
            asyncio.run(asyncio.wait_for(open_runtime(settings, wait=True), 15))
    finally:
        signal.signal(signal.SIGTERM, before)
