"""The alerting rules of deploy/alerts/: valid for Prometheus, unit-tested with promtool
(every alert firing and not firing), each with a summary and a runbook section that exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RULES = sorted((DEPLOY / "alerts").glob("*.yml"))
RULE_TESTS = DEPLOY / "alerts" / "tests" / "iou.rules.test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
# What the contract asks alerts for, by the runbook section each one points to.
RUNBOOKS = {"ledger-lag", "dead-letters", "reconcile-drift", "writer-restarts",
            "unavailable-503", "webhook-backlog", "redis-memory", "failed-auth-surge"}


def promtool() -> str:
    """promtool from Debian's `prometheus` package; a missing one fails (CI installs it)."""
    path = shutil.which("promtool")
    assert path, "promtool not found: apt-get install -y prometheus (scripts/test.sh does)"
    return path


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(r for r in group["rules"] if "alert" in r)
    return rules


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but '-' dropped, spaces to '-'."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_prometheus_config_loads_the_rule_files() -> None:
    result = subprocess.run([promtool(), "check", "config", str(DEPLOY / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    loaded = {p for pattern in config["rule_files"] for p in DEPLOY.glob(pattern)}
    assert loaded == set(RULES) and RULES


def test_promtool_unit_tests_pass() -> None:
    result = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for rule in alert_rules():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']}: never seen firing"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']}: never seen quiet"


def test_every_alert_has_a_summary_and_a_runbook_section() -> None:
    sections = anchors(OPERATIONS.read_text())
    pointed = set()
    for rule in alert_rules():
        notes = rule["annotations"]
        assert notes.get("summary"), rule["alert"]
        page, _, anchor = notes["runbook"].partition("#")
        assert page == "docs/operations.md", rule["alert"]
        assert anchor in sections, f"{rule['alert']}: no section #{anchor} in {OPERATIONS}"
        pointed.add(anchor)
    assert pointed >= RUNBOOKS


def test_rules_name_only_metrics_the_gateway_exports() -> None:
    """Every iou_* name in a rule is one the gateway's registry declares (a renamed metric
    would leave an alert that can never fire)."""
    exported = exported_metric_names()
    for rule in alert_rules():
        for name in re.findall(r"\biou_[a-z_]+", rule["expr"]):
            assert name in exported, f"{rule['alert']}: {name} is not exported"


def exported_metric_names() -> set[str]:
    """Sample names the gateway can export: its prometheus_client metrics (all samples, so
    counters' _total and histograms' _bucket) and the writer-restart counter of /metrics."""
    from prometheus_client import REGISTRY

    from gateway import observability  # noqa: F401  (registers the metrics)
    from gateway.api import ops

    names = set()
    for registry in (REGISTRY, ops._OWN_REGISTRY):
        for family in registry.collect():
            names.add(family.name)
            names.update(s.name for s in family.samples)
            if family.type == "counter":
                names.add(family.name + "_total")
            if family.type == "histogram":
                names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
    return {n for n in names if n.startswith("iou_")}
