"""Shadow limits over HTTP: the limits object's `shadow`, the calls it would have refused
(answered as without it), their ledger mark, /metrics and GET /v1/agents/{agent}/shadow."""

from __future__ import annotations

import time

import httpx

from tests.gateway_proc import Gateway
from tests.http_helpers import new_agent


def _ledger(gateway: Gateway, name: str, count: int) -> list[dict[str, object]]:
    with gateway.admin() as admin:
        deadline = time.monotonic() + 10
        while True:
            entries: list[dict[str, object]] = admin.get(
                f"/v1/agents/{name}/ledger").json()["entries"]
            if len(entries) >= count:
                return entries
            assert time.monotonic() < deadline, "the writer did not commit within 10 s"
            time.sleep(0.05)


def test_shadow_limits_object_is_validated_shown_and_removed(gateway: Gateway) -> None:
    name, _ = new_agent(gateway, "10", "shadowlim")
    path = f"/v1/agents/{name}/limits"
    with gateway.admin() as admin:
        patched = admin.patch(path, json={"per_call": "1", "shadow": {
            "per_call": "0.04", "daily": "0.5", "calls": {"per_day": 3},
            "categories": {"llm": {"hourly": "1"}}, "require_task": True}})
        assert patched.status_code == 200, patched.text
        shadow = patched.json()["shadow"]
        assert (shadow["per_call"], shadow["daily"], shadow["calls"]) == ("0.04", "0.5",
                                                                          {"per_day": 3})
        assert shadow["categories"] == {"llm": {"hourly": "1"}} and shadow["require_task"]
        assert "low_balance" not in shadow and patched.json()["per_call"] == "1"
        assert admin.get(path).json()["shadow"] == shadow
        merged = admin.patch(path, json={"shadow": {"daily": None}}).json()["shadow"]
        assert merged["daily"] is None and merged["per_call"] == "0.04"
        for bad, field in (({"shadow": {"shadow": {"daily": "1"}}}, "shadow.shadow"),
                           ({"shadow": {"daily": "-1"}}, "shadow.daily"),
                           ({"shadow": {"calls": {"per_day": 0}}}, "shadow.calls.per_day"),
                           ({"shadow": {"loop": {"repeats": 2, "window_s": 5}}}, "shadow.loop"),
                           ({"shadow": {"low_balance": "1"}}, "shadow.low_balance"),
                           ({"shadow": {"webhook_url": "https://x.example"}},
                            "shadow.webhook_url"),
                           ({"shadow": "1"}, "shadow")):
            before = admin.get(path).json()
            refused = admin.patch(path, json=bad)
            assert refused.status_code == 422, (bad, refused.text)
            assert (refused.json()["error"], refused.json()["field"]) == ("invalid_request",
                                                                          field)
            assert admin.get(path).json() == before
        cleared = admin.patch(path, json={"shadow": None}).json()
        assert "shadow" not in cleared and cleared["per_call"] == "1"


def test_a_shadow_refusal_succeeds_is_marked_and_summed(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "10", "shadowed")
    plain, plain_key = new_agent(gateway, "10", "plain")
    with gateway.admin() as admin:
        assert admin.patch(f"/v1/agents/{name}/limits", json={"shadow": {
            "per_call": "0.04", "calls": {"per_day": 2}}}).status_code == 200
    answers = []
    for who in (key, plain_key):
        with gateway.agent(who) as agent:
            answers.append([agent.post("/v1/charge", json={"tool": tool}) for tool in
                            ("email_send", "web_search", "email_send", "email_send")])
    for mine, theirs in zip(*answers, strict=True):
        assert mine.status_code == theirs.status_code == 200
        strip = {"charge_id": ""}
        assert mine.json() | strip == theirs.json() | strip
    # email_send 0.02, web_search 0.05 (over the shadow per_call), then the third and
    # fourth calls of the day (over the shadow calls per_day).
    entries = _ledger(gateway, name, 5)
    charges = [e for e in reversed(entries) if e["kind"] == "charge"]
    assert [e["shadow_refusal"] for e in charges] == [None, "per_call", "calls_per_day",
                                                      "calls_per_day"]
    assert all(e["shadow_refusal"] is None for e in _ledger(gateway, plain, 5))
    with gateway.agent(key) as agent:
        own = agent.get(f"/v1/agents/{name}/shadow")
        assert own.status_code == 200, own.text
        assert own.json() == {"agent": name, "refusals": {
            "calls_per_day": {"count": 2, "amount": "0.04"},
            "per_call": {"count": 1, "amount": "0.05"}},
            "total": {"count": 3, "amount": "0.09"}}
        assert agent.get(f"/v1/agents/{plain}/shadow").status_code == 403
    with gateway.admin() as admin:
        assert admin.get(f"/v1/agents/{plain}/shadow").json() == {
            "agent": plain, "refusals": {}, "total": {"count": 0, "amount": "0"}}
        assert admin.get("/v1/agents/nobody-here/shadow").status_code == 404
    metrics = httpx.get(gateway.url + "/metrics").text
    for limit in ("per_call", "calls_per_day"):
        assert f'iou_shadow_refusals_total{{limit="{limit}"}}' in metrics
    assert name not in metrics


def test_an_enforced_refusal_is_unchanged_by_shadow(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "10", "both")
    with gateway.admin() as admin:
        assert admin.patch(f"/v1/agents/{name}/limits", json={
            "per_call": "0.03", "shadow": {"per_call": "0.01"}}).status_code == 200
    with gateway.agent(key) as agent:
        over = agent.post("/v1/charge", json={"tool": "web_search"})
        assert over.status_code == 403 and over.json()["limit"] == "per_call"
        assert agent.get("/v1/balance").json()["balance"] == "10"
        assert agent.get(f"/v1/agents/{name}/shadow").json()["total"] == {"count": 0,
                                                                          "amount": "0"}
