"""The embedded default's Redis killed under a running ``iou serve`` (kill -9, the OOM killer)
is started again by ``iou serve`` on its AOF: paid calls answer 503 meanwhile and then work
again, with every acknowledged charge kept. Before, the gateway answered 503 until someone
restarted ``iou serve``."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.gateway_proc import Gateway, running_gateway
from tests.http_helpers import new_agent, seed_tools

BACK_S_MAX = 30


def _embedded_pid(gateway: Gateway) -> int:
    """The redis-server this gateway's ``iou serve`` started (its child, on the data dir's
    config)."""
    children = subprocess.run(["pgrep", "-P", str(gateway.process.pid)], capture_output=True,
                              text=True).stdout.split()
    # redis-server rewrites its title to "redis-server unixsocket:<data_dir>/redis.sock".
    where = gateway.data_dir.name.encode()
    for pid in children:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"redis-server" in cmdline and where in cmdline:
            return int(pid)
    raise AssertionError(f"no embedded server among {children}")


def test_a_killed_embedded_redis_is_started_again() -> None:
    # No writer here: a writer restarted meanwhile may start the server itself (as its own
    # child), which would hide whether iou serve does.
    with running_gateway(None, writer=False) as gateway:
        seed_tools(gateway)
        _, key = new_agent(gateway, grant="10")
        with gateway.agent(key) as agent:
            assert agent.post("/v1/charge", json={"tool": "web_search"}).status_code == 200
            first = _embedded_pid(gateway)
            os.kill(first, signal.SIGKILL)
            deadline = time.monotonic() + BACK_S_MAX
            statuses = []
            while True:
                try:
                    status = agent.post("/v1/charge", json={"tool": "web_search"}).status_code
                except httpx.HTTPError:
                    status = 0
                statuses.append(status)
                if status == 200:
                    break
                assert status in (0, 503), statuses
                assert time.monotonic() < deadline, f"still refused: {statuses[-5:]}"
                time.sleep(0.2)
            assert agent.get("/v1/balance").json()["balance"] == "9.9"
        assert _embedded_pid(gateway) != first
        assert gateway.process.poll() is None
