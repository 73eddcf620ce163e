"""`iou top --once` in a real terminal (a pty) against a real gateway: the agent spending
fastest during the sample is first, with its spend per minute, balance and today's total;
refusals by code appear in the header; and no agent is listed twice."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import threading
import time

from tests.gateway_proc import ADMIN_TOKEN, Gateway
from tests.http_helpers import new_agent


def run_in_terminal(args: list[str], env: dict[str, str], timeout_s: float = 60
                    ) -> tuple[int, str]:
    """Run ``args`` with a pty as its terminal; (exit code, what it printed)."""
    master, slave = pty.openpty()
    process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env,
                               close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the terminal closed: the process is done
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        code = process.wait(max(deadline - time.monotonic(), 1))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return code, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())


def spend(gw: Gateway, key: str, tool: str, pause_s: float, stop: threading.Event) -> None:
    with gw.agent(key) as client:
        while not stop.is_set():
            client.post("/v1/charge", json={"tool": tool})
            time.sleep(pause_s)


def test_top_once_ranks_by_spend_per_minute(gateway: Gateway) -> None:
    fast, fast_key = new_agent(gateway, grant="100", prefix="top-fast")
    slow, slow_key = new_agent(gateway, grant="100", prefix="top-slow")
    idle, idle_key = new_agent(gateway, grant="100", prefix="top-idle")
    with gateway.agent(idle_key) as client:  # spent earlier today, nothing during the sample
        for _ in range(3):
            assert client.post("/v1/charge", json={"tool": "buy"}).status_code == 200
        assert client.post("/v1/charge", json={"tool": "nope"}).status_code == 404
    _, poor_key = new_agent(gateway, grant="0.01", prefix="top-poor")
    stop = threading.Event()
    threads = [threading.Thread(target=spend, args=(gateway, fast_key, "web_browse", 0.02, stop)),
               threading.Thread(target=spend, args=(gateway, slow_key, "email_send", 0.3, stop)),
               threading.Thread(target=spend, args=(gateway, poor_key, "web_search", 0.2, stop))]
    for thread in threads:
        thread.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env.update({"IOU_URL": gateway.url, "IOU_ADMIN_TOKEN": ADMIN_TOKEN, "COLUMNS": "160",
                "TERM": "xterm"})
    try:
        code, out = run_in_terminal([sys.executable, "-m", "gateway.cli.main", "top", "--once",
                                     "--interval", "2", "--limit", "50"], env)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert code == 0, out
    assert "SPEND/MIN" in out and "BALANCE" in out
    names = [line.split()[0] for line in out.splitlines() if line.startswith("top-")]
    assert len(names) == len(set(names)), out
    assert names.index(fast) < names.index(slow) < names.index(idle), out
    fast_line = next(line for line in out.splitlines() if line.startswith(fast))
    spend_per_min = float(fast_line.split()[1])
    assert spend_per_min > 0.12 * 60 / 2, fast_line  # at least one web_browse a second
    idle_line = next(line for line in out.splitlines() if line.startswith(idle))
    assert idle_line.split()[1:3] == ["0", "4.5"], idle_line  # none now, 3 x 1.5 today
    assert "balance_insufficient" in out, out  # the poor agent's refusals, all agents'
