"""Invoking a free tool: call caps, the loop breaker and tasks count free calls too, so they
must stop a free call before it reaches the upstream, exactly as they stop a paid one (a free
tool was forwarded first and counted after: the 11th call of a 10-a-day monitor ran)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway_proc import Gateway
from tests.http_helpers import Recorded, new_agent, recording_handler, unique, upstream_server

UPSTREAM = Recorded()  # a free tool's upstream: 200 to everything, recording what reached it


@pytest.fixture(scope="module")
def free_tool(gateway: Gateway) -> Iterator[str]:
    with upstream_server(recording_handler(UPSTREAM)) as url:
        tool = unique("free").replace("-", "_")
        with gateway.admin() as admin:
            assert admin.put(f"/v1/tools/{tool}", json={
                "price": "0", "category": "tool", "upstream": url}).status_code == 200
        yield tool


def test_a_call_cap_stops_a_free_call_before_the_upstream(gateway: Gateway,
                                                          free_tool: str) -> None:
    name, key = new_agent(gateway, "10", "free")
    with gateway.admin() as admin:
        assert admin.patch(f"/v1/agents/{name}/limits", json={
            "tools": {free_tool: {"calls": {"per_day": 2}}}}).status_code == 200
    with gateway.agent(key) as agent:
        for i in range(2):
            ok = agent.post(f"/v1/tools/{free_tool}/invoke", json={"url": str(i)})
            assert ok.status_code == 200, ok.text
            assert ok.headers["x-iou-charge-id"]
        hits = UPSTREAM.count
        capped = agent.post(f"/v1/tools/{free_tool}/invoke", json={"url": "2"})
        assert capped.status_code == 429, capped.text
        assert capped.json()["limit"] == "calls_per_day"
        assert UPSTREAM.count == hits  # the 3rd call never ran
        assert agent.get("/v1/balance").json()["balance"] == "10"


def test_the_loop_breaker_stops_a_free_call_before_the_upstream(gateway: Gateway,
                                                                free_tool: str) -> None:
    name, key = new_agent(gateway, "10", "free")
    with gateway.admin() as admin:
        assert admin.patch(f"/v1/agents/{name}/limits", json={
            "loop": {"repeats": 1, "window_s": 60}}).status_code == 200
    with gateway.agent(key) as agent:
        assert agent.post(f"/v1/tools/{free_tool}/invoke", json={"q": 1}).status_code == 200
        hits = UPSTREAM.count
        looped = agent.post(f"/v1/tools/{free_tool}/invoke", json={"q": 1})
        assert looped.status_code == 429 and looped.json()["error"] == "loop_detected"
        assert UPSTREAM.count == hits


def test_a_closed_task_stops_a_free_call_before_the_upstream(gateway: Gateway,
                                                             free_tool: str) -> None:
    _, key = new_agent(gateway, "10", "free")
    with gateway.agent(key) as agent:
        task = agent.post("/v1/tasks", json={"budget": "1"}).json()["task_id"]
        assert agent.post(f"/v1/tasks/{task}/close").status_code == 200
        hits = UPSTREAM.count
        closed = agent.post(f"/v1/tools/{free_tool}/invoke", json={"q": 2},
                            headers={"x-iou-task": task})
        assert closed.status_code == 409 and closed.json()["error"] == "task_closed"
        assert UPSTREAM.count == hits
