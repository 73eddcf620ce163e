"""The dashboard's walls beyond the balance: fill bars of what each set wall holds (hourly,
weekly, monthly, call caps; agent, category, tool) and the limits form that edits them, with
the server's validation errors shown on the field (Chromium, as tests/test_dashboard.py)."""

from __future__ import annotations

import httpx
from playwright.sync_api import Browser, Page, expect

from tests.gateway_proc import ADMIN_TOKEN, Gateway
from tests.http_helpers import new_agent
from tests.test_dashboard import ARTIFACTS, browser, open_page, sign_in

__all__ = ["browser"]  # the module's Chromium, shared


def test_fill_bars_of_the_walls(browser: Browser, gateway: Gateway) -> None:
    name, key = new_agent(gateway, "5", "dash-walls")
    admin = {"authorization": "Bearer " + ADMIN_TOKEN}
    agent = {"authorization": f"Bearer {key}"}
    httpx.patch(f"{gateway.url}/v1/agents/{name}/limits", headers=admin, json={
        "hourly": "1", "calls": {"per_day": 10},
        "categories": {"llm": {"weekly": "0.5"}},
        "tools": {"web_browse": {"calls": {"per_day": 2}}}}).raise_for_status()
    for body in ({"tool": "web_browse"}, {"tool": "web_browse"},
                 {"tool": "llm_summarize", "cost": "0.3"}):
        httpx.post(gateway.url + "/v1/charge", headers=agent, json=body).raise_for_status()
    page, errors, foreign = open_page(browser, gateway, 1280, 800)
    sign_in(page)
    page.goto(gateway.url + f"/dashboard/#/agent/{name}")
    bars = {"hourly": ("0.54 / 1", "54% of the hourly cap", ""),
            "calls.per_day": ("3 / 10", "30% of the calls per day cap", ""),
            "categories.llm.weekly": ("0.3 / 0.5", "60% of the llm weekly cap", ""),
            "tools.web_browse.calls.per_day": ("2 / 2", "100% of the web_browse calls per day cap",
                                               "full")}
    for wall, (text, label, cls) in bars.items():
        row = page.locator(f"#walls tr[data-wall='{wall}']")
        expect(row).to_contain_text(text)
        expect(row.locator("[role=img]")).to_have_attribute("aria-label", label)
        if cls:
            expect(row.locator(f".bar .{cls}")).to_have_count(1)
    expect(page.locator("#walls tr")).to_have_count(4)  # only the walls that are set
    # A charge moves the bars on the next poll.
    httpx.post(gateway.url + "/v1/charge", headers=agent,
               json={"tool": "web_search"}).raise_for_status()
    expect(page.locator("#walls tr[data-wall='calls.per_day']")).to_contain_text(
        "4 / 10", timeout=15000)
    page.screenshot(path=ARTIFACTS / "agent-walls-1280.png", full_page=True)
    assert errors == [] and foreign == []
    page.close()


def test_the_limits_form_edits_the_walls(browser: Browser, gateway: Gateway) -> None:
    name, _ = new_agent(gateway, "5", "dash-wallform")
    admin = {"authorization": "Bearer " + ADMIN_TOKEN}
    limits_url = f"{gateway.url}/v1/agents/{name}/limits"
    httpx.patch(limits_url, headers=admin, json={
        "weekly": "9", "categories": {"llm": {"hourly": "0.4"}},
        "tools": {"web_browse": {"calls": {"per_day": 10}}}}).raise_for_status()
    page, errors, foreign = open_page(browser, gateway, 1280, 800)
    sign_in(page)
    page.goto(gateway.url + f"/dashboard/#/agent/{name}")
    form = page.locator("#limits")
    expect(form.locator("input[name=weekly]")).to_have_value("9")  # the form shows the walls
    cat = form.locator(".cat").first
    expect(cat.locator(".cat-name")).to_have_value("llm")
    expect(cat.locator(".cat-hr")).to_have_value("0.4")
    tool = form.locator(".tool").first
    expect(tool.locator(".tool-name")).to_have_value("web_browse")
    expect(tool.locator(".tool-nd")).to_have_value("10")

    _edit_every_wall(page)
    page.click("#limits button[type=submit]")
    expect(page.locator("[role=status]")).to_have_text("Limits saved")
    saved = httpx.get(limits_url, headers=admin).json()
    assert (saved["hourly"], saved["weekly"], saved["calls"]) == ("0.5", "9", {"per_minute": 30})
    assert saved["categories"]["llm"] == {"hourly": "0.4", "calls": {"per_day": 40}}
    assert saved["tools"] == {"web_browse": {"calls": {"per_day": 12}},
                              "web_search": {"per_call": "0.1", "calls": {"per_hour": 7}}}
    assert saved["loop"] == {"repeats": 5, "window_s": 60, "action": "freeze"}
    assert saved["require_task"] is True

    # A bad value: the server's message, on the field it names; nothing saved.
    tool.locator(".tool-nd").fill("2.5")
    page.click("#limits button[type=submit]")
    status = page.locator("[role=status]")
    expect(status).to_have_class("error")
    expect(status).to_contain_text("tools.web_browse.calls.per_day")
    expect(tool.locator(".tool-nd")).to_have_attribute("aria-invalid", "true")
    assert httpx.get(limits_url, headers=admin).json() == saved
    # Cleared fields remove their walls.
    tool.locator(".tool-nd").fill("12")
    form.locator("input[name=hourly]").fill("")
    form.locator("input[name=loop_repeats]").fill("")
    page.click("#limits button[type=submit]")  # a loop without its repeats: refused
    expect(status).to_have_text("loop.repeats is required.")
    expect(form.locator("input[name=loop_repeats]")).to_have_attribute("aria-invalid", "true")
    form.locator("input[name=loop_window_s]").fill("")
    form.locator("input[name=require_task]").uncheck()
    page.click("#limits button[type=submit]")
    expect(page.locator("[role=status]")).to_have_text("Limits saved")
    expect(tool.locator(".tool-nd")).not_to_have_attribute("aria-invalid", "true")
    cleared = httpx.get(limits_url, headers=admin).json()
    assert "hourly" not in cleared and "loop" not in cleared and "require_task" not in cleared
    page.screenshot(path=ARTIFACTS / "agent-wall-limits-1280.png", full_page=True)
    # The browser logs each refused PATCH (2 here) as a failed load; nothing else.
    assert [e for e in errors if "status of 422" not in e] == [] and foreign == []
    assert len(errors) == 2, errors
    page.close()


def _edit_every_wall(page: Page) -> None:
    """Fill the form's walls: the agent's, a category's, a tool's, a new tool, the loop."""
    form = page.locator("#limits")
    form.locator("input[name=hourly]").fill("0.5")
    form.locator("input[name=calls_per_minute]").fill("30")
    form.locator(".cat").first.locator(".cat-nd").fill("40")
    form.locator(".tool").first.locator(".tool-nd").fill("12")
    page.click("text=Add tool")
    added = form.locator(".tool").nth(1)
    added.locator(".tool-name").fill("web_search")
    added.locator(".tool-pc").fill("0.1")
    added.locator(".tool-nh").fill("7")
    form.locator("input[name=loop_repeats]").fill("5")
    form.locator("input[name=loop_window_s]").fill("60")
    form.locator("select[name=loop_action]").select_option("freeze")
    form.locator("input[name=require_task]").check()
