"""The ledger's URL at the edges: ``iou verify`` with the ledger out of reach prints one line
and exits 1 (it was a traceback); a malformed IOU_LEDGER_URL stops start-up with one line
naming the variable; and the ledger's password is never printed (``iou serve``'s start-up
line and ``iou doctor`` showed the PostgreSQL URL whole)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_settings
from tests.servers import free_port

PASSWORD = "hunter2-ledger-secret"


def _iou(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", *args],
                          capture_output=True, text=True, env=environ, timeout=120)


def test_verify_with_the_ledger_out_of_reach_is_one_line() -> None:
    url = f"postgresql://iou:{PASSWORD}@127.0.0.1:{free_port()}/iou"
    result = _iou("verify", IOU_LEDGER_URL=url, IOU_REDIS_URL=f"redis://127.0.0.1:{free_port()}")
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    assert "unavailable" in result.stderr
    assert PASSWORD not in result.stderr + result.stdout


@pytest.mark.parametrize("url", ["postgresql://h:port/db", "postgresql://[::1/db",
                                 "postgres://h:99999/db", "sqlite:///"])
def test_a_malformed_ledger_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="IOU_LEDGER_URL"):
        load_settings({"IOU_LEDGER_URL": url})


@pytest.mark.parametrize("url", ["postgresql://u:p@h:5432/db", "postgres://h/db",
                                 "sqlite:////tmp/x/ledger.db", "postgresql://[::1]:5432/db"])
def test_a_well_formed_ledger_url_is_accepted(url: str) -> None:
    assert load_settings({"IOU_LEDGER_URL": url}).ledger_url == url


def test_doctor_never_prints_the_ledger_password() -> None:
    url = f"postgresql://iou:{PASSWORD}@127.0.0.1:{free_port()}/iou"
    result = _iou("doctor", IOU_LEDGER_URL=url, IOU_REDIS_URL=f"redis://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "ledger" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr


def test_serve_never_logs_the_ledger_password(tmp_path: os.PathLike[str]) -> None:
    url = f"postgresql://iou:{PASSWORD}@127.0.0.1:{free_port()}/iou"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    environ.update({"IOU_DATA_DIR": str(tmp_path), "IOU_LEDGER_URL": url})
    log_path = Path(tmp_path) / "serve.log"
    # The ledger is out of reach: the worker says so and waits for it (answering 503).
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "serve",
                                    "--port", str(free_port())], stdout=log,
                                   stderr=subprocess.STDOUT, env=environ)
    try:
        deadline = time.monotonic() + 120
        while "answering 503 until it can" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    output = log_path.read_text()
    assert "IOU gateway on" in output, output
    assert "iou:***@127.0.0.1" in output
    assert PASSWORD not in output
