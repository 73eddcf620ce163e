"""The ledger writer of ``iou serve`` is supervised: killed, it comes back by itself."""

from __future__ import annotations

import os
import re
import signal

import httpx

from gateway.ledger.supervisor import BACKOFF_MAX_S, backoff_s, exit_status
from tests.gateway_proc import Gateway, running_gateway
from tests.http_helpers import new_agent, seed_tools
from tests.proc_helpers import wait_for, wait_gone, writer_pids

RESTART_BOUND_S = 20  # a restarted writer imports, connects and catches up well within this


def restarts_metric(gw: Gateway) -> int | None:
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    found = re.search(r"^iou_ledger_writer_restarts_total (\S+)$", text, re.M)
    return None if found is None else int(float(found.group(1)))


def ledger_has(gw: Gateway, agent: str, charge_id: str) -> bool:
    with gw.admin() as admin:
        entries = admin.get(f"/v1/agents/{agent}/ledger", params={"kind": "charge"}).json()
    return any(e["entry_id"] == charge_id for e in entries["entries"])


def _wait_in_ledger(gw: Gateway, agent: str, charge_id: str) -> None:
    wait_for("the charge in the ledger", lambda: ledger_has(gw, agent, charge_id),
             RESTART_BOUND_S, 0.2)


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_s(n) for n in (1, 2, 3)] == [0.25, 0.5, 1.0]
    assert backoff_s(100) == BACKOFF_MAX_S
    assert exit_status(-signal.SIGKILL) == "signal SIGKILL"
    assert exit_status(3) == "exit status 3"


def test_a_writer_killed_with_sigkill_is_restarted_and_counted() -> None:
    with running_gateway(None) as gw:
        seed_tools(gw)
        agent, key = new_agent(gw)
        assert restarts_metric(gw) == 0
        for attempt in range(2):  # twice: the counter counts each restart
            (pid,) = wait_for("one writer", lambda: writer_pids(gw.process.pid), 10)
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid)
            with gw.agent(key) as client:
                charged = client.post("/v1/charge", json={"tool": "web_search"})
            assert charged.status_code == 200, charged.text
            charge_id = charged.json()["charge_id"]
            _wait_in_ledger(gw, agent, charge_id)
            assert restarts_metric(gw) == attempt + 1
            assert pid not in writer_pids(gw.process.pid)
        assert httpx.get(gw.url + "/readyz", timeout=10).status_code == 200
        log = gw.log_text()
        assert re.search(rf"ledger writer \(pid {pid}\) exited with signal SIGKILL; restart 2",
                         log), log
