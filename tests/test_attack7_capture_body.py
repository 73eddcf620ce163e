"""A capture's body is optional, as its one field is for a fixed-price tool (the hold's
price is captured): `POST /v1/holds/{id}/capture` without a body captures, as refund,
reclaim and a task's close do without theirs; a variable-price hold still needs its cost."""

from __future__ import annotations

from tests.gateway_proc import Gateway
from tests.http_helpers import balance, new_agent


def test_a_fixed_price_hold_captures_without_a_body(gateway: Gateway) -> None:
    _, key = new_agent(gateway)
    with gateway.agent(key) as agent:
        hold = agent.post("/v1/holds", json={"tool": "web_search"}).json()
        captured = agent.post(f"/v1/holds/{hold['hold_id']}/capture")
        assert captured.status_code == 200, captured.text
        assert captured.json()["cost"] == "0.05"
        again = agent.post(f"/v1/holds/{hold['hold_id']}/capture",
                           headers={"content-type": "application/json"})
        assert again.status_code == 409, again.text  # captured already
    assert balance(gateway, key) == "9.95"


def test_a_variable_price_hold_still_needs_its_cost(gateway: Gateway) -> None:
    _, key = new_agent(gateway)
    with gateway.agent(key) as agent:
        hold = agent.post("/v1/holds", json={"tool": "llm_summarize", "max_cost": "0.5"})
        refused = agent.post(f"/v1/holds/{hold.json()['hold_id']}/capture")
        assert refused.status_code == 422, refused.text
        assert refused.json()["field"] == "cost"
    assert balance(gateway, key) == "9.5"  # still held, nothing charged


def test_openapi_says_the_capture_body_is_optional(gateway: Gateway) -> None:
    with gateway.admin() as admin:
        document = admin.get("/openapi.json").json()
    capture = document["paths"]["/v1/holds/{hold_id}/capture"]["post"]
    assert capture["requestBody"]["required"] is False
