"""The walls beyond the balance over HTTP: the limits object and the 429/403 refusals."""

from __future__ import annotations

import httpx

from tests.gateway_proc import Gateway
from tests.http_helpers import new_agent


def test_limits_object_merges_walls(gateway: Gateway) -> None:
    name, _ = new_agent(gateway, "10", "walls")
    with gateway.admin() as admin:
        patched = admin.patch(f"/v1/agents/{name}/limits", json={
            "hourly": "1", "weekly": "2.5", "calls": {"per_day": 50},
            "categories": {"llm": {"monthly": "3", "calls": {"per_hour": 4}}},
            "tools": {"web_browse": {"per_call": "0.2", "calls": {"per_day": 10}}}})
        assert patched.status_code == 200, patched.text
        body = patched.json()
        assert (body["hourly"], body["weekly"], "monthly" in body) == ("1", "2.5", False)
        assert body["calls"] == {"per_day": 50}
        assert body["categories"] == {"llm": {"monthly": "3", "calls": {"per_hour": 4}}}
        assert body["tools"] == {"web_browse": {"per_call": "0.2", "calls": {"per_day": 10}}}
        cleared = admin.patch(f"/v1/agents/{name}/limits",
                              json={"tools": {"web_browse": None}, "calls": None}).json()
        assert "tools" not in cleared and "calls" not in cleared
        for bad, field in (({"calls": {"per_day": "10"}}, "calls.per_day"),
                           ({"calls": {"per_day": 0}}, "calls.per_day"),
                           ({"calls": {"per_week": 1}}, "calls.per_week"),
                           ({"tools": {"x": {"hourly": "1"}}}, "tools.x.hourly"),
                           ({"hourly": "-1"}, "hourly")):
            refused = admin.patch(f"/v1/agents/{name}/limits", json=bad)
            assert refused.status_code == 422, (bad, refused.text)
            assert refused.json()["field"] == field


def test_refusals_carry_limit_and_retry_after(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "10", "walls")
    with gateway.admin() as admin:
        assert admin.patch(f"/v1/agents/{name}/limits", json={
            "weekly": "0.09", "tools": {"web_browse": {"calls": {"per_minute": 1}}}}
        ).status_code == 200
    with gateway.agent(key) as agent:
        assert agent.post("/v1/charge", json={"tool": "web_search"}).status_code == 200
        over = agent.post("/v1/charge", json={"tool": "web_search"})
        assert over.status_code == 429
        body = over.json()
        assert body["error"] == "limit_exceeded" and body["limit"] == "weekly"
        assert (body["max"], body["spent"], body["category"]) == ("0.09", "0.05", "tool")
        assert over.headers["Retry-After"] == str(body["retry_after_s"])
        assert 0 < body["retry_after_s"] <= 7 * 86400
        held = agent.post("/v1/holds", json={"tool": "web_search"})
        assert held.status_code == 429 and held.json()["limit"] == "weekly"
        with gateway.admin() as admin:
            admin.patch(f"/v1/agents/{name}/limits", json={"weekly": None})
        assert agent.post("/v1/charge", json={"tool": "web_browse"}).status_code == 200
        calls = agent.post("/v1/charge", json={"tool": "web_browse"})
        assert calls.status_code == 429
        assert calls.json() | {"retry_after_s": 0, "message": ""} == {
            "error": "limit_exceeded", "message": "", "limit": "calls_per_minute",
            "scope": "tool", "tool": "web_browse", "category": "tool", "max": 1,
            "retry_after_s": 0}
        assert 1 <= int(calls.headers["Retry-After"]) <= 60
        assert agent.get("/v1/balance").json()["balance"] == "9.83"
    # Refusals by limit in /metrics, with no per-agent label.
    metrics = httpx.get(gateway.url + "/metrics").text
    for limit in ("weekly", "calls_per_minute"):
        assert f'iou_charges_total{{category="tool",outcome="{limit}"}}' in metrics
    assert name not in metrics


def test_dotted_category_and_tool_names_take_every_cap(gateway: Gateway) -> None:
    """Names may hold dots (a-z 0-9 - _ .): the flat limit names must not split them."""
    name, _ = new_agent(gateway, "10", "walls")
    limits = {"categories": {"w.0i_": {"daily": "1", "hourly": "0.5",
                                       "calls": {"per_day": 3}},
                             "x.calls": {"per_call": "0.2"}},
              "tools": {"a.b.c": {"per_call": "0.3", "calls": {"per_minute": 2}}}}
    with gateway.admin() as admin:
        patched = admin.patch(f"/v1/agents/{name}/limits", json=limits)
        assert patched.status_code == 200, patched.text
        body = patched.json()
        assert body["categories"] == limits["categories"]
        assert body["tools"] == limits["tools"]
        assert admin.get(f"/v1/agents/{name}/limits").json() == body
        cleared = admin.patch(f"/v1/agents/{name}/limits", json={
            "categories": {"w.0i_": None, "x.calls": {"per_call": None}},
            "tools": {"a.b.c": None}})
        assert cleared.status_code == 200, cleared.text
        assert (cleared.json().get("categories", {}), cleared.json().get("tools", {})) == ({}, {})
