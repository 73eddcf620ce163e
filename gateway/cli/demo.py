"""`iou demo`: the seed scenario, written as the agent's own code on the SDK and played
against a running gateway; every figure printed comes from the gateway's answers. After it,
two runaway agents with a healthy balance: a monitor stopped by its call cap, and a loop
stopped by the loop breaker; then a commerce task stopped at its second purchase."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from gateway.sdk import BalanceInsufficient, Client, LimitExceeded, LoopDetected

DEMO_TOOLS = (("web_search", "0.05", "tool", "fixed"), ("web_browse", "0.12", "tool", "fixed"),
              ("llm_summarize", "0.08", "llm", "variable"), ("email_send", "0.02", "tool",
                                                                "fixed"))
GRANT = "8.3"
SUMMARY_MAX = "0.5"  # held for the summary, whose cost is known once it is written
SUMMARY_COST = "0.08"
SPEND_DOWN_CALLS_MAX = 1000
RUNAWAY_GRANT = "10"
MONITOR_URLS = tuple(f"https://status.example.com/check/{n}" for n in range(1, 11))
MONITOR_CALLS_PER_DAY = 10  # the seed's monitor: configured to check 10 URLs
LOOP = {"repeats": 3, "window_s": 60}
RUNAWAY_CALLS_MAX = 10_000  # "through a simple loop error, check 10,000"
# The commerce task: an agent told to buy one item, its task capped at one commerce call.
SHOP_TOOL = ("buy_item", "1.5", "commerce", "fixed")
SHOP_GRANT = "10"
SHOP_BUDGET = "5"
Echo = Callable[[str], None]
LEDGER_WAIT_S = 10.0  # the ledger writer's lag is well under a second; a bound, not a pause
LEDGER_POLL_S = 0.1
WARNING_WORDS = {"low_balance": "low balance", "calls_near": "near the call cap"}


class Calls:
    """The calls played so far: each echoed as a line and kept for the JSON summary."""

    def __init__(self, echo: Echo) -> None:
        self.echo = echo
        self.played: list[dict[str, Any]] = []

    def add(self, tool: str, arg: str, paid: Any, shown: bool = True) -> None:
        """``paid``: the SDK's Charge or Capture of the call."""
        cost, balance, warnings = str(paid.cost), str(paid.balance), list(paid.warnings)
        self.played.append({"tool": tool, "arg": arg, "cost": cost, "balance": balance,
                            "warnings": warnings})
        if shown:
            warn = "".join(f"  ⚠ {WARNING_WORDS[w]}" for w in warnings if w in WARNING_WORDS)
            self.echo(f'→ {tool}("{arg}")  -{cost}  [{balance} IOU remaining]{warn}')


def demo_tools(admin: Client) -> dict[str, str]:
    """The catalog name of each of the scenario's tools. A tool missing from the catalog is
    added; one already there with the demo's definition is used; one defined otherwise
    belongs to the operator (its price, its upstream and credentials): it is left alone and
    the demo adds and plays its own copy, ``demo_<name>``."""
    catalog = {t["tool"]: t for t in admin.request("GET", "/v1/tools")["tools"]}
    names: dict[str, str] = {}
    for name, price, category, pricing in (*DEMO_TOOLS, SHOP_TOOL):
        found = catalog.get(name)
        same = found is not None and (
            Decimal(found["price"]), found["category"], found["pricing"],
            found.get("upstream")) == (Decimal(price), category, pricing, None)
        names[name] = name if found is None or same else f"demo_{name}"
        if not same:
            admin.request("PUT", f"/v1/tools/{names[name]}",
                          {"price": price, "category": category, "pricing": pricing})
    return names


def run_demo(admin: Client, echo: Echo) -> dict[str, Any]:
    """Play the scenario; returns the agent, every call, the refusal, the last ledger
    entries and the final balance."""
    t = demo_tools(admin)
    agent = f"demo-{secrets.token_hex(3)}"
    created = admin.request("POST", "/v1/agents", {"name": agent, "grant": GRANT})
    echo(f"agent {agent} starts with {created['balance']} IOU")
    calls = Calls(echo)
    with Client(admin.url, created["api_key"]) as iou:
        refusal = _agent(iou, calls, t)
    state = admin.request("GET", f"/v1/agents/{agent}")
    ledger = _print_ledger(admin, agent, state["balance"], echo)
    return {"agent": agent, "grant": created["balance"], "calls": calls.played,
            "refusal": refusal, "ledger": ledger, "balance": state["balance"],
            "monitor": _looping_monitor(admin, echo, t),
            "loop": _looping_agent(admin, echo, t), "task": _commerce_task(admin, echo, t)}


