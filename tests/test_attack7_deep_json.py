"""A compact JSON body nested a few hundred levels deep (within what the fast parser takes,
past Python's recursion limit for a walk of it) is the contract's 422 on its field, never a
500, and nothing is charged."""

from __future__ import annotations

import pytest

from tests.gateway_proc import Gateway
from tests.http_helpers import balance, new_agent

JSON = {"content-type": "application/json"}


def _nested(levels: int) -> bytes:
    return b'{"a":' * levels + b'"x"' + b"}" * levels


@pytest.mark.parametrize("levels", [600, 1000])
def test_deep_metadata_is_422_and_charges_nothing(gateway: Gateway, levels: int) -> None:
    _, key = new_agent(gateway)
    body = b'{"tool":"web_search","metadata":' + _nested(levels) + b"}"
    with gateway.agent(key) as agent:
        answer = agent.post("/v1/charge", content=body, headers=JSON)
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"] == "invalid_request"
        assert answer.json()["field"] == "metadata"
        batch = agent.post("/v1/charges", headers=JSON,
                           content=b'{"charges":[{"tool":"web_search","metadata":'
                                   + _nested(levels) + b"}]}")
        assert batch.status_code in (200, 422), batch.text
        if batch.status_code == 200:
            assert batch.json()["results"][0]["error"] == "invalid_request"
    assert balance(gateway, key) == "10"


def test_a_deep_body_on_an_admin_route_is_422(gateway: Gateway) -> None:
    name, _ = new_agent(gateway)
    with gateway.admin() as admin:
        answer = admin.patch(f"/v1/agents/{name}/limits", headers=JSON,
                             content=b'{"categories":' + _nested(600) + b"}")
    assert answer.status_code in (400, 422), answer.text
    assert answer.json()["error"] in ("invalid_request", "malformed_json")
