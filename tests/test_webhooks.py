"""Webhooks to a local receiver: signed, retried after failures, never slowing charges."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.gateway_proc import WEBHOOK_SECRET, Gateway
from tests.http_helpers import new_agent

# The receiver's check, as docs/api.md shows it (Stripe's scheme: a signed timestamp).
TOLERANCE_S = 300


def verify(secret: str, header: str, body: bytes, now_s: float | None = None) -> bool:
    """True when ``header`` (X-IOU-Signature) signs ``body`` and is at most 5 minutes old."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    t, v1 = parts.get("t", ""), parts.get("v1", "")
    if not t.isdigit():
        return False
    if abs((time.time() if now_s is None else now_s) - int(t)) > TOLERANCE_S:
        return False  # too old (or from the future): a replay
    expected = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, v1)


class Receiver(http.server.BaseHTTPRequestHandler):
    fail_first = 3
    hang_s = 0.0
    attempts: ClassVar[list[dict[str, Any]]] = []
    accepted: ClassVar[list[dict[str, Any]]] = []
    # (event_id, X-IOU-Signature, raw body, valid) of every attempt, in arrival order
    signed: ClassVar[list[tuple[str, str, bytes, bool]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        header = self.headers.get("x-iou-signature", "")
        valid = verify(WEBHOOK_SECRET, header, body)
        event = json.loads(body)
        Receiver.attempts.append(event)
        Receiver.signed.append((event["event_id"], header, body, valid))
        if Receiver.hang_s:
            time.sleep(Receiver.hang_s)
        ok = valid and len(Receiver.attempts) > Receiver.fail_first
        if ok:
            Receiver.accepted.append(event)
        self.send_response(200 if ok else 500)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.attempts, Receiver.accepted, Receiver.hang_s = [], [], 0.0
    Receiver.signed, Receiver.fail_first = [], 3
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_failing_receiver_gets_exactly_the_events(gateway: Gateway, receiver: str) -> None:
    name, key = new_agent(gateway, "1.2")
    with gateway.admin() as admin, gateway.agent(key) as agent:
        admin.patch(f"/v1/agents/{name}/limits", json={"low_balance": "1",
                                                       "webhook_url": receiver})
        assert agent.post("/v1/charge", json={"tool": "web_browse"}).json()["balance"] == "1.08"
        crossed = agent.post("/v1/charge", json={"tool": "web_browse"}).json()
        assert crossed["balance"] == "0.96" and crossed["warnings"] == ["low_balance"]
        agent.post("/v1/charge", json={"tool": "web_browse"})  # still low: no new event
    deadline = time.monotonic() + 90
    while len({e["event_id"] for e in Receiver.accepted}) < 2:
        assert time.monotonic() < deadline, Receiver.attempts
        time.sleep(0.2)
    time.sleep(1)
    kinds = sorted({e["event_id"]: e["event"] for e in Receiver.accepted}.values())
    assert kinds == ["balance.low", "refill.requested"]
    assert all(e["agent"] == name and e["balance"] == "0.96" and e["threshold"] == "1"
               for e in Receiver.accepted)
    assert len(Receiver.attempts) >= 5  # 3 refused, then both delivered


def test_hanging_receiver_does_not_slow_charges(gateway: Gateway, receiver: str) -> None:
    Receiver.fail_first, Receiver.hang_s = 0, 4.0
    name, key = new_agent(gateway, "1.2")
    with gateway.admin() as admin, gateway.agent(key) as agent:
        admin.patch(f"/v1/agents/{name}/limits", json={"low_balance": "1",
                                                       "webhook_url": receiver})
        agent.post("/v1/charge", json={"tool": "web_browse"})
        agent.post("/v1/charge", json={"tool": "web_browse"})  # crossing: receiver hangs
        deadline = time.monotonic() + 5
        while not Receiver.attempts:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        slowest = 0.0
        for _ in range(50):  # while the receiver is stuck on the first event
            started = time.monotonic()
            assert agent.post("/v1/charge", json={"tool": "calc"}).status_code == 200
            slowest = max(slowest, time.monotonic() - started)
    # Not a speed test: a blocked delivery would make these wait seconds.
    assert slowest < 1.0


def test_depleted_event_at_most_once_a_minute(gateway: Gateway, receiver: str) -> None:
    Receiver.fail_first = 0
    name, key = new_agent(gateway, "0.01")
    with gateway.admin() as admin, gateway.agent(key) as agent:
        admin.patch(f"/v1/agents/{name}/limits", json={"webhook_url": receiver})
        for _ in range(5):
            assert agent.post("/v1/charge", json={"tool": "web_search"}).status_code == 402
    deadline = time.monotonic() + 10
    while not Receiver.accepted:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1)
    depleted = [e for e in Receiver.accepted if e["event"] == "balance.depleted"]
    assert len(depleted) == 1 and depleted[0]["agent"] == name
    assert depleted[0]["balance"] == "0.01"


def test_each_attempt_is_signed_afresh_and_old_signatures_are_refused(
        gateway: Gateway, receiver: str) -> None:
    Receiver.fail_first = 1  # the first attempt is refused; its retry comes >= 6 s later
    name, key = new_agent(gateway, "1.2")
    with gateway.admin() as admin, gateway.agent(key) as agent:
        admin.patch(f"/v1/agents/{name}/limits", json={"low_balance": "1",
                                                       "webhook_url": receiver})
        agent.post("/v1/charge", json={"tool": "web_browse"})
        agent.post("/v1/charge", json={"tool": "web_browse"})  # crosses: 2 events
    first_id, first_header, first_body, first_valid = _first_attempt()
    deadline = time.monotonic() + 30
    while not any(e["event_id"] == first_id for e in Receiver.accepted):
        assert time.monotonic() < deadline, Receiver.signed
        time.sleep(0.2)
    retry = [s for s in Receiver.signed if s[0] == first_id][-1]
    assert first_valid and retry[3] and retry[2] == first_body
    first_t, retry_t = (int(dict(p.split("=", 1) for p in h.split(","))["t"])
                        for h in (first_header, retry[1]))
    assert retry_t > first_t  # signed at its own attempt, not when queued
    assert all(s[3] for s in Receiver.signed)
    # A captured delivery replayed later than 5 minutes is refused by the receiver's check,
    # and its signature cannot be moved to a fresh timestamp.
    assert not verify(WEBHOOK_SECRET, first_header, first_body, now_s=first_t + 301)
    forged = first_header.replace(f"t={first_t}", f"t={first_t + 400}")
    assert not verify(WEBHOOK_SECRET, forged, first_body, now_s=first_t + 401)


def _first_attempt() -> tuple[str, str, bytes, bool]:
    deadline = time.monotonic() + 10
    while not Receiver.signed:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return Receiver.signed[0]


def test_the_documented_example_verifies_what_the_gateway_signs() -> None:
    from gateway.webhooks.deliverer import signature

    readme = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    start = readme.index("```python\nimport hashlib, hmac, time")
    code = readme[start + len("```python\n"):readme.index("```", start + 10)]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/api.md", "exec"), namespace)
    readme_verify = namespace["verify"]
    body, now_s = b'{"event":"balance.low"}', int(time.time())
    assert readme_verify(WEBHOOK_SECRET, signature(WEBHOOK_SECRET, body, now_s), body)
    old = signature(WEBHOOK_SECRET, body, now_s - 301)
    assert not readme_verify(WEBHOOK_SECRET, old, body)  # replayed after 5 minutes
    assert not readme_verify(WEBHOOK_SECRET, signature("another-secret", body, now_s), body)
    assert not readme_verify(WEBHOOK_SECRET, signature(WEBHOOK_SECRET, body, now_s),
                             body + b" ")