def _runaway(admin: Client, prefix: str, limits: dict[str, Any]) -> tuple[str, str]:
    """A fresh agent with a healthy balance and ``limits``: (name, api key)."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    created = admin.request("POST", "/v1/agents", {"name": name, "grant": RUNAWAY_GRANT})
    admin.request("PATCH", f"/v1/agents/{name}/limits", limits)
    return name, created["api_key"]


def _looping_monitor(admin: Client, echo: Echo, t: dict[str, str]) -> dict[str, Any]:
    """A monitor meant to check 10 URLs a day, whose loop never ends: its call cap
    ``tools.web_browse.calls.per_day = 10`` stops it at call 11, balance still healthy."""
    browse = t["web_browse"]
    name, key = _runaway(admin, "monitor", {"tools": {browse: {
        "calls": {"per_day": MONITOR_CALLS_PER_DAY}}}})
    echo("")
    echo(f"agent {name} ({RUNAWAY_GRANT} IOU) monitors {len(MONITOR_URLS)} URLs, capped at "
         f"tools.{browse}.calls.per_day = {MONITOR_CALLS_PER_DAY}; a bug makes it loop:")
    calls = Calls(echo)
    with Client(admin.url, key) as monitor:
        for i in range(RUNAWAY_CALLS_MAX):
            url = MONITOR_URLS[i % len(MONITOR_URLS)]
            try:
                page = monitor.charge(browse, metadata={"url": url})
            except LimitExceeded as capped:
                balance = monitor.status().balance
                echo(f"✗ call {i + 1} refused: {capped.code} {capped.limit} (max "
                     f"{capped.max}, retry after {capped.retry_after_s} s) with {balance} IOU "
                     "still in the balance")
                return {"agent": name, "calls": calls.played, "refused_at": i + 1,
                        "refusal": dict(capped.body), "balance": str(balance)}
            calls.add(browse, url, page)
    raise RuntimeError("the call cap never stopped the monitor; is the gateway metering?")


def _looping_agent(admin: Client, echo: Echo, t: dict[str, str]) -> dict[str, Any]:
    """An agent stuck repeating one search: the loop breaker (the same tool with the same
    arguments more than 3 times in 60 s) refuses the 4th, whatever the balance."""
    name, key = _runaway(admin, "looper", {"loop": LOOP})
    query = "competitor pricing update"
    echo("")
    echo(f"agent {name} ({RUNAWAY_GRANT} IOU) with loop {LOOP['repeats']}/"
         f"{LOOP['window_s']}s repeats one search:")
    calls = Calls(echo)
    with Client(admin.url, key) as looper:
        for i in range(RUNAWAY_CALLS_MAX):
            try:
                found = looper.charge(t["web_search"], metadata={"query": query})
            except LoopDetected as loop:
                balance = looper.status().balance
                echo(f"✗ call {i + 1} refused: {loop.code} (the same {loop.tool} call more "
                     f"than {loop.repeats} times in {loop.window_s} s; retry after "
                     f"{loop.retry_after_s} s) with {balance} IOU still in the balance")
                return {"agent": name, "calls": calls.played, "refused_at": i + 1,
                        "refusal": dict(loop.body), "balance": str(balance)}
            calls.add(t["web_search"], query, found)
    raise RuntimeError("the loop breaker never stopped the agent; is the gateway metering?")


def _commerce_task(admin: Client, echo: Echo, t: dict[str, str]) -> dict[str, Any]:
    """An agent told to buy one item works inside a task allowing one commerce call: the
    second purchase is refused by the task while the balance could still pay for it."""
    name, category = t[SHOP_TOOL[0]], SHOP_TOOL[2]
    agent = f"demo-shop-{secrets.token_hex(3)}"
    created = admin.request("POST", "/v1/agents", {"name": agent, "grant": SHOP_GRANT})
    with Client(admin.url, created["api_key"]) as iou:
        task = iou.tasks.open(SHOP_BUDGET, name="buy one item", max_calls={category: 1})
        echo("")
        echo(f"agent {agent} opens task {task.task_id}: budget {task.budget} IOU, at most 1 "
             f"{category} call")
        bought = iou.charge(name, task=task.task_id)
        echo(f'→ {name}("the item")  -{bought.cost}  [{bought.balance} IOU remaining]')
        try:
            iou.charge(name, task=task.task_id)
            raise RuntimeError("the task never refused the second purchase")
        except LimitExceeded as capped:
            echo(f"✗ {name} refused: {capped.code} ({capped.body.get('limit')}, max "
                 f"{capped.body.get('max')}) with {bought.balance} IOU still in the balance")
            refusal = dict(capped.body)
        summary = iou.tasks.close(task.task_id)
    echo(f"task closed: spent {summary.spent} IOU in {summary.calls} call")
    return {"agent": agent, "task_id": task.task_id, "refusal": refusal,
            "spent": str(summary.spent), "calls": summary.calls}


def _agent(iou: Client, calls: Calls, t: dict[str, str]) -> dict[str, Any]:
    """The agent's code: each paid step charged before it runs, the summary held and
    captured at its real cost, and a runaway loop stopped by the balance."""
    search, browse, summarize, email = (t[n] for n in (
        "web_search", "web_browse", "llm_summarize", "email_send"))
    calls.add(search, "competitor pricing update", iou.charge(search))
    calls.add(browse, "https://example.com/pricing", iou.charge(browse))
    with iou.hold(summarize, max=SUMMARY_MAX) as held:
        summary = held.capture(SUMMARY_COST)  # the summary is written: pay what it cost
    calls.add(summarize, "summarize the pricing page", summary)
    calls.add(email, "ops@example.com", iou.charge(email))
    return _spend_down(iou, calls, browse)


def _spend_down(iou: Client, calls: Calls, browse: str) -> dict[str, Any]:
    """Loop web_browse like a runaway agent until the balance stops it."""
    calls.echo(f"… now the agent loops on {browse}:")
    warned = False
    for i in range(SPEND_DOWN_CALLS_MAX):
        try:
            page = iou.charge(browse)
        except BalanceInsufficient as poor:
            # The cue to pause: a distinct class, not a generic failure to retry.
            calls.echo(f"✗ {browse} refused: {poor.code} (balance {poor.balance}, "
                       f"cost {poor.cost}) after {i} more calls")
            return dict(poor.body)
        first_warning = "low_balance" in page.warnings and not warned
        warned = warned or first_warning
        calls.add(browse, f"page {i + 1}", page, shown=i < 3 or first_warning)
    raise RuntimeError("the balance never ran out; is the gateway metering?")


def _print_ledger(admin: Client, agent: str, balance: str, echo: Echo
                  ) -> list[dict[str, Any]]:
    """The agent's last ledger entries, once the ledger writer has caught up with its last
    change (the newest entry's balance is ``balance``; the writer commits in batches, so a
    read right after the calls could show the grant alone), or after LEDGER_WAIT_S."""
    from gateway.cli.commands import LEDGER_NOTE, ledger_columns

    deadline = time.monotonic() + LEDGER_WAIT_S
    while True:
        page = admin.request("GET", f"/v1/agents/{agent}/ledger", params={"limit": "8"})
        entries_now = page["entries"]
        caught_up = bool(entries_now) and (
            Decimal(entries_now[0]["balance_after"]) == Decimal(balance))
        if caught_up or time.monotonic() > deadline:
            break
        time.sleep(LEDGER_POLL_S)
    echo(f"last {len(page['entries'])} ledger entries of {agent}:")
    echo(f"  {'at':<24}  {'kind':<8} {'tool':<14} {'amount':>7} {'held':>6}  balance after")
    for e in page["entries"]:
        amount, held = ledger_columns(e)
        echo(f"  {e['at']:<24}  {e['kind']:<8} {e.get('tool') or '':<14} {amount:>7} "
             f"{held:>6}  {e['balance_after']}")
    echo(f"  ({LEDGER_NOTE})")
    entries: list[dict[str, Any]] = page["entries"]
    return entries
