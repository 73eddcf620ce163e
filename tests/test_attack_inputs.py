"""Attack: bad inputs on today's routes answer the contract's 422, never a 500.

Found from outside: a debit whose required ``reason`` is JSON null passed the field check
(a null read as absent-but-optional) and tripped an assertion: 500, and the worker dropped
the keep-alive connection."""

from __future__ import annotations

import uuid

from tests.gateway_proc import Gateway


def _agent(gw: Gateway) -> str:
    name = f"atk-in-{uuid.uuid4().hex[:8]}"
    with gw.admin() as admin:
        r = admin.post("/v1/agents", json={"name": name, "grant": "5"})
    assert r.status_code == 201, r.text
    return name


def test_debit_with_a_null_reason_is_422_and_writes_nothing(gateway: Gateway) -> None:
    name = _agent(gateway)
    with gateway.admin() as admin:
        for reason in (None, True, "", 5):
            r = admin.post(f"/v1/agents/{name}/debit", json={"amount": "1", "reason": reason})
            assert r.status_code == 422, (reason, r.status_code, r.text)
            assert r.json()["error"] == "invalid_request" and r.json()["field"] == "reason"
        assert admin.get(f"/v1/agents/{name}").json()["balance"] == "5"
        kinds = [e["kind"] for e in admin.get(f"/v1/agents/{name}/ledger").json()["entries"]]
        assert "debit" not in kinds
