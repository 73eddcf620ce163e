"""Refunds and debits over HTTP: the routes, their refusals, idempotency, the ledger rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest

from gateway.sdk import BalanceInsufficient, Client, InvalidRequest
from tests.gateway_proc import ADMIN_TOKEN, Gateway
from tests.http_helpers import balance, error_of, new_agent


def test_refund_a_charge_partly_then_whole(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "10", "refund")
    with gateway.agent(key) as agent:
        charge = agent.post("/v1/charge", json={"tool": "llm_summarize", "cost": "1"}).json()
        assert balance(gateway, key) == "9"
        as_agent = agent.post(f"/v1/charges/{charge['charge_id']}/refund", json={})
        assert error_of(as_agent) == "forbidden"
    url = f"/v1/charges/{charge['charge_id']}/refund"
    with gateway.admin() as admin:
        part = admin.post(url, json={"amount": "0.3", "reason": "bad answer"},
                          headers={"Idempotency-Key": "r-1"})
        assert part.status_code == 200, part.text
        body = part.json()
        assert (body["charge_id"], body["amount"], body["balance"]) == (
            charge["charge_id"], "0.3", "9.3")
        again = admin.post(url, json={"amount": "0.3", "reason": "bad answer"},
                           headers={"Idempotency-Key": "r-1"})
        assert again.status_code == 200 and again.json()["refund_id"] == body["refund_id"]
        conflict = admin.post(url, json={"amount": "0.2"}, headers={"Idempotency-Key": "r-1"})
        assert error_of(conflict) == "idempotency_conflict"
        over = admin.post(url, json={"amount": "0.700001"})
        assert over.status_code == 422 and over.json()["field"] == "amount"
        rest = admin.post(url)  # no body: what is left
        assert rest.status_code == 200 and rest.json()["amount"] == "0.7"
        assert error_of(admin.post(url, json={})) == "invalid_request"
        assert balance(gateway, key) == "10"
        ledger = ledger_when(admin, name, "refund", 2)
        assert [(e["amount"], e["ref"], e["reason"]) for e in ledger["entries"]] == [
            ("0.7", charge["charge_id"], None), ("0.3", charge["charge_id"], "bad answer")]
        assert agent_spent_today(admin, name) == "0"


def ledger_when(admin: httpx.Client, name: str, kind: str, count: int) -> dict[str, Any]:
    """The agent's ledger page of ``kind`` once it has ``count`` rows (the writer's lag)."""
    deadline = time.monotonic() + 30
    while True:
        page: dict[str, Any] = admin.get(f"/v1/agents/{name}/ledger",
                                         params={"kind": kind}).json()
        if len(page["entries"]) >= count or time.monotonic() > deadline:
            return page
        time.sleep(0.1)


def agent_spent_today(admin: httpx.Client, name: str) -> str:
    value: str = admin.get(f"/v1/agents/{name}").json()["spent_today"]
    return value


def test_refund_a_capture_and_a_batch_item(gateway: Gateway) -> None:
    _name, key = new_agent(gateway, "10", "refund")
    with gateway.agent(key) as agent:
        hold = agent.post("/v1/holds", json={"tool": "llm_summarize", "max_cost": "0.5"}).json()
        capture = agent.post(f"/v1/holds/{hold['hold_id']}/capture", json={"cost": "0.4"}).json()
        batch = agent.post("/v1/charges", json={"charges": [{"tool": "web_search"},
                                                            {"tool": "buy"}]}).json()
    with gateway.admin() as admin:
        first = admin.post(f"/v1/charges/{capture['charge_id']}/refund", json={})
        assert first.json()["amount"] == "0.4", first.text
        item = batch["results"][1]["charge_id"]
        second = admin.post(f"/v1/charges/{item}/refund", json={"amount": "1"})
        assert second.status_code == 200 and second.json()["amount"] == "1"
        assert error_of(admin.post(f"/v1/charges/{hold['hold_id']}/refund")) == "not_found"
    assert balance(gateway, key) == "9.45"


def test_refund_refusals(gateway: Gateway) -> None:
    _name, key = new_agent(gateway, "10", "refund")
    with gateway.agent(key) as agent:
        charge = agent.post("/v1/charge", json={"tool": "web_search"}).json()
    url = f"/v1/charges/{charge['charge_id']}/refund"
    with gateway.admin() as admin:
        missing = admin.post("/v1/charges/0190aaaa-0000-7000-8000-000000000000/refund")
        assert missing.status_code == 404 and error_of(missing) == "not_found"
        assert error_of(admin.post("/v1/charges/nonsense/refund")) == "not_found"
        for bad, field in (({"amount": "-1"}, "amount"), ({"amount": "0"}, "amount"),
                           ({"amount": "1e3"}, "amount"), ({"reason": 5}, "reason"),
                           ({"reason": "x" * 257}, "reason"), ({"other": 1}, "other")):
            refused = admin.post(url, json=bad)
            assert refused.status_code in (400, 422), (bad, refused.text)
            if field is not None:
                assert refused.json()["field"] == field, bad
    assert balance(gateway, key) == "9.95"


def test_debit(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "1", "debit")
    url = f"/v1/agents/{name}/debit"
    with gateway.admin() as admin:
        done = admin.post(url, json={"amount": "0.4", "reason": "duplicate grant"},
                          headers={"Idempotency-Key": "d-1"})
        assert done.status_code == 200, done.text
        assert (done.json()["balance"], done.json()["amount"]) == ("0.6", "0.4")
        again = admin.post(url, json={"amount": "0.4", "reason": "duplicate grant"},
                           headers={"Idempotency-Key": "d-1"})
        assert again.json()["entry_id"] == done.json()["entry_id"]
        over = admin.post(url, json={"amount": "0.600001", "reason": "x"})
        assert over.status_code == 402 and error_of(over) == "balance_insufficient"
        assert over.json()["balance"] == "0.6"
        assert admin.post(url, json={"amount": "0.1"}).json()["field"] == "reason"
        assert admin.post(url, json={"reason": "x"}).json()["field"] == "amount"
        assert error_of(admin.post("/v1/agents/nobody-here/debit",
                                   json={"amount": "1", "reason": "x"})) == "not_found"
        ledger = ledger_when(admin, name, "debit", 1)
        assert [(e["amount"], e["reason"]) for e in ledger["entries"]] == [
            ("0.4", "duplicate grant")]
    with gateway.agent(key) as agent:
        assert error_of(agent.post(url, json={"amount": "0.1", "reason": "x"})) == "forbidden"
    assert balance(gateway, key) == "0.6"


def iou(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", "--url", gw.url,
                           "--token", ADMIN_TOKEN, *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_iou_refund_and_debit(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "10", "refund-cli")
    with gateway.agent(key) as agent:
        charge = agent.post("/v1/charge", json={"tool": "buy"}).json()
    done = iou(gateway, "--json", "refund", charge["charge_id"], "--amount", "0.5",
               "--reason", "wrong item")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["amount"] == "0.5"
    done = iou(gateway, "refund", charge["charge_id"])
    assert done.returncode == 0 and "refunded 1 of" in done.stdout, done.stderr
    done = iou(gateway, "--json", "refund", charge["charge_id"])
    assert done.returncode == 1 and json.loads(done.stderr)["field"] == "amount"
    done = iou(gateway, "debit", name, "2.5", "--reason", "duplicate grant")
    assert done.returncode == 0 and "balance 7.5 IOU" in done.stdout, done.stderr
    done = iou(gateway, "--json", "debit", name, "100", "--reason", "x")
    assert done.returncode == 1 and json.loads(done.stderr)["error"] == "balance_insufficient"
    assert iou(gateway, "debit", name, "1").returncode == 2  # --reason is required
    assert balance(gateway, key) == "7.5"


def test_sdk_refund_and_debit(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "10", "refund-sdk")
    with Client(gateway.url, key) as agent:
        charge = agent.charge("llm_summarize", cost=Decimal("0.4"))
    with Client(gateway.url, ADMIN_TOKEN) as admin:
        refund = admin.refund(charge.charge_id, "0.1", reason="slow")
        assert (refund.amount, refund.balance, refund.agent) == (
            Decimal("0.1"), Decimal("9.7"), name)
        assert admin.refund(charge.charge_id).amount == Decimal("0.3")
        with pytest.raises(InvalidRequest):
            admin.refund(charge.charge_id)
        debit = admin.debit(name, Decimal("1.5"), reason="correction")
        assert debit.balance == Decimal("8.5")
        with pytest.raises(BalanceInsufficient):
            admin.debit(name, 9, reason="too much")
