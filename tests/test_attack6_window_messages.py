"""The refusal of a rolling-hour, weekly or monthly cap reads as a sentence ("This week's
weekly cap ...", not "The this week's weekly cap ...") and names the category of a category
cap."""

from __future__ import annotations

import pytest

from tests.gateway_proc import Gateway
from tests.http_helpers import new_agent


@pytest.mark.parametrize("window", ["hourly", "weekly", "monthly"])
def test_a_window_refusal_message_is_a_sentence(gateway: Gateway, window: str) -> None:
    name, key = new_agent(gateway, grant="10")
    other, other_key = new_agent(gateway, grant="10")
    with gateway.admin() as admin:
        assert admin.patch(f"/v1/agents/{name}/limits",
                           json={window: "0.05"}).status_code == 200
        assert admin.patch(f"/v1/agents/{other}/limits",
                           json={"categories": {"llm": {window: "0.01"}}}).status_code == 200
    with gateway.agent(key) as agent:
        assert agent.post("/v1/charge", json={"tool": "web_search"}).status_code == 200
        agent_cap = agent.post("/v1/charge", json={"tool": "web_search"})
    with gateway.agent(other_key) as agent:
        category_cap = agent.post("/v1/holds", json={"tool": "llm_summarize",
                                                     "max_cost": "0.02"})
    assert agent_cap.status_code == 429 and agent_cap.json()["limit"] == window
    assert category_cap.status_code == 429
    assert category_cap.json()["limit"] == f"category_{window}"
    for refusal in (agent_cap.json(), category_cap.json()):
        message = refusal["message"]
        assert "The this" not in message, message
        assert message[0].isupper() and message.endswith("."), message
    assert "llm" in category_cap.json()["message"]
