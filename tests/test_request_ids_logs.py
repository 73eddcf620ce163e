"""X-Request-Id on every answer, JSON log lines naming the request and the agent, error
answers counted by status, and Redis memory sampled in the background (a real gateway)."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.gateway_proc import Gateway, running_gateway
from tests.http_helpers import new_agent, seed_tools
from tests.raw_http import connect, read_response
from tests.servers import redis_server

SAFE_NEW = re.compile(r"[0-9a-f]{12}-[0-9]+")


@pytest.fixture(scope="module")
def json_gateway() -> Iterator[tuple[Gateway, str]]:
    with redis_server() as (url, _), running_gateway(url, IOU_LOG_FORMAT="json") as gw:
        seed_tools(gw)
        yield gw, url


def log_records(gw: Gateway) -> list[dict[str, Any]]:
    """Every whole line of the log as JSON (the last may still be being written)."""
    text = gw.log_text()
    whole = text[:text.rfind("\n") + 1]
    return [json.loads(line) for line in whole.splitlines() if line.strip()]


def wait_for_record(gw: Gateway, request_id: str, logger: str = "iou.api",
                    deadline_s: float = 10) -> dict[str, Any]:
    """The one line of ``logger`` about the request."""
    deadline = time.monotonic() + deadline_s
    while True:
        found = [r for r in log_records(gw)
                 if r.get("request_id") == request_id and r["logger"] == logger]
        if found:
            assert len(found) == 1, found
            return found[0]
        assert time.monotonic() < deadline, f"no log line for {request_id}"
        time.sleep(0.05)


def charge(gw: Gateway, key: str, request_id: str | None, tool: str = "web_search"
           ) -> httpx.Response:
    headers = {"x-request-id": request_id} if request_id is not None else {}
    with gw.agent(key) as client:
        return client.post("/v1/charge", json={"tool": tool}, headers=headers)


def test_the_callers_safe_id_is_echoed_on_every_route(json_gateway: tuple[Gateway, str]
                                                      ) -> None:
    gw, _ = json_gateway
    _, key = new_agent(gw)
    sent = "req-01:abc/DEF+x=y@z_" + "9" * 100
    assert len(sent) <= 128
    assert charge(gw, key, sent).headers["x-request-id"] == sent
    with gw.agent(key) as client:
        assert client.get("/v1/balance", headers={"x-request-id": sent}
                          ).headers["x-request-id"] == sent
    with gw.admin() as admin:
        for method, path in [("GET", "/v1/agents"), ("GET", "/healthz"), ("GET", "/nope"),
                             ("POST", "/v1/agents"), ("GET", "/metrics")]:
            response = admin.request(method, path, headers={"x-request-id": sent})
            assert response.headers["x-request-id"] == sent, (method, path)


@pytest.mark.parametrize("sent", [None, "", "a" * 129, "has space", "quote\"d", "é-id",
                                  "semi;colon", "new\\line"])
def test_a_missing_or_unsafe_id_is_replaced_by_a_new_one(json_gateway: tuple[Gateway, str],
                                                         sent: str | None) -> None:
    gw, _ = json_gateway
    _, key = new_agent(gw)
    headers: dict[bytes, bytes] = {} if sent is None else {b"x-request-id":
                                                            sent.encode("utf-8")}
    seen = set()
    for path in ["/v1/charge", "/v1/balance"]:
        with gw.agent(key) as client:
            response = (client.post(path, json={"tool": "web_search"}, headers=headers)
                        if path == "/v1/charge" else client.get(path, headers=headers))
        request_id = response.headers["x-request-id"]
        assert request_id != sent and SAFE_NEW.fullmatch(request_id), request_id
        seen.add(request_id)
    assert len(seen) == 2


def test_protocol_errors_carry_a_request_id(json_gateway: tuple[Gateway, str]) -> None:
    gw, _ = json_gateway
    with connect(gw.url) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n")
        response = read_response(sock)
    assert response is not None and response.status == 400
    assert SAFE_NEW.fullmatch(response.headers["x-request-id"])


def test_a_refusal_logs_one_json_line_naming_request_and_agent(
        json_gateway: tuple[Gateway, str]) -> None:
    gw, _ = json_gateway
    name, key = new_agent(gw, grant="0.01")
    response = charge(gw, key, "refused-1")
    assert response.status_code == 402
    record = wait_for_record(gw, "refused-1")
    assert record["agent"] == name and record["error"] == "balance_insufficient"
    assert record["level"] == "INFO" and record["logger"] == "iou.api"
    assert set(record) >= {"ts", "level", "logger", "message"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"])


def test_an_admin_refusal_names_the_agent_of_the_route(json_gateway: tuple[Gateway, str]
                                                       ) -> None:
    gw, _ = json_gateway
    with gw.admin() as admin:
        response = admin.post("/v1/agents/ghost-agent/fund", json={"amount": "1"},
                              headers={"x-request-id": "refused-2"})
    assert response.status_code == 404
    record = wait_for_record(gw, "refused-2")
    assert record["agent"] == "ghost-agent" and record["error"] == "not_found"


def test_a_successful_charge_logs_nothing(json_gateway: tuple[Gateway, str]) -> None:
    gw, _ = json_gateway
    _, key = new_agent(gw)
    for n in range(20):
        assert charge(gw, key, f"ok-charge-{n}").status_code == 200
    # A refusal after them: once its line is in the log, the successes' would be too.
    _, poor = new_agent(gw, grant="0.01")
    assert charge(gw, poor, "after-successes").status_code == 402
    wait_for_record(gw, "after-successes")
    text = gw.log_text()
    assert "ok-charge-" not in text


def test_every_log_line_is_one_json_object(json_gateway: tuple[Gateway, str]) -> None:
    gw, _ = json_gateway
    records = log_records(gw)  # raises on any line that is not JSON
    loggers = {r["logger"] for r in records}
    assert {"iou.serve", "iou.app", "iou.api"} <= loggers, loggers
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)


def test_error_answers_are_counted_by_status(json_gateway: tuple[Gateway, str]) -> None:
    gw, _ = json_gateway
    before = error_count(gw, "404")
    with gw.admin() as admin:
        for _ in range(3):
            assert admin.get("/v1/agents/nobody-here").status_code == 404
    assert error_count(gw, "404") == before + 3


def test_redis_memory_is_sampled_in_the_background(json_gateway: tuple[Gateway, str]) -> None:
    gw, url = json_gateway
    client = redis.Redis.from_url(url)
    try:
        client.config_set("maxmemory", str(700 * 1024 * 1024))
        deadline = time.monotonic() + 15
        while metric(gw, "iou_redis_maxmemory_bytes") != 700 * 1024 * 1024:
            assert time.monotonic() < deadline, "maxmemory never sampled"
            time.sleep(0.2)
        assert (metric(gw, "iou_redis_used_memory_bytes") or 0) > 0
        # Scrapes do not ask Redis for INFO: 50 in a row add far fewer than 50 (the sampler
        # and the gateway's other background checks run meanwhile).
        calls = info_calls(client)
        for _ in range(50):
            metric(gw, "iou_redis_used_memory_bytes")
        assert info_calls(client) - calls < 25
    finally:
        client.config_set("maxmemory", "0")
        client.close()


def test_ledger_writer_throughput_is_exported(json_gateway: tuple[Gateway, str]) -> None:
    """iou_ledger_written_total: the entries the writer (a process of its own) settled,
    totalled in Redis, grows as charges reach the ledger."""
    gw, _ = json_gateway
    before = metric(gw, "iou_ledger_written_total") or 0.0
    _, key = new_agent(gw)  # its creation is one event, the charges three more
    for n in range(3):
        assert charge(gw, key, f"written-{n}").status_code == 200
    deadline = time.monotonic() + 15
    while (metric(gw, "iou_ledger_written_total") or 0.0) < before + 4:
        assert time.monotonic() < deadline, "the writer's total did not grow"
        time.sleep(0.1)


def test_unavailable_answers_are_counted(json_gateway: tuple[Gateway, str]) -> None:
    """Last in the module: it stops the gateway's Redis."""
    gw, url = json_gateway
    _, key = new_agent(gw)
    client = redis.Redis.from_url(url)
    with contextlib.suppress(redis.ConnectionError):  # it closes the connection as it exits
        client.shutdown(nosave=True)
    response = charge(gw, key, "while-down")
    assert response.status_code == 503
    assert response.headers["x-request-id"] == "while-down"
    assert error_count(gw, "503") >= 1
    record = wait_for_record(gw, "while-down")
    assert record["level"] == "WARNING" and record["error"] == "unavailable"


def test_a_bad_log_format_stops_start_up_with_one_line(tmp_path: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "serve", "--port", "1"],
        env={"IOU_LOG_FORMAT": "xml", "IOU_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "IOU_LOG_FORMAT" in lines[0] and "text, json" in lines[0]


def scrape(gw: Gateway) -> str:
    return httpx.get(gw.url + "/metrics", timeout=10).text


def metric(gw: Gateway, name: str, labels: str = "") -> float | None:
    pattern = re.escape(name + (("{" + labels + "}") if labels else "")) + r" (\S+)"
    found = re.search(r"^" + pattern + "$", scrape(gw), flags=re.MULTILINE)
    return float(found.group(1)) if found else None


def error_count(gw: Gateway, status: str) -> float:
    return metric(gw, "iou_http_errors_total", f'status="{status}"') or 0.0


def info_calls(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get("cmdstat_info", {}).get("calls", 0))
