"""docker-compose.yml, checked without a Docker engine: every command is a real `iou`
command line, every IOU_ variable is one the configuration reads, dependencies resolve."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from gateway.cli.main import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def config_variables() -> set[str]:
    sources = (ROOT / "gateway" / "config.py").read_text()
    return set(re.findall(r'"(IOU_[A-Z_]+)"', sources))


def test_iou_commands_parse(compose: dict[str, Any]) -> None:
    commands = [s["command"] for s in compose["services"].values()
                if isinstance(s.get("command"), list) and s["command"][0] == "iou"]
    assert {c[1] for c in commands} == {"serve", "writer"}
    for command in commands:
        result = CliRunner().invoke(main, [*command[1:], "--help"])
        assert result.exit_code == 0, (command, result.output)


def test_environment_is_what_config_reads(compose: dict[str, Any]) -> None:
    known = config_variables()
    for name, service in compose["services"].items():
        for variable in (service.get("environment") or {}):
            if variable.startswith("IOU_"):
                assert variable in known, f"{name}: {variable} is not read by gateway/config.py"


def test_services_depend_and_check_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        for other in depends:
            assert other in services, f"{name} depends on unknown {other}"
            condition = depends[other].get("condition") if isinstance(depends, dict) else None
            if condition == "service_healthy":
                assert "healthcheck" in services[other], f"{other} has no healthcheck"
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--maxmemory-policy noeviction" in redis_command
    for locust in ("locust-master", "locust-worker"):
        assert "loadtests/locustfile.py" in services[locust]["command"]
    assert (ROOT / "loadtests" / "locustfile.py").exists()


def test_prometheus_scrapes_the_gateway() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    job = config["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["gateway:8080"]
