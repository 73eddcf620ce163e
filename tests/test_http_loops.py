"""The loop breaker over HTTP: the limits object's `loop`, the `fingerprint` field of
charge, batch items and holds, invoke compared by its body, 429 loop_detected with
Retry-After, the freeze action with its webhook, and /metrics."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest

from tests.gateway_proc import Gateway
from tests.http_helpers import Recorded, new_agent, recording_handler, unique, upstream_server

UPSTREAM = Recorded()  # a tool's upstream: 200 to everything, recording what reached it


class _Hooks(http.server.BaseHTTPRequestHandler):
    events: ClassVar[list[dict[str, Any]]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        with _Hooks.lock:
            _Hooks.events.append(json.loads(body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with upstream_server(recording_handler(UPSTREAM)) as url:
        yield url


def _set_loop(gateway: Gateway, name: str, loop: Any, **more: Any) -> httpx.Response:
    with gateway.admin() as admin:
        return admin.patch(f"/v1/agents/{name}/limits", json={"loop": loop, **more})


def test_limits_object_takes_the_loop(gateway: Gateway) -> None:
    name, _ = new_agent(gateway, "10", "loops")
    patched = _set_loop(gateway, name, {"repeats": 5, "window_s": 60})
    assert patched.status_code == 200, patched.text
    assert patched.json()["loop"] == {"repeats": 5, "window_s": 60, "action": "refuse"}
    with gateway.admin() as admin:
        shown = admin.get(f"/v1/agents/{name}").json()["limits"]
        assert shown["loop"] == {"repeats": 5, "window_s": 60, "action": "refuse"}
    for bad, field in (({"repeats": 0, "window_s": 60}, "loop.repeats"),
                       ({"repeats": 1001, "window_s": 60}, "loop.repeats"),
                       ({"repeats": "5", "window_s": 60}, "loop.repeats"),
                       ({"window_s": 60}, "loop.repeats"),
                       ({"repeats": 5}, "loop.window_s"),
                       ({"repeats": 5, "window_s": 86_401}, "loop.window_s"),
                       ({"repeats": 5, "window_s": 1.5}, "loop.window_s"),
                       ({"repeats": 5, "window_s": 60, "action": "halt"}, "loop.action"),
                       ({"repeats": 5, "window_s": 60, "every": 1}, "loop.every"),
                       ("5/60s", "loop")):
        refused = _set_loop(gateway, name, bad)
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["field"] == field, (bad, refused.text)
    cleared = _set_loop(gateway, name, None)
    assert cleared.status_code == 200 and "loop" not in cleared.json()


def test_charge_batch_and_hold_refused_with_retry_after(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "10", "loops")
    assert _set_loop(gateway, name, {"repeats": 2, "window_s": 30}).status_code == 200
    same = {"tool": "web_search", "fingerprint": "https://example.com/a"}
    with gateway.agent(key) as agent:
        assert agent.post("/v1/charge", json=same).status_code == 200
        batch = agent.post("/v1/charges", json={"charges": [same, same, {
            "tool": "web_search", "fingerprint": "https://example.com/b"}]}).json()["results"]
        assert [r.get("error") for r in batch] in ([None, "loop_detected", None],
                                                   ["loop_detected", None, None])
        looped = agent.post("/v1/charge", json=same)
        assert looped.status_code == 429
        body = looped.json()
        assert body | {"message": "", "retry_after_s": 0} == {
            "error": "loop_detected", "message": "", "tool": "web_search", "repeats": 2,
            "window_s": 30, "retry_after_s": 0}
        assert looped.headers["Retry-After"] == str(body["retry_after_s"])
        assert 1 <= body["retry_after_s"] <= 30
        # metadata stands for the arguments when there is no fingerprint
        meta = {"tool": "llm_summarize", "max_cost": "0.01", "metadata": {"q": "same"}}
        assert agent.post("/v1/holds", json=meta).status_code == 201
        assert agent.post("/v1/holds", json=meta).status_code == 201
        held = agent.post("/v1/holds", json=meta)
        assert held.status_code == 429 and held.json()["error"] == "loop_detected"
        too_long = agent.post("/v1/charge", json={"tool": "calc", "fingerprint": "x" * 129})
        assert too_long.status_code == 422 and too_long.json()["field"] == "fingerprint"
        item = agent.post("/v1/charges", json={"charges": [{"tool": "calc", "fingerprint": 1}]})
        assert item.status_code == 422 and item.json()["field"] == "charges[0].fingerprint"
        assert agent.get("/v1/balance").json()["balance"] == "9.83"
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'iou_charges_total{category="tool",outcome="loop_detected"}' in metrics
    assert name not in metrics


def test_invoke_compared_by_body_and_refused_before_the_upstream(gateway: Gateway,
                                                                 upstream: str) -> None:
    tool = unique("looped").replace("-", "_")
    with gateway.admin() as admin:
        assert admin.put(f"/v1/tools/{tool}", json={
            "price": "0.01", "category": "tool", "upstream": upstream}).status_code == 200
    name, key = new_agent(gateway, "10", "loops")
    assert _set_loop(gateway, name, {"repeats": 1, "window_s": 60}).status_code == 200
    with gateway.agent(key) as agent:
        assert agent.post(f"/v1/tools/{tool}/invoke", json={"url": "a"}).status_code == 200
        assert agent.post(f"/v1/tools/{tool}/invoke", json={"url": "b"}).status_code == 200
        hits = UPSTREAM.count
        again = agent.post(f"/v1/tools/{tool}/invoke", json={"url": "a"})
        assert again.status_code == 429 and again.json()["error"] == "loop_detected"
        assert UPSTREAM.count == hits  # the upstream never saw the looping call


def test_freeze_action_freezes_and_sends_the_webhook(gateway: Gateway) -> None:
    _Hooks.events = []
    with upstream_server(_Hooks, "/hook") as hook_url:
        name, key = new_agent(gateway, "10", "loops")
        assert _set_loop(gateway, name, {"repeats": 3, "window_s": 60, "action": "freeze"},
                         webhook_url=hook_url).status_code == 200
        with gateway.agent(key) as agent:
            for _ in range(3):
                assert agent.post("/v1/charge", json={"tool": "web_search"}).status_code == 200
            looped = agent.post("/v1/charge", json={"tool": "web_search"})
            assert looped.status_code == 429 and looped.json()["error"] == "loop_detected"
            frozen = agent.post("/v1/charge", json={"tool": "web_browse"})
            assert frozen.status_code == 423
        with gateway.admin() as admin:
            assert admin.get(f"/v1/agents/{name}").json()["frozen"] is True
        deadline = time.monotonic() + 15
        while not any(e["event"] == "agent.loop_detected" for e in _Hooks.events):
            assert time.monotonic() < deadline, _Hooks.events
            time.sleep(0.1)
    event = next(e for e in _Hooks.events if e["event"] == "agent.loop_detected")
    assert event | {"event_id": "", "at_ms": 0} == {
        "event_id": "", "event": "agent.loop_detected", "agent": name, "balance": "9.85",
        "at_ms": 0, "tool": "web_search", "repeats": 3, "window_s": 60}
