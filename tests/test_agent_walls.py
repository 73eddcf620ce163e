"""GET /v1/agents/{agent} answers ``walls``: each wall beyond the balance its limits set,
with what it holds now (spent and held, or calls) and its cap, read only."""

from __future__ import annotations

from tests.gateway_proc import Gateway
from tests.http_helpers import new_agent


def test_agent_detail_shows_each_wall_with_its_usage(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "10", "walls")
    with gateway.admin() as admin:
        assert admin.get(f"/v1/agents/{name}").json()["walls"] == {}
        limits = {"hourly": "1", "weekly": "2", "monthly": "3",
                  "calls": {"per_minute": 50, "per_day": 100},
                  "categories": {"llm": {"hourly": "0.5", "calls": {"per_hour": 7}},
                                 "commerce": {"daily": "1"}},
                  "tools": {"web_browse": {"calls": {"per_day": 10}, "per_call": "0.2"},
                            "web_search": {"per_call": "0.1"}}}
        assert admin.patch(f"/v1/agents/{name}/limits", json=limits).status_code == 200
    with gateway.agent(key) as agent:
        for body in ({"tool": "web_browse"}, {"tool": "web_browse"}, {"tool": "web_search"},
                     {"tool": "llm_summarize", "cost": "0.03"}):
            assert agent.post("/v1/charge", json=body).status_code == 200
        held = agent.post("/v1/holds", json={"tool": "llm_summarize", "max_cost": "0.1"})
        assert held.status_code == 201, held.text
    with gateway.admin() as admin:
        before = admin.get(f"/v1/agents/{name}").json()
        walls = admin.get(f"/v1/agents/{name}").json()["walls"]
    assert walls == before["walls"]  # reading writes nothing
    spent_and_held = "0.42"  # 2 x 0.12 + 0.05 + 0.03 spent, 0.1 held
    assert walls == {
        "hourly": {"used": spent_and_held, "max": "1"},
        "weekly": {"used": spent_and_held, "max": "2"},
        "monthly": {"used": spent_and_held, "max": "3"},
        "calls": {"per_minute": {"used": 5, "max": 50}, "per_day": {"used": 5, "max": 100}},
        "categories": {"llm": {"hourly": {"used": "0.13", "max": "0.5"},
                               "calls": {"per_hour": {"used": 2, "max": 7}}}},
        "tools": {"web_browse": {"calls": {"per_day": {"used": 2, "max": 10}}}}}
