"""The Grafana dashboards of deploy/grafana, checked without Grafana: provisioned by
docker-compose.yml with the Prometheus data source, every panel's query valid PromQL (promtool
parses it) over metrics the gateway exports, and no metric with a per-agent label."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.test_alert_rules import exported_metric_names, promtool

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target of every dashboard."""
    queries = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                queries.append((panel["title"], target["expr"]))
    return queries


def test_compose_provisions_grafana_with_prometheus_and_the_dashboards() -> None:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = {m.split(":")[0]: m.split(":")[1] for m in grafana["volumes"]}
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards_dir = mounts["./deploy/grafana/dashboards"]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "iou.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == dashboards_dir
    sources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    prometheus = next(s for s in sources if s["type"] == "prometheus")
    assert prometheus["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    # Every panel and target uses the provisioned data source.
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            assert panel["datasource"]["uid"] == prometheus["uid"], panel["title"]
            assert all(t["datasource"]["uid"] == prometheus["uid"] for t in panel["targets"])
    prom = compose["services"]["prometheus"]
    assert "./deploy/alerts:/etc/prometheus/alerts:ro" in prom["volumes"]


def test_the_dashboards_show_what_the_issue_lists() -> None:
    queries = " ".join(q for _, q in panel_queries())
    for metric in ("iou_charges_total", "iou_charge_latency_seconds_bucket",
                   "iou_ledger_lag_seconds", "iou_ledger_pending_entries",
                   "iou_ledger_written_total", "iou_webhook_backlog",
                   "iou_redis_used_memory_bytes", 'iou_http_errors_total{status="503"}'):
        assert metric in queries, metric
    assert "histogram_quantile(0.5" in queries and "histogram_quantile(0.99" in queries


def test_every_panel_query_parses_as_promql(tmp_path: Path) -> None:
    """promtool parses each query as the expression of a recording rule."""
    rules = [{"record": f"iou_panel:query_{n}", "expr": expr}
             for n, (_, expr) in enumerate(panel_queries())]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_every_panel_query_names_exported_metrics() -> None:
    exported = exported_metric_names()
    for title, expr in panel_queries():
        names = re.findall(r"\biou_[a-z_]+", expr)
        assert names, title
        for name in names:
            assert name in exported, f"{title}: {name} is not exported"


def test_no_metric_has_a_per_agent_label() -> None:
    """Labels of every metric the gateway declares: none names an agent, a key or a tool
    (unbounded sets); per-agent figures come from the API."""
    from prometheus_client import REGISTRY

    from gateway import observability

    unbounded = {"agent", "agent_name", "key", "key_id", "api_key", "tool", "hold_id",
                 "request_id", "idempotency_key", "charge_id"}
    for family in REGISTRY.collect():
        if family.name.startswith("iou_"):
            for sample in family.samples:
                assert not unbounded & set(sample.labels), (family.name, sample.labels)
    for name, collector in vars(observability).items():
        labels = set(getattr(collector, "_labelnames", ()))
        assert not unbounded & labels, (name, labels)
