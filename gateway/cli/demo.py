"""`iou demo`: the seed scenario played against a running gateway; every figure printed
comes from the gateway's answers."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from gateway.cli.client import Client, ClientError

DEMO_TOOLS = (("web_search", "0.05", "tool", "fixed"), ("web_browse", "0.12", "tool", "fixed"),
              ("llm_summarize", "0.08", "llm", "variable"), ("email_send", "0.02", "tool",
                                                                "fixed"))
GRANT = "8.3"
SPEND_DOWN_CALLS_MAX = 1000
Echo = Callable[[str], None]


class Calls:
    """The calls played so far: each echoed as a line and kept for the JSON summary."""

    def __init__(self, echo: Echo) -> None:
        self.echo = echo
        self.played: list[dict[str, Any]] = []

    def add(self, tool: str, arg: str, cost: str, balance: str, warnings: list[str],
            shown: bool = True) -> None:
        self.played.append({"tool": tool, "arg": arg, "cost": cost, "balance": balance,
                            "warnings": warnings})
        if shown:
            warn = "  ⚠ low balance" if "low_balance" in warnings else ""
            self.echo(f'→ {tool}("{arg}")  -{cost}  [{balance} IOU remaining]{warn}')


def run_demo(admin: Client, echo: Echo) -> dict[str, Any]:
    """Play the scenario; returns the agent, every call, the refusal, the last ledger
    entries and the final balance."""
    for name, price, category, pricing in DEMO_TOOLS:
        admin.request("PUT", f"/v1/tools/{name}",
                      {"price": price, "category": category, "pricing": pricing})
    agent = f"demo-{secrets.token_hex(3)}"
    created = admin.request("POST", "/v1/agents", {"name": agent, "grant": GRANT})
    key = created["api_key"]
    echo(f"agent {agent} starts with {created['balance']} IOU")
    charge = _charger(admin, key)
    calls = Calls(echo)
    calls.add("web_search", "competitor pricing update", *charge({"tool": "web_search"}))
    calls.add("web_browse", "https://example.com/pricing", *charge({"tool": "web_browse"}))
    calls.add("llm_summarize", "summarize the pricing page", *_summarize(admin, key))
    calls.add("email_send", "ops@example.com", *charge({"tool": "email_send"}))
    refusal = _spend_down(charge, calls)
    ledger = _print_ledger(admin, agent, echo)
    state = admin.request("GET", f"/v1/agents/{agent}")
    return {"agent": agent, "grant": created["balance"], "calls": calls.played,
            "refusal": refusal, "ledger": ledger, "balance": state["balance"]}


def _charger(admin: Client, key: str) -> Callable[[dict[str, Any]], tuple[str, str, list[str]]]:
    def charge(body: dict[str, Any]) -> tuple[str, str, list[str]]:
        result = admin.request("POST", "/v1/charge", body, token=key,
                               headers={"idempotency-key": secrets.token_hex(8)})
        return result["cost"], result["balance"], result["warnings"]

    return charge


def _summarize(admin: Client, key: str) -> tuple[str, str, list[str]]:
    """A variable-cost call: hold a maximum, then capture what it actually cost."""
    hold = admin.request("POST", "/v1/holds", {"tool": "llm_summarize", "max_cost": "0.5"},
                         token=key)
    done = admin.request("POST", f"/v1/holds/{hold['hold_id']}/capture", {"cost": "0.08"},
                         token=key)
    return done["cost"], done["balance"], done["warnings"]


def _spend_down(charge: Callable[[dict[str, Any]], tuple[str, str, list[str]]],
                calls: Calls) -> dict[str, Any]:
    """Loop web_browse like a runaway agent until the balance stops it."""
    echo = calls.echo
    echo("… now the agent loops on web_browse:")
    warned = False
    for i in range(SPEND_DOWN_CALLS_MAX):
        try:
            cost, balance, warnings = charge({"tool": "web_browse"})
        except ClientError as exc:
            echo(f"✗ web_browse refused: {exc.code} (balance {exc.body.get('balance')}, "
                 f"cost {exc.body.get('cost')}) after {i} more calls")
            return {"error": exc.code, **exc.body}
        first_warning = "low_balance" in warnings and not warned
        warned = warned or first_warning
        calls.add("web_browse", f"page {i + 1}", cost, balance, warnings,
                  shown=i < 3 or first_warning)
    raise RuntimeError("the balance never ran out; is the gateway metering?")


def _print_ledger(admin: Client, agent: str, echo: Echo) -> list[dict[str, Any]]:
    from gateway.cli.commands import LEDGER_NOTE, ledger_columns

    page = admin.request("GET", f"/v1/agents/{agent}/ledger", params={"limit": "8"})
    echo(f"last {len(page['entries'])} ledger entries of {agent}:")
    echo(f"  {'at':<24}  {'kind':<8} {'tool':<14} {'amount':>7} {'held':>6}  balance after")
    for e in page["entries"]:
        amount, held = ledger_columns(e)
        echo(f"  {e['at']:<24}  {e['kind']:<8} {e.get('tool') or '':<14} {amount:>7} "
             f"{held:>6}  {e['balance_after']}")
    echo(f"  ({LEDGER_NOTE})")
    entries: list[dict[str, Any]] = page["entries"]
    return entries
