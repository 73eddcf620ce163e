"""The dashboard in a real headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.gateway_proc import ADMIN_TOKEN, Gateway
from tests.http_helpers import new_agent, unique
from tests.mcp_helpers import mcp_upstream

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"
# Playwright's default of 5 s per expectation: what a card shows after the ledger writer and
# the card's poll took more than that on a loaded 2-core machine (CI saw the balance chart
# missing at 5 s). A deadline, not a sleep: passing expectations return as soon as they hold.
expect.set_options(timeout=15_000)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    assert executable, "chromium is needed: the test command installs it with apt"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\ndashboard screenshots: {ARTIFACTS}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser: Browser, gw: Gateway, width: int, height: int
              ) -> tuple[Page, list[str], list[str]]:
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    foreign: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith((gw.url, "data:", "blob:"))
            else foreign.append(r.url))
    page.goto(gw.url + "/dashboard")
    return page, errors, foreign


def sign_in(page: Page) -> None:
    token = page.locator("#token")
    expect(token).to_be_focused()  # keyboard first: the field has the focus
    page.keyboard.type(ADMIN_TOKEN)
    page.keyboard.press("Enter")
    expect(page.locator("#agents")).to_be_visible()
    expect(page.locator("#signin")).to_be_hidden()


def test_operator_flow(browser: Browser, gateway: Gateway) -> None:
    rich, rich_key = new_agent(gateway, "5", "dash")
    poor, _ = new_agent(gateway, "0.5", "dash")  # below the default low_balance of 1
    page, errors, foreign = open_page(browser, gateway, 1280, 800)
    sign_in(page)
    assert "iou-token" not in page.url
    expect(page.locator(f"tr[data-agent='{rich}']")).to_contain_text("5")
    expect(page.locator(f"tr[data-agent='{poor}']")).to_have_class("low")
    page.screenshot(path=ARTIFACTS / "overview-1280.png", full_page=True)

    page.locator("#agents input, input[type=search]").first.fill(rich)
    expect(page.locator("#agents tbody tr")).to_have_count(1)
    page.click(f"a[href='#/agent/{rich}']")
    expect(page.locator("#balance")).to_have_text("5")
    page.fill("#fund input[name=amount]", "20")
    page.click("#fund button[type=submit]")
    expect(page.locator("#balance")).to_have_text("25")

    httpx.post(gateway.url + "/v1/charge", json={"tool": "web_search"},
               headers={"authorization": f"Bearer {rich_key}"}).raise_for_status()
    # The row comes through the ledger writer and the page's 2 s poll: a deadline, not a
    # latency figure (a loaded machine takes longer).
    expect(page.locator("#ledger tbody tr").first).to_contain_text("web_search", timeout=15000)
    expect(page.locator("#balance")).to_have_text("24.95", timeout=15000)

    with page.expect_download() as download:
        page.click("#csv")
    exported = Path(download.value.path()).read_text().splitlines()
    assert exported[0].startswith("entry_id,at,kind") and len(exported) == 4  # + 3 entries
    page.click("text=New key")
    expect(page.locator(".key")).to_contain_text("iou_")

    page.fill("#limits input[name=daily]", "0.1")
    page.click("#limits button[type=submit]")
    expect(page.locator("[role=status]")).to_have_text("Limits saved")
    expect(page.locator(".bar[aria-label='50% of daily cap']").first).to_be_visible()
    page.screenshot(path=ARTIFACTS / "agent-1280.png", full_page=True)

    page.click("a[href='#/']")
    expect(page.locator(f"tr[data-agent='{rich}'] .bar")).to_be_visible()
    page.click("a[href='#/tools']")
    expect(page.locator("tr[data-tool='web_search']")).to_be_visible()
    page.screenshot(path=ARTIFACTS / "tools-1280.png", full_page=True)
    assert errors == [] and foreign == []
    page.close()


def test_tools_editable_and_mobile(browser: Browser, gateway: Gateway) -> None:
    page, errors, foreign = open_page(browser, gateway, 390, 844)
    sign_in(page)
    page.screenshot(path=ARTIFACTS / "overview-390.png", full_page=True)
    page.click("a[href='#/tools']")
    page.fill("#add-tool input[name=tool]", "dash_tool")
    page.fill("#add-tool input[name=price]", "0.33")
    page.click("#add-tool button[type=submit]")
    row = page.locator("tr[data-tool='dash_tool']")
    expect(row).to_be_visible()
    row.locator("input[name=price]").fill("0.44")
    row.locator("button", has_text="Save").click()
    expect(page.locator("[role=status]")).to_have_text("Saved dash_tool")
    tools = httpx.get(gateway.url + "/v1/tools",
                      headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).json()["tools"]
    assert next(t for t in tools if t["tool"] == "dash_tool")["price"] == "0.44"
    page.screenshot(path=ARTIFACTS / "tools-390.png", full_page=True)
    name, _ = new_agent(gateway, "2", "mobile")
    page.goto(f"{gateway.url}/dashboard/#/agent/{name}")
    expect(page.locator("#balance")).to_have_text("2")
    page.click("#freeze")
    expect(page.locator("#freeze")).to_have_text("Unfreeze")
    page.screenshot(path=ARTIFACTS / "agent-390.png", full_page=True)
    assert errors == [] and foreign == []
    page.close()


def test_wrong_token_is_refused(browser: Browser, gateway: Gateway) -> None:
    page, errors, _ = open_page(browser, gateway, 1280, 800)
    page.fill("#token", "not-the-token-at-all")
    page.click("#signin button[type=submit]")
    expect(page.locator("#signin-error")).to_have_text("That token was refused.")
    assert page.evaluate("sessionStorage.getItem('iou-token')") is None
    assert all("401" in e for e in errors)  # the refused fetch itself, nothing else
    page.close()


def test_create_agent_keys_usage_and_sorting(browser: Browser, gateway: Gateway) -> None:
    page, errors, foreign = open_page(browser, gateway, 1280, 900)
    sign_in(page)
    name = unique("made")
    page.click("#create summary")
    page.fill("#create-agent input[name=name]", name)
    page.fill("#create-agent input[name=grant]", "12")
    page.click("#create-agent button[type=submit]")
    expect(page.locator("#new-key")).to_contain_text("iou_")  # shown once, here
    key = page.locator("#new-key code").inner_text()
    expect(page.locator(f"tr[data-agent='{name}']")).to_be_visible(timeout=10000)

    with gateway.agent(key) as agent:  # the key shown works
        for tool, count in (("web_search", 3), ("buy", 1)):
            for _ in range(count):
                assert agent.post("/v1/charge", json={"tool": tool}).status_code == 200
    # Sorting is the server's, numbers as numbers: by balance descending, the biggest first.
    page.locator("th[data-sort=balance] button").click()
    page.locator("th[data-sort=balance] button").click()
    expect(page.locator("th[data-sort=balance]")).to_have_attribute("aria-sort", "descending")
    texts = page.locator("#agents tbody td.balance").all_inner_texts()
    shown = [Decimal(t.replace("low", "").strip()) for t in texts]
    assert shown == sorted(shown, reverse=True)

    page.goto(f"{gateway.url}/dashboard/#/agent/{name}")
    expect(page.locator("#keys tbody tr")).to_have_count(1)
    assert "iou_" not in page.locator("#keys").inner_text()  # key ids, never a key
    page.click("text=New key")
    expect(page.locator("#keys tbody tr")).to_have_count(2)
    # The usage comes from the ledger (the writer's lag, then the card's poll): a deadline.
    usage = page.locator("#usage")
    expect(usage.locator("rect.seg[data-key='web_search']")).to_have_count(1, timeout=20000)
    expect(usage.locator("rect.seg[data-key='buy']")).to_have_count(1)
    expect(usage.locator(".legend")).to_contain_text("web_search 0.15 (3 calls)")
    assert usage.locator("text.x-tick").count() >= 2  # a time axis with labels
    assert usage.locator("text.y-tick").count() >= 2
    expect(page.locator(".chart[aria-label='Balance over time'] text.x-tick").first).to_be_visible()
    with page.expect_download() as download:
        page.click("#usage-csv")
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0] == "start,tool,calls,amount"
    assert sorted(line.split(",", 1)[1] for line in lines[1:]) == ["buy,1,1.5",
                                                                   "web_search,3,0.15"]
    page.select_option("#usage select[name=by]", "category")
    expect(usage.locator(".legend")).to_contain_text("commerce 1.5 (1 calls)")
    page.screenshot(path=ARTIFACTS / "agent-usage-1280.png", full_page=True)

    page.click("a[href='#/usage']")
    expect(page.locator("#all-usage rect.seg").first).to_be_visible(timeout=15000)
    page.screenshot(path=ARTIFACTS / "usage-1280.png", full_page=True)
    assert errors == [] and foreign == []
    page.close()


def test_tasks_of_an_agent_with_their_budget_bars(browser: Browser, gateway: Gateway) -> None:
    name, key = new_agent(gateway, "5", "dash-tasks")
    agent = {"authorization": f"Bearer {key}"}
    task = httpx.post(gateway.url + "/v1/tasks", headers=agent,
                      json={"budget": "1", "name": "research"}).json()["task_id"]
    httpx.post(gateway.url + "/v1/charge", headers=agent,
               json={"tool": "llm_summarize", "cost": "0.85", "task": task}).raise_for_status()
    other = httpx.post(gateway.url + "/v1/tasks", headers=agent, json={"budget": "2"}).json()
    httpx.post(f"{gateway.url}/v1/tasks/{other['task_id']}/close",
               headers=agent).raise_for_status()
    page, errors, foreign = open_page(browser, gateway, 1280, 800)
    sign_in(page)
    page.goto(gateway.url + f"/dashboard/#/agent/{name}")
    row = page.locator(f"#tasks tr[data-task='{task}']")
    expect(row).to_contain_text("research")
    expect(row).to_contain_text("0.85 / 1")
    expect(row.locator("[role=img]")).to_have_attribute("aria-label", "85% of the task's budget")
    expect(row.locator(".bar .near")).to_have_count(1)  # above 80 %
    closed = page.locator(f"#tasks tr[data-task='{other['task_id']}']")
    expect(closed).to_contain_text("closed")
    page.screenshot(path=ARTIFACTS / "agent-tasks-1280.png", full_page=True)
    assert errors == [] and foreign == []
    page.close()


def test_refund_button_on_a_ledger_row(browser: Browser, gateway: Gateway) -> None:
    name, key = new_agent(gateway, "5", "dash-refund")
    httpx.post(gateway.url + "/v1/charge", json={"tool": "llm_summarize", "cost": "0.5"},
               headers={"authorization": f"Bearer {key}"}).raise_for_status()
    page, errors, foreign = open_page(browser, gateway, 1280, 800)
    sign_in(page)
    page.goto(gateway.url + f"/dashboard/#/agent/{name}")
    row = page.locator("#ledger tbody tr", has_text="llm_summarize").first
    expect(row).to_be_visible(timeout=15000)  # through the ledger writer
    answers = iter(["0.2", "wrong summary"])
    page.on("dialog", lambda d: d.accept(next(answers)))
    row.locator("button.refund").click()
    expect(page.locator("[role=status]")).to_have_text("Refunded 0.2: balance 4.7")
    expect(page.locator("#balance")).to_have_text("4.7")
    refunded = page.locator("#ledger tbody tr", has_text="refund").first
    expect(refunded).to_contain_text("wrong summary", timeout=15000)
    expect(refunded.locator("button.refund")).to_have_count(0)  # a refund row has none
    assert errors == [] and foreign == []


def test_the_family_as_a_tree(browser: Browser, gateway: Gateway) -> None:
    from gateway.metering.children import partition_name
    from gateway.store.keys import partition_of

    parent, _ = new_agent(gateway, "5", "dash-fam")
    kid = partition_name(unique("dash-kid"), partition_of(parent, 16), 16)
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    httpx.post(gateway.url + f"/v1/agents/{parent}/children", json={"name": kid, "amount": "2"},
               headers=headers).raise_for_status()
    page, errors, foreign = open_page(browser, gateway, 1280, 800)
    sign_in(page)
    page.goto(gateway.url + f"/dashboard/#/agent/{parent}")
    child = page.locator(f"#family li[data-child='{kid}']")
    expect(child).to_contain_text("2")
    expect(page.locator("#balance")).to_have_text("3")
    child.locator("button.reclaim").click()
    expect(page.locator("[role=status]")).to_have_text(f"Reclaimed 2 from {kid}")
    expect(page.locator("#balance")).to_have_text("5")
    page.click(f"#family a[href='#/agent/{kid}']")
    expect(page.locator("#family .tree > li > a")).to_have_text(parent)  # the parent above
    page.screenshot(path=ARTIFACTS / "family-1280.png", full_page=True)
    assert errors == [] and foreign == []


MCP_SECRET = "dashboard-upstream-secret"


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[str]:
    """An upstream MCP server's endpoint URL."""
    with mcp_upstream(MCP_SECRET) as url:
        yield url + "/mcp"


