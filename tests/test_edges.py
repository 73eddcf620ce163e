"""Small edges of the HTTP API: refusal metrics, free proxied tools, the invoke query
string, and the ledger route's query parameters."""

from __future__ import annotations

import http.server
import re
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest

from tests.gateway_proc import Gateway
from tests.http_helpers import error_of, new_agent, unique, upstream_server


class _Upstream(http.server.BaseHTTPRequestHandler):
    """Answers 200 on any path but /fail (500); records what it was sent."""

    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        _Upstream.seen.append({"path": self.path, "auth": self.headers.get("authorization"),
                               "body": body})
        status = 500 if self.path.startswith("/fail") else 200
        payload = b'{"result": "ok"}' if status == 200 else b'{"oops": true}'
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with upstream_server(_Upstream) as url:
        yield url


def _tool(gateway: Gateway, upstream_url: str, price: str) -> str:
    tool = unique("edge").replace("-", "_")
    with gateway.admin() as admin:
        response = admin.put(f"/v1/tools/{tool}", json={
            "price": price, "category": "tool", "upstream": upstream_url,
            "upstream_headers": {"Authorization": "Bearer only-the-gateway-knows"}})
    assert response.status_code == 200, response.text
    return tool


def _ledger(gateway: Gateway, agent: str, count: int) -> list[dict[str, Any]]:
    """The agent's ledger once it holds ``count`` entries (the writer lags a little)."""
    deadline = time.monotonic() + 10
    with gateway.admin() as admin:
        while True:
            entries: list[dict[str, Any]] = admin.get(f"/v1/agents/{agent}/ledger").json()[
                "entries"]
            if len(entries) >= count:
                return entries
            assert time.monotonic() < deadline, entries
            time.sleep(0.05)


# ---- refusals are counted under the tool's category -----------------------------------

