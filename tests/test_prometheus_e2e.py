"""A real Prometheus (Debian's package) scraping a real gateway with the project's rule
files: the ledger-lag alert goes pending when the ledger writer is stopped (SIGSTOP) and
clears when it resumes, and every dashboard panel's query runs, the core ones with data."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from tests.gateway_proc import Gateway, running_gateway
from tests.http_helpers import new_agent, seed_tools
from tests.proc_helpers import writer_pids
from tests.prometheus_proc import Prometheus, running_prometheus
from tests.servers import redis_server
from tests.test_dashboards import panel_queries

pytestmark = pytest.mark.slow
T = TypeVar("T")
# Panels that must show data after some traffic (the others may be empty: no webhook was
# dropped, no proxied call was made).
CORE_PANELS = {"Charges per second by outcome", "Charge latency p50 / p99",
               "Ledger lag", "Ledger pending entries", "Ledger writer throughput",
               "Webhook backlog", "Redis memory", "503 answers per second (fails closed)",
               "Refusals per second by code", "Failed authentications per second"}
LAG_ALERT_S = 30  # the threshold of IouLedgerLag in deploy/alerts/iou.rules.yml


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Gateway, Prometheus]]:
    with redis_server() as (url, _), running_gateway(url) as gw:
        seed_tools(gw)
        target = gw.url.removeprefix("http://")
        with running_prometheus(target) as prometheus:
            yield gw, prometheus


def poll(what: str, probe: Callable[[], T | None], timeout_s: float) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def traffic(gw: Gateway, seconds: float) -> str:
    """Charges (accepted and refused), an error answer and a failed authentication, spread
    over ``seconds`` so that rate() sees them in several scrapes; returns the agent's name."""
    name, key = new_agent(gw, grant="1")
    deadline = time.monotonic() + seconds
    with gw.agent(key) as client, gw.agent("iou_not-a-real-key-000000000000000000") as bad:
        while time.monotonic() < deadline:
            client.post("/v1/charge", json={"tool": "web_search"})  # 402 once spent
            client.post("/v1/charge", json={"tool": "buy"})  # above the balance: 402
            bad.get("/v1/balance")
            time.sleep(0.2)
    return name


def test_every_panel_query_runs_and_core_panels_have_data(
        stack: tuple[Gateway, Prometheus]) -> None:
    gw, prometheus = stack
    poll("the gateway target up", prometheus.targets_up, 30)
    agent = traffic(gw, 4)
    time.sleep(2.5)  # two more scrapes after the last request

    def results() -> dict[str, list[Any]] | None:
        by_panel: dict[str, list[Any]] = {}
        for title, expr in panel_queries():
            answer = prometheus.query(expr)
            assert answer["status"] == "success", (title, expr, answer)
            by_panel.setdefault(title, []).extend(answer["data"]["result"])
        empty = {t for t in CORE_PANELS if not by_panel.get(t)}
        return None if empty else by_panel

    poll("data in every core panel", results, 20)
    # No series of the gateway carries a per-agent label or an agent's name.
    series = prometheus.query('{__name__=~"iou_.+"}')["data"]["result"]
    assert series
    for one in series:
        labels = one["metric"]
        assert "agent" not in labels and agent not in labels.values(), labels


def test_a_stalled_writer_raises_the_lag_alert_and_resuming_clears_it(
        stack: tuple[Gateway, Prometheus]) -> None:
    gw, prometheus = stack
    writers = poll("the ledger writer", lambda: writer_pids(gw.process.pid), 10)
    _, key = new_agent(gw)
    for pid in writers:
        os.kill(pid, signal.SIGSTOP)
    try:
        with gw.agent(key) as client:
            assert client.post("/v1/charge", json={"tool": "web_search"}).status_code == 200

        def lag_alert() -> dict[str, Any] | None:
            return next((a for a in prometheus.alerts()
                         if a["labels"]["alertname"] == "IouLedgerLag"), None)

        alert = poll("IouLedgerLag pending", lag_alert, LAG_ALERT_S + 30)
        assert alert["state"] in {"pending", "firing"}
        assert alert["annotations"]["runbook"] == "docs/operations.md#ledger-lag"
        assert float(alert["value"]) > LAG_ALERT_S
    finally:
        for pid in writers:
            os.kill(pid, signal.SIGCONT)
    poll("IouLedgerLag cleared", lambda: not any(
        a["labels"]["alertname"] == "IouLedgerLag" for a in prometheus.alerts()), 30)
    lag = prometheus.query("max(iou_ledger_lag_seconds)")["data"]["result"]
    assert float(lag[0]["value"][1]) < LAG_ALERT_S