def test_mcp_servers_beside_the_catalog(browser: Browser, gateway: Gateway,
                                        mcp_server: str) -> None:
    """Register an upstream MCP server from the tools page; its tools are listed, each
    offered to agents only once the catalog prices its server.tool name."""
    server = unique("dashmcp").replace("-", "")[:24]
    page, errors, foreign = open_page(browser, gateway, 1280, 800)
    sign_in(page)
    page.click("a[href='#/tools']")
    page.fill("#add-mcp input[name=server]", server)
    page.fill("#add-mcp input[name=url]", mcp_server)
    page.fill("#add-mcp input[name=headers]", f'{{"x-upstream-secret": "{MCP_SECRET}"}}')
    page.click("#add-mcp button[type=submit]")
    expect(page.locator("[role=status]")).to_have_text(f"Registered {server}: 7 tools")
    row = page.locator(f"tr[data-mcp-tool='{server}.echo']")
    expect(row).to_contain_text("Price it")
    row.locator("button", has_text="Price it").click()
    expect(page.locator("#add-tool input[name=tool]")).to_have_value(f"{server}.echo")
    page.fill("#add-tool input[name=price]", "0.07")
    page.click("#add-tool button[type=submit]")
    expect(row).to_contain_text("offered at 0.07 (tool)")
    expect(page.locator(f"tr[data-mcp-tool='{server}.free']")).to_contain_text("Price it")
    page.screenshot(path=ARTIFACTS / "tools-mcp-1280.png", full_page=True)
    shown = page.locator("#mcp-servers").inner_text()
    assert MCP_SECRET not in shown  # headers are never shown again
    assert errors == [] and foreign == []
    page.close()

