"""The OpenAPI document describes every limit the server takes: spend windows (hourly,
weekly, monthly), call caps, per-tool caps and shadow limits, in `PATCH .../limits` and in a
child's creation (whose `limits` may hold `shadow` too). Each body below is answered 200/201 by
the server and must validate against the document's request schema of its route, and a
field the server refuses must be refused by the schema too."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest

from tests.gateway_proc import Gateway
from tests.http_helpers import new_agent

WALLS: dict[str, Any] = {
    "hourly": "2", "weekly": "3", "monthly": "4",
    "calls": {"per_minute": 5, "per_hour": 50, "per_day": 500},
    "categories": {"llm": {"per_call": "1", "daily": "2", "hourly": "1", "weekly": "2",
                           "monthly": "3", "calls": {"per_day": 9}},
                   "tool": None},
    "tools": {"web_browse": {"per_call": "0.2", "calls": {"per_day": 10}},
              "gone": None, "calm": {"calls": None}},
}
SHADOW: dict[str, Any] = {"shadow": {
    "per_call": "0.5", "daily": "1", "hourly": "1", "weekly": "1", "monthly": "1",
    "require_task": True, "calls": {"per_day": 3},
    "categories": {"llm": {"daily": "1", "calls": {"per_hour": 2}}},
    "tools": {"web_browse": {"per_call": "0.1", "calls": {"per_minute": 1}}}}}
REFUSED: list[dict[str, Any]] = [
    {"tools": {"x": {"daily": "1"}}}, {"shadow": {"loop": None}},
    {"shadow": {"low_balance": "1"}}, {"calls": {"per_week": 1}},
    {"calls": {"per_day": 0}}, {"categories": {"llm": {"calls": {"per_week": 1}}}}]


def _schema(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    body = document["paths"][path][method]["requestBody"]["content"]["application/json"]
    return {**body["schema"], "components": document["components"]}


def _validate(body: dict[str, Any], schema: dict[str, Any]) -> None:
    jsonschema_rs.Draft202012Validator(schema).validate(body)


@pytest.fixture(scope="module")
def document(gateway: Gateway) -> dict[str, Any]:
    with gateway.admin() as admin:
        found: dict[str, Any] = admin.get("/openapi.json").json()
    return found


@pytest.mark.parametrize("body", [WALLS, SHADOW, {**WALLS, **SHADOW}])
def test_limits_the_server_takes_validate(gateway: Gateway, document: dict[str, Any],
                                          body: dict[str, Any]) -> None:
    name, _ = new_agent(gateway, prefix="walls")
    with gateway.admin() as admin:
        answer = admin.patch(f"/v1/agents/{name}/limits", json=body)
    assert answer.status_code == 200, answer.text
    _validate(body, _schema(document, "patch", "/v1/agents/{agent}/limits"))


def test_a_child_with_walls_and_shadow_limits_validates(gateway: Gateway,
                                                        document: dict[str, Any]) -> None:
    parent, _ = new_agent(gateway, prefix="parent")
    limits = {"hourly": "1", "calls": {"per_day": 5}, "tools": {"web_browse": {
        "calls": {"per_day": 2}}}, "shadow": {"daily": "0.5", "calls": {"per_hour": 1}}}
    with gateway.admin() as admin:
        body: dict[str, Any] = {"name": f"{parent}-kid", "amount": "1", "limits": limits}
        answer = admin.post(f"/v1/agents/{parent}/children", json=body)
        if answer.status_code == 422 and "partition" in answer.json()["message"]:
            body["name"] = answer.json()["message"].split("'")[1]  # the name it suggests
            answer = admin.post(f"/v1/agents/{parent}/children", json=body)
    assert answer.status_code == 201, answer.text
    _validate(body, _schema(document, "post", "/v1/agents/{agent}/children"))


@pytest.mark.parametrize("body", REFUSED)
def test_limits_the_server_refuses_do_not_validate(gateway: Gateway, document: dict[str, Any],
                                                   body: dict[str, Any]) -> None:
    name, _ = new_agent(gateway, prefix="refused")
    with gateway.admin() as admin:
        answer = admin.patch(f"/v1/agents/{name}/limits", json=body)
    assert answer.status_code == 422, answer.text
    with pytest.raises(jsonschema_rs.ValidationError):
        _validate(body, _schema(document, "patch", "/v1/agents/{agent}/limits"))
