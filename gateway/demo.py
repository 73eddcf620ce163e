"""`iou demo`: the seed scenario played against a running gateway; every figure printed
comes from the gateway's answers."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from gateway.client import Client, ClientError

DEMO_TOOLS = (("web_search", "0.05", "tool", "fixed"), ("web_browse", "0.12", "tool", "fixed"),
              ("llm_summarize", "0.08", "llm", "variable"), ("email_send", "0.02", "tool",
                                                                "fixed"))
GRANT = "8.3"
SPEND_DOWN_CALLS_MAX = 1000
Echo = Callable[[str], None]


def _line(tool: str, arg: str, cost: str, balance: str, warnings: list[str]) -> str:
    warn = "  ⚠ low balance" if "low_balance" in warnings else ""
    return f'→ {tool}("{arg}")  -{cost}  [{balance} IOU remaining]{warn}'


def run_demo(admin: Client, echo: Echo) -> dict[str, Any]:
    """Play the scenario; returns the agent, its final balance and the refusal."""
    for name, price, category, pricing in DEMO_TOOLS:
        admin.request("PUT", f"/v1/tools/{name}",
                      {"price": price, "category": category, "pricing": pricing})
    agent = f"demo-{secrets.token_hex(3)}"
    created = admin.request("POST", "/v1/agents", {"name": agent, "grant": GRANT})
    key = created["api_key"]
    echo(f"agent {agent} starts with {created['balance']} IOU")
    charge = _charger(admin, key)
    echo(_line("web_search", "competitor pricing update",
               *charge({"tool": "web_search"})))
    echo(_line("web_browse", "https://example.com/pricing", *charge({"tool": "web_browse"})))
    echo(_line("llm_summarize", "summarize the pricing page", *_summarize(admin, key)))
    echo(_line("email_send", "ops@example.com", *charge({"tool": "email_send"})))
    refusal = _spend_down(charge, echo)
    _print_ledger(admin, agent, echo)
    state = admin.request("GET", f"/v1/agents/{agent}")
    return {"agent": agent, "balance": state["balance"], "refusal": refusal}


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
                echo: Echo) -> dict[str, Any]:
    """Loop web_browse like a runaway agent until the balance stops it."""
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
        if i < 3 or first_warning:
            echo(_line("web_browse", f"page {i + 1}", cost, balance, warnings))
    raise RuntimeError("the balance never ran out; is the gateway metering?")


def _print_ledger(admin: Client, agent: str, echo: Echo) -> None:
    page = admin.request("GET", f"/v1/agents/{agent}/ledger", params={"limit": "8"})
    echo(f"last {len(page['entries'])} ledger entries of {agent}:")
    for e in page["entries"]:
        echo(f"  {e['at']}  {e['kind']:<8} {e.get('tool') or '':<14} {e['amount']:>6}  "
             f"balance {e['balance_after']}")
