"""GET /v1/summary: the dashboard's agents table, paged, sorted and filtered server-side."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import httpx

from gateway.metering.agent_table import SORTS, AgentRow, AgentTable, totals_of
from tests.gateway_proc import Gateway
from tests.http_helpers import error_of, new_agent, unique


def summary(gw: Gateway, **params: str) -> dict[str, Any]:
    with gw.admin() as admin:
        response = admin.get("/v1/summary", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def settled(gw: Gateway, count: int, **params: str) -> dict[str, Any]:
    """The summary once it shows ``count`` matching agents (the table is rebuilt within
    its refresh age, 1 s for a store this small)."""
    deadline = time.monotonic() + 15
    while True:
        body = summary(gw, **params)
        if body["matched"] == count or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def make_agents(gw: Gateway, prefix: str, grants: list[str]) -> list[str]:
    with gw.admin() as admin:
        names = []
        for i, grant in enumerate(grants):
            name = f"{prefix}-{i}"
            assert admin.post("/v1/agents", json={"name": name, "grant": grant}
                              ).status_code == 201
            names.append(name)
    return names


def test_numbers_sort_as_numbers_and_pages_cover_every_row(gateway: Gateway) -> None:
    prefix = unique("sum")
    grants = ["9", "10", "100", "0.5", "2", "10", "0"]
    names = make_agents(gateway, prefix, grants)
    body = settled(gateway, len(names), q=prefix, sort="balance")
    balances = [Decimal(a["balance"]) for a in body["agents"]]
    assert balances == sorted(Decimal(g) for g in grants)  # "10" after "9", not before
    assert body["sort"] == "balance" and body["order"] == "asc" and body["position"] == 0
    for order in ("asc", "desc"):
        seen: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params = {"q": prefix, "sort": "balance", "order": order, "limit": "2"}
            page = summary(gateway, **params, **({"cursor": cursor} if cursor else {}))
            assert page["position"] == len(seen)
            seen += page["agents"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        keys = [(Decimal(a["balance"]), a["agent"]) for a in seen]
        assert keys == sorted(keys, reverse=order == "desc")
        assert sorted(a["agent"] for a in seen) == sorted(names)  # each row exactly once


def test_filters_and_totals(gateway: Gateway) -> None:
    prefix = unique("tot")
    names = make_agents(gateway, prefix, ["3", "4.25"])
    with gateway.admin() as admin:
        assert admin.post(f"/v1/agents/{names[1]}/freeze").status_code == 200
    frozen = settled(gateway, 1, q=prefix, frozen="true")
    assert [a["agent"] for a in frozen["agents"]] == [names[1]]
    assert frozen["agents"][0]["frozen"] is True
    assert frozen["agents"][0]["low_balance"] == "1" and frozen["agents"][0]["daily"] is None
    both = settled(gateway, 2, q=prefix)
    assert [a["agent"] for a in both["agents"]] == names  # by name by default
    everyone = summary(gateway, limit="1000")
    totals = everyone["totals"]
    assert totals["agents"] == len(everyone["agents"]) == everyone["matched"]
    assert Decimal(totals["balance"]) == sum(Decimal(a["balance"]) for a in everyone["agents"])
    assert totals["frozen"] == sum(a["frozen"] for a in everyone["agents"])
    assert summary(gateway, q=unique("nobody"))["agents"] == []


def test_spent_today_and_held_are_sortable(gateway: Gateway) -> None:
    prefix = unique("spend")
    names = make_agents(gateway, prefix, ["5", "5"])
    with gateway.admin() as admin:
        keys = [admin.post(f"/v1/agents/{n}/keys").json()["api_key"] for n in names]
    for key, count in zip(keys, (1, 3), strict=True):
        for _ in range(count):
            assert httpx.post(gateway.url + "/v1/charge", json={"tool": "web_search"},
                              headers={"authorization": f"Bearer {key}"}).status_code == 200
    deadline = time.monotonic() + 15
    while True:
        body = summary(gateway, q=prefix, sort="spent_today", order="desc")
        if [a["spent_today"] for a in body["agents"]] == ["0.15", "0.05"]:
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.2)
    assert [a["agent"] for a in body["agents"]] == [names[1], names[0]]
    assert summary(gateway, q=prefix, sort="held")["matched"] == 2


def test_a_new_agent_shows_at_once(gateway: Gateway) -> None:
    """Created through this worker, an agent is on the very next page of the table (the
    table is rebuilt on the next read, not within its refresh age)."""
    summary(gateway)  # a table exists now
    name = unique("shown")
    with gateway.admin() as admin:
        assert admin.post("/v1/agents", json={"name": name, "grant": "3"}).status_code == 201
    rows = summary(gateway, q=name)["agents"]
    assert [(r["agent"], r["balance"]) for r in rows] == [(name, "3")]


def test_refusals(gateway: Gateway) -> None:
    _, key = new_agent(gateway, "1", "sumkey")
    bad = [{"limit": "0"}, {"limit": "1001"}, {"limit": "x"}, {"sort": "name"},
           {"order": "up"}, {"frozen": "yes"}, {"q": "UPPER"}, {"cursor": "nope"},
           {"cursor": "1.Bad"}, {"page": "2"}]
    with gateway.admin() as admin:
        for params in bad:
            response = admin.get("/v1/summary", params=params)
            assert response.status_code == 422, (params, response.text)
            assert error_of(response) == "invalid_request"
            assert response.json()["field"] == next(iter(params))
        twice = admin.get("/v1/summary?sort=held&sort=balance")
        assert twice.status_code == 422 and twice.json()["field"] == "sort"
    with gateway.agent(key) as agent:
        assert error_of(agent.get("/v1/summary")) == "forbidden"
    assert httpx.get(gateway.url + "/v1/summary").status_code == 401


def test_pages_of_a_view_with_ties_cover_every_row_once() -> None:
    rows = [AgentRow(f"a{i:03d}", (i * 37) % 7 * 1_000_000, 0, i % 2 == 0, 0, 0, i % 3)
            for i in range(101)]
    table = AgentTable(rows, 0, 0.0, totals_of(rows))
    for sort in SORTS:
        for frozen in (None, True):
            view = table.view(sort, "", frozen)
            for descending in (False, True):
                seen: list[AgentRow] = []
                cursor = None
                while True:
                    page, position, cursor = view.page(descending, 9, cursor)
                    assert position == len(seen)
                    seen += page
                    if cursor is None:
                        break
                expected = sorted(view.rows, key=lambda r: (
                    {"agent": 0, "balance": r.balance_micros, "held": r.held_micros,
                     "spent_today": r.spent_today_micros}[sort], r.agent), reverse=descending)
                assert seen == expected
    assert table.totals.agents == 101 and table.totals.frozen == 51
