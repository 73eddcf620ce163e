"""Attack: an agent key must not point the gateway at a URL of its choosing.

The contract makes ``webhook_url`` the admin's (trusted: loopback included). An agent
creating a sub-agent with its own key could set the child's ``webhook_url`` and make the
gateway POST to any address it can reach (SSRF). Only the admin may set it there."""

from __future__ import annotations

import re
import uuid

from tests.gateway_proc import Gateway

HOOK = "http://127.0.0.1:9/hook"


def _agent(gw: Gateway) -> tuple[str, str]:
    name = f"atk-wh-{uuid.uuid4().hex[:8]}"
    with gw.admin() as admin:
        r = admin.post("/v1/agents", json={"name": name, "grant": "5"})
    assert r.status_code == 201, r.text
    return name, r.json()["api_key"]


def _child_name(gw: Gateway, key: str, parent: str) -> str:
    """A name in the parent's partition (the 422 for another name suggests one; an
    amount above the balance creates nothing when the name fits)."""
    with gw.agent(key) as client:
        r = client.post(f"/v1/agents/{parent}/children", json={"name": f"{parent}.kid",
                                                                "amount": "1000"})
    found = re.search(r"'([^']+)' does", r.json()["message"])
    return found[1] if found else f"{parent}.kid"


def test_agent_key_cannot_set_a_childs_webhook_url(gateway: Gateway) -> None:
    parent, key = _agent(gateway)
    name = _child_name(gateway, key, parent)
    body = {"name": name, "amount": "1", "limits": {"webhook_url": HOOK}}
    with gateway.agent(key) as client:
        r = client.post(f"/v1/agents/{parent}/children", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_request" and r.json()["field"] == "webhook_url"
    with gateway.admin() as admin:
        assert admin.get(f"/v1/agents/{name}").status_code == 404  # nothing created
        assert admin.get(f"/v1/agents/{parent}").json()["balance"] == "5"
        # The admin, trusted with URLs, may set it.
        made = admin.post(f"/v1/agents/{parent}/children", json=body)
        assert made.status_code == 201, made.text
        assert admin.get(f"/v1/agents/{name}/limits").json()["webhook_url"] == HOOK
