"""Delegation over HTTP: POST /v1/agents/{agent}/children and /reclaim, who may call them,
their refusals, idempotency, and the SDK."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from gateway.metering.children import partition_name
from gateway.sdk import Client, Forbidden
from gateway.store.keys import partition_of
from tests.gateway_proc import ADMIN_TOKEN, Gateway
from tests.http_helpers import balance, error_of, new_agent, unique

PARTITIONS = 16  # the gateway's default IOU_PARTITIONS


def child_name(parent: str) -> str:
    name = partition_name(unique("kid"), partition_of(parent, PARTITIONS), PARTITIONS)
    assert name is not None
    return name


def test_a_parent_funds_a_child_and_reclaims_the_rest(gateway: Gateway) -> None:
    parent, key = new_agent(gateway, "10", "parent")
    kid = child_name(parent)
    with gateway.agent(key) as agent:
        made = agent.post(f"/v1/agents/{parent}/children", json={
            "name": kid, "amount": "3", "limits": {"per_call": "0.1", "daily": "1"}})
        assert made.status_code == 201, made.text
        body = made.json()
        assert (body["agent"], body["parent"], body["balance"], body["parent_balance"]) == (
            kid, parent, "3", "7")
        assert body["api_key"].startswith("iou_")
    with gateway.agent(body["api_key"]) as child:
        assert child.post("/v1/charge", json={"tool": "web_search"}).status_code == 200
        over = child.post("/v1/charge", json={"tool": "web_browse"})
        assert over.status_code == 403 and over.json()["limit"] == "per_call"
        own = child.post(f"/v1/agents/{kid}/reclaim", json={})
        assert error_of(own) == "forbidden"
    with gateway.agent(key) as agent:
        part = agent.post(f"/v1/agents/{kid}/reclaim", json={"amount": "1"},
                          headers={"Idempotency-Key": "rc-1"})
        assert part.status_code == 200, part.text
        assert (part.json()["amount"], part.json()["balance"]) == ("1", "1.95")
        again = agent.post(f"/v1/agents/{kid}/reclaim", json={"amount": "1"},
                           headers={"Idempotency-Key": "rc-1"})
        assert again.json()["entry_id"] == part.json()["entry_id"]
        rest = agent.post(f"/v1/agents/{kid}/reclaim")
        assert (rest.json()["amount"], rest.json()["balance"]) == ("1.95", "0")
    assert balance(gateway, key) == "9.95"
    with gateway.admin() as admin:
        deadline = time.monotonic() + 30  # the ledger writer's lag
        while True:
            ledger = admin.get(f"/v1/agents/{parent}/ledger").json()["entries"]
            if len(ledger) >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert [(e["kind"], e["amount"], e["ref"]) for e in ledger[:3]] == [
            ("transfer_in", "1.95", kid), ("transfer_in", "1", kid),
            ("transfer_out", "3", kid)]


def test_the_admin_creates_and_reclaims(gateway: Gateway) -> None:
    parent, _ = new_agent(gateway, "5", "parent")
    kid = child_name(parent)
    with gateway.admin() as admin:
        made = admin.post(f"/v1/agents/{parent}/children", json={"name": kid, "amount": "2"},
                          headers={"Idempotency-Key": "kid-1"})
        assert made.status_code == 201, made.text
        replay = admin.post(f"/v1/agents/{parent}/children", json={"name": kid, "amount": "2"},
                            headers={"Idempotency-Key": "kid-1"})
        assert replay.status_code == 201 and replay.json()["api_key"] is None
        assert replay.json()["key_id"] == made.json()["key_id"]
        assert admin.get(f"/v1/agents/{parent}").json()["balance"] == "3"
        done = admin.post(f"/v1/agents/{kid}/reclaim")
        assert done.status_code == 200 and done.json()["amount"] == "2"
        top = admin.post(f"/v1/agents/{parent}/reclaim")
        assert top.status_code == 404 and error_of(top) == "not_found"
        family = admin.get(f"/v1/agents/{parent}/children").json()
        assert family["parent"] is None
        assert [(c["agent"], c["balance"]) for c in family["children"]] == [(kid, "0")]
        assert admin.get(f"/v1/agents/{kid}").json()["parent"] == parent
        assert admin.get(f"/v1/agents/{kid}/children").json() == {
            "agent": kid, "parent": parent, "children": []}


def test_refusals(gateway: Gateway) -> None:
    parent, key = new_agent(gateway, "1", "parent")
    _other, other_key = new_agent(gateway, "1", "other")
    kid = child_name(parent)
    url = f"/v1/agents/{parent}/children"
    with gateway.agent(key) as agent:
        poor = agent.post(url, json={"name": kid, "amount": "1.000001"})
        assert poor.status_code == 402 and error_of(poor) == "balance_insufficient"
        wrong = kid + "x"
        while partition_of(wrong, PARTITIONS) == partition_of(parent, PARTITIONS):
            wrong += "x"
        misplaced = agent.post(url, json={"name": wrong, "amount": "0.1"})
        assert misplaced.status_code == 422 and misplaced.json()["field"] == "name"
        assert agent.post(url, json={"name": kid, "amount": "0"}).json()["field"] == "amount"
        assert agent.post(url, json={"amount": "0.1"}).json()["field"] == "name"
        taken = agent.post(url, json={"name": kid, "amount": "0.1", "limits": {"bogus": 1}})
        assert taken.status_code == 422
    with gateway.admin() as admin:
        assert admin.patch(f"/v1/agents/{parent}/limits", json={"daily": "1"}).status_code == 200
    with gateway.agent(key) as agent:
        loose = agent.post(url, json={"name": kid, "amount": "0.1", "limits": {"daily": "2"}})
        assert loose.status_code == 422 and loose.json()["field"] == "daily"
        lifted = agent.post(url, json={"name": kid, "amount": "0.1", "limits": {"daily": None}})
        assert lifted.status_code == 422
    with gateway.agent(other_key) as stranger:
        assert error_of(stranger.post(url, json={"name": kid, "amount": "0.1"})) == "forbidden"
    with gateway.admin() as admin:
        listed = {a["agent"] for a in admin.get("/v1/agents", params={"limit": 1000}).json()[
            "agents"]}
        assert kid not in listed
    assert balance(gateway, key) == "1" and balance(gateway, other_key) == "1"


def test_the_sdk_creates_and_reclaims(gateway: Gateway) -> None:
    parent, key = new_agent(gateway, "10", "parent")
    _other, other_key = new_agent(gateway, "1", "other")
    kid = child_name(parent)
    with Client(gateway.url, key) as agent:
        child = agent.create_child(parent, kid, "2.5", limits={"per_call": "0.5"})
        assert (child.agent, child.parent, child.balance) == (kid, parent, Decimal("2.5"))
        with Client(gateway.url, child.api_key) as c:
            assert c.charge("web_search").balance == Decimal("2.45")
        back = agent.reclaim(kid, "0.45")
        assert (back.amount, back.balance) == (Decimal("0.45"), Decimal("2"))
    with Client(gateway.url, other_key) as stranger, pytest.raises(Forbidden):
        stranger.reclaim(kid)
    with Client(gateway.url, ADMIN_TOKEN) as admin:
        assert admin.reclaim(kid).amount == Decimal("2")
    assert balance(gateway, key) == "9.95"
