"""Idempotent retries, BOLA, secrets out of logs, proxy settlement, fail-closed on Redis loss."""

from __future__ import annotations

import concurrent.futures
import http.server
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest
import redis

from tests.gateway_proc import Gateway, running_gateway
from tests.http_helpers import balance, error_of, new_agent, seed_tools, unique, upstream_server
from tests.servers import redis_server


def test_fifty_parallel_retries_one_charge(gateway: Gateway) -> None:
    _, key = new_agent(gateway, "1")

    def post(_: int) -> httpx.Response:
        with gateway.agent(key) as agent:
            return agent.post("/v1/charge", json={"tool": "web_search"},
                              headers={"idempotency-key": "retry-me"})

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(post, range(50)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert balance(gateway, key) == "0.95"
    with gateway.agent(key) as agent:
        other = agent.post("/v1/charge", json={"tool": "web_browse"},
                           headers={"idempotency-key": "retry-me"})
    assert other.status_code == 409 and error_of(other) == "idempotency_conflict"


def test_http_replay_of_agent_creation(gateway: Gateway) -> None:
    name = unique("idem")
    with gateway.admin() as admin:
        first = admin.post("/v1/agents", json={"name": name},
                           headers={"idempotency-key": "create-" + name})
        again = admin.post("/v1/agents", json={"name": name},
                           headers={"idempotency-key": "create-" + name})
        assert first.status_code == again.status_code == 201
        # The key is shown once and never kept in clear: the replay says so instead.
        assert again.json() == {**first.json(), "api_key": None,
                                "api_key_note": again.json()["api_key_note"]}
        assert again.headers["idempotent-replayed"] == "true"
        other = admin.post("/v1/agents", json={"name": name + "-b"},
                           headers={"idempotency-key": "create-" + name})
        assert other.status_code == 409


def test_idempotency_keys_are_scoped_to_the_caller(gateway: Gateway) -> None:
    _, one = new_agent(gateway, "1")
    _, two = new_agent(gateway, "1")
    for key in (one, two):
        with gateway.agent(key) as agent:
            response = agent.post("/v1/charge", json={"tool": "web_search"},
                                  headers={"idempotency-key": "shared"})
            assert response.status_code == 200
    assert balance(gateway, one) == balance(gateway, two) == "0.95"


def test_bola_agent_a_never_sees_agent_b(gateway: Gateway) -> None:
    name_b, key_b = new_agent(gateway, "3")
    _, key_a = new_agent(gateway, "3")
    with gateway.agent(key_b) as b:
        hold_id = b.post("/v1/holds", json={"tool": "llm_summarize", "max_cost": "1"}
                         ).json()["hold_id"]
    with gateway.agent(key_a) as a:
        assert a.post(f"/v1/holds/{hold_id}/capture", json={"cost": "0"}).status_code == 404
        assert a.post(f"/v1/holds/{hold_id}/release").status_code == 404
        own = a.get("/v1/balance").json()
        assert own["agent"] != name_b and own["balance"] == "3"
        for path in (f"/v1/agents/{name_b}", f"/v1/agents/{name_b}/limits"):
            response = a.get(path)
            assert response.status_code == 403 and name_b not in response.text
        assert a.post(f"/v1/agents/{name_b}/fund", json={"amount": "1"}).status_code == 403
    assert balance(gateway, key_b) == "2"


def test_keys_never_in_logs_or_events(gateway: Gateway,
                                      gateway_redis: tuple[str, subprocess.Popen[bytes]]
                                      ) -> None:
    name, key = new_agent(gateway, "1")
    with gateway.admin() as admin:
        extra = admin.post(f"/v1/agents/{name}/keys").json()["api_key"]
    with gateway.agent(key) as agent:
        agent.post("/v1/charge", json={"tool": "web_search"})
    client = redis.Redis.from_url(gateway_redis[0])
    dump = b"".join(repr(client.xrange(k)).encode() for k in client.keys("*:events"))
    values = b"".join(repr(client.hgetall(k)).encode() for k in client.keys("*")
                      if client.type(k) == b"hash")
    client.close()
    for secret in (key, extra):
        assert secret.encode() not in dump and secret.encode() not in values
        assert secret not in gateway.log_text()


class _Upstream(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        _Upstream.seen.append({"path": self.path, "auth": self.headers.get("authorization"),
                               "body": body})
        if self.path.startswith("/slow"):
            time.sleep(3)
        status = 500 if self.path.startswith("/fail") else 200
        payload = b'{"result": "ok"}' if status == 200 else b'{"oops": true}'
        self.send_response(status)
        self.send_header("content-type", "application/json")
        if self.path.startswith("/variable"):
            self.send_header("x-iou-cost", "0.03")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with upstream_server(_Upstream) as url:
        yield url


def _proxied_tool(gateway: Gateway, upstream: str, path: str, price: str,
                  pricing: str = "fixed") -> str:
    tool = unique("proxied").replace("-", "_")
    with gateway.admin() as admin:
        response = admin.put(f"/v1/tools/{tool}", json={
            "price": price, "category": "tool", "pricing": pricing,
            "upstream": upstream + path,
            "upstream_headers": {"Authorization": "Bearer only-the-gateway-knows"}})
        assert response.status_code == 200
    return tool


def test_proxy_captures_on_2xx(gateway: Gateway, upstream: str) -> None:
    tool = _proxied_tool(gateway, upstream, "/ok", "0.25")
    _, key = new_agent(gateway, "1")
    with gateway.agent(key) as agent:
        response = agent.post(f"/v1/tools/{tool}/invoke", json={"q": "pricing"})
    assert response.status_code == 200 and response.json() == {"result": "ok"}
    assert response.headers["x-iou-balance"] == "0.75" and response.headers["x-iou-charge-id"]
    assert _Upstream.seen[-1]["auth"] == "Bearer only-the-gateway-knows"
    assert _Upstream.seen[-1]["body"] == b'{"q":"pricing"}'
    assert balance(gateway, key) == "0.75"


def test_proxy_variable_cost_from_upstream(gateway: Gateway, upstream: str) -> None:
    tool = _proxied_tool(gateway, upstream, "/variable", "0.1", "variable")
    _, key = new_agent(gateway, "1")
    with gateway.agent(key) as agent:
        missing = agent.post(f"/v1/tools/{tool}/invoke", json={})
        assert missing.status_code == 422 and missing.json()["field"] == "X-IOU-Max-Cost"
        response = agent.post(f"/v1/tools/{tool}/invoke", json={},
                              headers={"x-iou-max-cost": "0.5"})
    assert response.status_code == 200 and response.headers["x-iou-balance"] == "0.97"


def test_proxy_releases_on_500_and_timeout(gateway: Gateway, upstream: str) -> None:
    failing = _proxied_tool(gateway, upstream, "/fail", "0.25")
    slow = _proxied_tool(gateway, upstream, "/slow", "0.25")
    _, key = new_agent(gateway, "1")
    with gateway.agent(key) as agent:
        failed = agent.post(f"/v1/tools/{failing}/invoke", json={})
        assert failed.status_code == 500 and failed.json() == {"oops": True}
        assert failed.headers["x-iou-balance"] == "1"
        assert "x-iou-charge-id" not in failed.headers
        timed_out = agent.post(f"/v1/tools/{slow}/invoke", json={})
        assert timed_out.status_code == 504 and error_of(timed_out) == "upstream_timeout"
        state = agent.get("/v1/balance").json()
    assert state["balance"] == "1" and state["held"] == "0"


def test_proxy_refuses_without_balance(gateway: Gateway, upstream: str) -> None:
    tool = _proxied_tool(gateway, upstream, "/ok", "2")
    _, key = new_agent(gateway, "1")
    before = len(_Upstream.seen)
    with gateway.agent(key) as agent:
        refused = agent.post(f"/v1/tools/{tool}/invoke", json={})
    assert refused.status_code == 402 and len(_Upstream.seen) == before


def test_redis_stopped_fails_closed_then_recovers() -> None:
    with redis_server() as (url, process), running_gateway(url) as gw:
        seed_tools(gw)
        _, key = new_agent(gw, "1")
        port = url.rsplit(":", 1)[1].split("/")[0]
        process.terminate()
        process.wait()
        with gw.agent(key) as agent:
            down = agent.post("/v1/charge", json={"tool": "web_search"})
        assert down.status_code == 503 and error_of(down) == "unavailable"
        ready = httpx.get(gw.url + "/readyz")
        assert ready.status_code == 503
        args = [str(a) for a in process.args]  # type: ignore[union-attr]
        binary, data_dir = args[0], args[args.index("--dir") + 1]
        restarted = subprocess.Popen(
            [str(binary), "--port", port, "--bind", "127.0.0.1", "--dir", str(data_dir),
             "--appendonly", "yes", "--save", "", "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while (ready := httpx.get(gw.url + "/readyz")).status_code != 200:
                assert time.monotonic() < deadline, ready.text
                time.sleep(0.1)
            with gw.agent(key) as agent:
                back = agent.post("/v1/charge", json={"tool": "web_search"})
            assert back.status_code == 200 and back.json()["balance"] == "0.95"
        finally:
            restarted.terminate()
            restarted.wait()


def test_webhook_event_body_shape() -> None:
    from gateway.webhooks.deliverer import WebhookDeliverer, signature

    body = WebhookDeliverer.event_body({"event_id": "e:balance.low", "event": "balance.low",
                                        "agent": "a", "balance": "500000",
                                        "threshold": "1000000", "at": "1"})
    assert body == {"event_id": "e:balance.low", "event": "balance.low", "agent": "a",
                    "balance": "0.5", "threshold": "1", "at_ms": 1}
    assert signature("s", b"x", 1700000000) == "t=1700000000,v1=" + __import__("hmac").new(
        b"s", b"1700000000.x", "sha256").hexdigest()
    assert json.dumps(body)


def test_two_workers_share_one_store() -> None:
    with redis_server() as (url, _), running_gateway(url, workers=2) as gw:
        seed_tools(gw)
        _, key = new_agent(gw, "1")

        def post(i: int) -> httpx.Response:
            with gw.agent(key) as agent:  # a new connection each: spread over both workers
                return agent.post("/v1/charge", json={"tool": "web_search"},
                                  headers={"idempotency-key": f"w{i % 10}"})

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(post, range(40)))
        assert {r.status_code for r in responses} == {200}
        assert balance(gw, key) == "0.5"  # 10 distinct keys, 0.05 each
        metrics = httpx.get(gw.url + "/metrics").text
        assert 'iou_charges_total{category="tool",outcome="ok"}' in metrics