def _counter(gateway: Gateway, outcome: str, category: str) -> float:
    text = httpx.get(gateway.url + "/metrics").text
    found = re.search(rf'^iou_charges_total{{category="{category}",outcome="{outcome}"}} '
                      r"(\S+)$", text, re.MULTILINE)
    if found is None:  # prometheus_client orders labels as declared: try that order too
        found = re.search(rf'^iou_charges_total{{outcome="{outcome}",category="{category}"}} '
                          r"(\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_402_and_423_are_counted_under_the_tools_category(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "0")
    before = {(o, c): _counter(gateway, o, c) for o in ("balance_insufficient", "agent_frozen")
              for c in ("tool", "llm", "unknown")}
    with gateway.agent(key) as agent:
        assert agent.post("/v1/charge", json={"tool": "web_search"}).status_code == 402
        batch = agent.post("/v1/charges", json={"charges": [
            {"tool": "llm_summarize", "cost": "0.5"}]}).json()["results"]
        assert batch[0]["error"] == "balance_insufficient"
        with gateway.admin() as admin:
            assert admin.post(f"/v1/agents/{name}/freeze").status_code == 200
        assert agent.post("/v1/charge", json={"tool": "web_search"}).status_code == 423
    after = {k: _counter(gateway, *k) for k in before}
    grew = {k: after[k] - before[k] for k in before if after[k] != before[k]}
    assert grew == {("balance_insufficient", "tool"): 1, ("balance_insufficient", "llm"): 1,
                    ("agent_frozen", "tool"): 1}


# ---- a free tool with an upstream is invoked through the gateway ----------------------

def test_free_tool_with_upstream_is_forwarded_and_in_the_ledger(gateway: Gateway,
                                                                 upstream: str) -> None:
    tool = _tool(gateway, upstream + "/free", "0")
    name, key = new_agent(gateway, "0")  # free calls succeed at zero balance
    with gateway.agent(key) as agent:
        response = agent.post(f"/v1/tools/{tool}/invoke", json={"q": 1})
    assert response.status_code == 200, response.text
    assert response.json() == {"result": "ok"}
    assert response.headers["x-iou-balance"] == "0"
    charge_id = response.headers["x-iou-charge-id"]
    assert _Upstream.seen[-1]["auth"] == "Bearer only-the-gateway-knows"
    assert _Upstream.seen[-1]["body"] == b'{"q":1}'
    entries = _ledger(gateway, name, 2)
    assert [(e["kind"], e["tool"], e["amount"]) for e in entries] == [
        ("charge", tool, "0"), ("grant", None, "0")]
    assert entries[0]["entry_id"] == charge_id


def test_free_tool_upstream_failure_is_passed_back_and_counted_at_zero(gateway: Gateway,
                                                                       upstream: str) -> None:
    """A free call is charged 0 before it is forwarded (call caps, the loop breaker and
    tasks count it, and must stop it before the upstream): a failed one still counts, and
    costs nothing."""
    tool = _tool(gateway, upstream + "/fail", "0")
    name, key = new_agent(gateway, "1")
    with gateway.agent(key) as agent:
        failed = agent.post(f"/v1/tools/{tool}/invoke", json={})
        assert failed.status_code == 500 and failed.json() == {"oops": True}
        charge_id = failed.headers["x-iou-charge-id"]
        assert failed.headers["x-iou-balance"] == "1"
    entries = _ledger(gateway, name, 2)
    assert [(e["kind"], e["tool"], e["amount"]) for e in entries] == [
        ("charge", tool, "0"), ("grant", None, "1")]
    assert entries[0]["entry_id"] == charge_id


def test_free_tool_refuses_a_max_cost_header(gateway: Gateway, upstream: str) -> None:
    tool = _tool(gateway, upstream + "/free", "0")
    _, key = new_agent(gateway, "1")
    seen = len(_Upstream.seen)
    with gateway.agent(key) as agent:
        refused = agent.post(f"/v1/tools/{tool}/invoke", json={},
                             headers={"x-iou-max-cost": "0.1"})
    assert refused.status_code == 422 and refused.json()["field"] == "X-IOU-Max-Cost"
    assert len(_Upstream.seen) == seen


# ---- invoke forwards the query string ------------------------------------------------

def test_invoke_forwards_the_query_string(gateway: Gateway, upstream: str) -> None:
    plain = _tool(gateway, upstream + "/search", "0.1")
    with_query = _tool(gateway, upstream + "/search?api=v2", "0")
    _, key = new_agent(gateway, "1")
    with gateway.agent(key) as agent:
        assert agent.post(f"/v1/tools/{plain}/invoke?x=1&q=a%20b", json={}).status_code == 200
        assert _Upstream.seen[-1]["path"] == "/search?x=1&q=a%20b"
        assert agent.post(f"/v1/tools/{with_query}/invoke?x=1", json={}).status_code == 200
        assert _Upstream.seen[-1]["path"] == "/search?api=v2&x=1"
        assert agent.post(f"/v1/tools/{plain}/invoke", json={}).status_code == 200
        assert _Upstream.seen[-1]["path"] == "/search"


def test_invoke_idempotency_key_covers_the_query_string(gateway: Gateway, upstream: str
                                                        ) -> None:
    tool = _tool(gateway, upstream + "/search", "0.1")
    _, key = new_agent(gateway, "1")
    with gateway.agent(key) as agent:
        first = agent.post(f"/v1/tools/{tool}/invoke?page=1", json={},
                           headers={"idempotency-key": "q-1"})
        again = agent.post(f"/v1/tools/{tool}/invoke?page=1", json={},
                           headers={"idempotency-key": "q-1"})
        other = agent.post(f"/v1/tools/{tool}/invoke?page=2", json={},
                           headers={"idempotency-key": "q-1"})
        assert first.status_code == again.status_code == 200
        assert again.headers["x-iou-charge-id"] == first.headers["x-iou-charge-id"]
        assert other.status_code == 409 and error_of(other) == "idempotency_conflict"
        assert agent.get("/v1/balance").json()["balance"] == "0.9"


# ---- the ledger route's query parameters -------------------------------------------

@pytest.fixture(scope="module")
def ledger_agent(gateway: Gateway) -> str:
    name, key = new_agent(gateway, "1")
    with gateway.agent(key) as agent:
        for _ in range(3):
            assert agent.post("/v1/charge", json={"tool": "web_search"}).status_code == 200
    _ledger(gateway, name, 4)
    return name


BAD_LEDGER_QUERIES = [
    ("before=garbage", "before"),
    ("before=", "before"),
    ("before=0190d5a0-0000-7000-8000-00000000000", "before"),  # one digit short
    ("before=0190D5A0-0000-7000-8000-000000000000", "before"),  # ids are lower case
    ("before=" + "a" * 5000, "before"),
    ("limit=0", "limit"),
    ("limit=1001", "limit"),
    ("limit=-1", "limit"),
    ("limit=abc", "limit"),
    ("limit=", "limit"),
    ("limit=1.5", "limit"),
    ("limit=%EF%BC%91", "limit"),  # a full-width digit one
    ("limit=" + "9" * 5000, "limit"),
    ("limit=1&limit=2", "limit"),
    ("kind=bogus", "kind"),
    ("kind=", "kind"),
    ("kind=CHARGE", "kind"),
    ("kind=charge&kind=fund", "kind"),
    ("tool=", "tool"),
    ("tool=no%20spaces", "tool"),
    ("tool=" + "t" * 200, "tool"),
    ("cursor=abc", "cursor"),  # this route pages with `before`
    ("colour=blue", "colour"),
]


@pytest.mark.parametrize(("query", "field"), BAD_LEDGER_QUERIES)
def test_ledger_refuses_every_bad_query_value(gateway: Gateway, ledger_agent: str, query: str,
                                              field: str) -> None:
    with gateway.admin() as admin:
        response = admin.get(f"/v1/agents/{ledger_agent}/ledger?{query}")
    assert response.status_code == 422, response.text
    assert error_of(response) == "invalid_request" and response.json()["field"] == field


def test_ledger_pages_with_a_real_cursor_and_filters(gateway: Gateway, ledger_agent: str
                                                     ) -> None:
    with gateway.admin() as admin:
        url = f"/v1/agents/{ledger_agent}/ledger"
        first = admin.get(url, params={"limit": "2"}).json()
        assert len(first["entries"]) == 2 and first["next_cursor"]
        rest = admin.get(url, params={"limit": "2", "before": first["next_cursor"]}).json()
        assert [e["kind"] for e in rest["entries"]] == ["charge", "grant"]
        assert rest["next_cursor"] is None
        charges = admin.get(url, params={"kind": "charge", "tool": "web_search"}).json()
        assert len(charges["entries"]) == 3
        assert admin.get(url, params={"tool": "web_browse"}).json()["entries"] == []
