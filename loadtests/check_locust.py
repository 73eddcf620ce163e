"""After a locust run: no agent overspent, and each ledger adds up to its balance.

    python -m loadtests.check_locust [--url URL] [--keys locust-agents.txt]

For every agent of the run: balance >= 0, held == 0 once holds are settled, and
grant + funds - charges - captures - open holds (from GET .../ledger) == balance.
Prints PASS or FAIL with the agents that fail; exit code 0 or 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

from gateway.metering.money import parse_amount
from loadtests.locustfile import admin_token

DELTA = {"grant": 1, "fund": 1, "release": 1, "expire": 1, "charge": -1, "hold": -1}


def ledger_total(client: httpx.Client, agent: str) -> int:
    """What the ledger says the balance is: grants and funds minus charges, captured costs
    and open holds (a capture gives back its hold's amount minus the cost)."""
    entries, cursor = [], None
    while True:
        params = {"limit": "1000"} | ({"before": cursor} if cursor else {})
        page = client.get(f"/v1/agents/{agent}/ledger", params=params).json()
        entries += page["entries"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    holds = {e["hold_id"]: parse_amount(e["amount"]) for e in entries if e["kind"] == "hold"}
    total = 0
    for e in entries:
        amount = parse_amount(e["amount"], allow_zero=True)
        if e["kind"] == "capture":
            total += holds[e["hold_id"]] - amount
        else:
            total += DELTA.get(e["kind"], 0) * amount
    return total


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--keys", type=Path, default=Path("locust-agents.txt"))
    args = parser.parse_args()
    client = httpx.Client(base_url=args.url, timeout=30,
                          headers={"authorization": f"Bearer {admin_token()}"})
    time.sleep(2)  # let the ledger writer commit the tail of the run
    failures = []
    agents = [line.split()[0] for line in args.keys.read_text().splitlines() if line.strip()]
    for agent in agents:
        state = client.get(f"/v1/agents/{agent}").json()
        balance = parse_amount(state["balance"], allow_zero=True)
        expected = ledger_total(client, agent)
        if state["balance"].startswith("-") or expected != balance:
            failures.append(f"{agent}: balance {state['balance']}, ledger says {expected}")
    print(("PASS" if not failures else "FAIL") + f": {len(agents)} agents checked")
    for line in failures:
        print("  " + line)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
