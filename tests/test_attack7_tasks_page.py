"""`GET /v1/agents/{agent}/tasks` pages with a cursor, as the other list routes do: `limit`
per page, `next_cursor` (null on the last page) given back as `cursor`; following it lists
every task exactly once, newest first, also when tasks are opened between two pages."""

from __future__ import annotations

import httpx
import pytest

from gateway.metering.engine import Engine
from tests.gateway_proc import Gateway
from tests.helpers import T
from tests.http_helpers import new_agent


def _open(gw: Gateway, key: str, count: int) -> list[str]:
    with gw.agent(key) as agent:
        opened = [agent.post("/v1/tasks", json={"budget": "1"}) for _ in range(count)]
    assert all(r.status_code == 201 for r in opened), [r.text for r in opened]
    return [r.json()["task_id"] for r in opened]


def _pages(admin: httpx.Client, name: str, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params = {"limit": str(limit)} | ({"cursor": cursor} if cursor else {})
        answer = admin.get(f"/v1/agents/{name}/tasks", params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.append([t["task_id"] for t in body["tasks"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "the cursor moves on"


def test_following_the_cursor_lists_every_task_once_newest_first(gateway: Gateway) -> None:
    name, key = new_agent(gateway, prefix="paged")
    opened = _open(gateway, key, 7)
    with gateway.admin() as admin:
        pages = _pages(admin, name, 3)
        assert [len(p) for p in pages] == [3, 3, 1]
        listed = [t for p in pages for t in p]
        assert sorted(listed) == sorted(opened) and len(set(listed)) == 7
        whole = admin.get(f"/v1/agents/{name}/tasks").json()
        assert [t["task_id"] for t in whole["tasks"]] == listed  # the same order
        assert whole["next_cursor"] is None
        # Tasks opened between two pages do not shift the pages after the cursor.
        first = admin.get(f"/v1/agents/{name}/tasks", params={"limit": "4"}).json()
        _open(gateway, key, 2)
        rest = admin.get(f"/v1/agents/{name}/tasks",
                         params={"limit": "10", "cursor": first["next_cursor"]}).json()
        assert [t["task_id"] for t in first["tasks"] + rest["tasks"]] == listed


def test_the_agent_pages_its_own_tasks(gateway: Gateway) -> None:
    name, key = new_agent(gateway, prefix="ownpage")
    opened = _open(gateway, key, 3)
    with gateway.agent(key) as agent:
        first = agent.get(f"/v1/agents/{name}/tasks", params={"limit": "2"}).json()
        rest = agent.get(f"/v1/agents/{name}/tasks",
                         params={"cursor": first["next_cursor"]}).json()
    assert sorted(t["task_id"] for t in first["tasks"] + rest["tasks"]) == sorted(opened)


@pytest.mark.parametrize("cursor", ["", "x", "task_zz", "1.task_" + "0" * 31, "-1.a",
                                    "9" * 30 + ".task_" + "0" * 32, "1.task_" + "0" * 32 + "/"])
def test_a_bad_cursor_is_422_on_the_cursor(gateway: Gateway, cursor: str) -> None:
    name, _ = new_agent(gateway, prefix="badcursor")
    with gateway.admin() as admin:
        answer = admin.get(f"/v1/agents/{name}/tasks", params={"cursor": cursor})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "invalid_request"
    assert answer.json()["field"] == "cursor"


def test_the_openapi_document_describes_the_cursor(gateway: Gateway) -> None:
    with gateway.admin() as admin:
        document = admin.get("/openapi.json").json()
    route = document["paths"]["/v1/agents/{agent}/tasks"]["get"]
    assert {"limit", "cursor"} <= {p["name"] for p in route["parameters"]}
    answer = route["responses"]["200"]["content"]["application/json"]["schema"]
    assert "next_cursor" in answer["properties"]


async def test_tasks_opened_in_the_same_millisecond_page_once_each(engine: Engine) -> None:
    """Ties of creation time are ordered by id, so a cursor between two tasks of one
    millisecond still lists each of them exactly once."""
    await engine.create_agent("ties", 10 * T)
    opened = [(await engine.open_task("ties", T)).task_id for _ in range(5)]
    index = engine.agent_keys("ties").tasks()
    for task_id in opened:  # as if all five were opened in the same millisecond
        await engine.conn.call_or_raise(b"ZADD", index, b"1000", task_id.encode())
    listed: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = await engine.agent_tasks_page("ties", 2, cursor)
        listed += [t.task_id for t in page]
        if cursor is None:
            break
    assert listed == sorted(opened, reverse=True)
