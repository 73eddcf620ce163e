"""The dashboard's shadow limits card in a real headless Chromium: the shadow caps beside
the enforced ones with their would-be refusals, and "Promote to enforced"."""

from __future__ import annotations

import httpx
from playwright.sync_api import Browser, expect

from tests.gateway_proc import Gateway
from tests.http_helpers import new_agent
from tests.test_dashboard import ARTIFACTS, browser, open_page, sign_in

__all__ = ["browser"]  # the module-scoped Chromium fixture of test_dashboard


def test_shadow_caps_beside_the_real_ones_and_promotion(browser: Browser,
                                                         gateway: Gateway) -> None:
    name, key = new_agent(gateway, "5", "dash-shadow")
    with gateway.admin() as admin:
        assert admin.patch(f"/v1/agents/{name}/limits", json={
            "per_call": "1", "shadow": {"per_call": "0.04", "calls": {"per_day": 2},
                                        "categories": {"llm": {"daily": "0.5"}}}}
        ).status_code == 200
    agent = {"authorization": f"Bearer {key}"}
    for tool in ("web_search", "email_send", "email_send"):  # 0.05, 0.02, 0.02
        httpx.post(gateway.url + "/v1/charge", headers=agent,
                   json={"tool": tool}).raise_for_status()
    page, errors, foreign = open_page(browser, gateway, 1280, 900)
    sign_in(page)
    page.goto(gateway.url + f"/dashboard/#/agent/{name}")
    per_call = page.locator("#shadow tr[data-shadow='per_call']")
    expect(per_call).to_contain_text("0.04")  # the shadow cap
    expect(per_call.locator("td").nth(1)).to_have_text("1")  # beside the enforced one
    expect(per_call.locator("td").nth(2)).to_have_text("1")  # one call over 0.04
    calls = page.locator("#shadow tr[data-shadow='calls.per_day']")
    expect(calls.locator("td").nth(2)).to_have_text("1")  # the third call of the day
    expect(calls.locator("td").nth(3)).to_have_text("0.02")
    expect(page.locator("#shadow tr[data-shadow='categories.llm.daily'] td").nth(1)
           ).to_have_text("-")
    page.screenshot(path=ARTIFACTS / "agent-shadow-1280.png", full_page=True)
    page.locator("#promote").click()
    expect(page.locator("#shadow-card")).to_contain_text("No shadow limits")
    with gateway.admin() as admin:
        limits = admin.get(f"/v1/agents/{name}/limits").json()
    assert "shadow" not in limits
    assert (limits["per_call"], limits["calls"], limits["categories"]) == (
        "0.04", {"per_day": 2}, {"llm": {"daily": "0.5"}})
    assert errors == [] and foreign == []
    page.close()
