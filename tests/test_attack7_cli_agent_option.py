"""`--agent NAME` is a global option "also accepted after the subcommand" (the contract):
`iou debit` and `iou shadow` took the agent only as a positional argument, so `iou debit
--agent a --amount 1 --reason r` (as `iou fund --agent a --amount 1`) and `iou shadow
--agent a` were usage errors. Both forms work now."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal

from tests.gateway_proc import ADMIN_TOKEN, Gateway
from tests.http_helpers import new_agent


def _iou(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env["IOU_URL"] = gw.url
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", "--token", ADMIN_TOKEN,
                           *args], env=env, capture_output=True, text=True, timeout=60)


def _balance(gw: Gateway, name: str) -> Decimal:
    with gw.admin() as admin:
        return Decimal(admin.get(f"/v1/agents/{name}").json()["balance"])


def test_debit_takes_the_agent_and_amount_as_options_or_arguments(gateway: Gateway) -> None:
    name, _ = new_agent(gateway, "10")
    for args in (["debit", "--agent", name, "--amount", "1", "--reason", "r"],
                 ["--agent", name, "debit", "1", "--reason", "r"],
                 ["--agent", name, "debit", "--amount", "1", "--reason", "r"],
                 ["debit", name, "1", "--reason", "r"]):
        done = _iou(gateway, *args)
        assert done.returncode == 0, (args, done.stderr)
    assert _balance(gateway, name) == Decimal(6)


def test_debit_without_an_agent_or_an_amount_is_a_usage_error(gateway: Gateway) -> None:
    name, _ = new_agent(gateway, "10")
    for args in (["debit", "--amount", "1", "--reason", "r"],
                 ["debit", "--agent", name, "--reason", "r"],
                 ["debit", name, "1", "--amount", "2", "--reason", "r"]):
        done = _iou(gateway, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
    assert _balance(gateway, name) == Decimal(10)


def test_shadow_takes_the_agent_as_an_option(gateway: Gateway) -> None:
    name, _ = new_agent(gateway, "10")
    for args in (["shadow", "--agent", name], ["shadow", name], ["--agent", name, "shadow"]):
        done = _iou(gateway, "--json", *args)
        assert done.returncode == 0, (args, done.stderr)
        assert f'"agent": "{name}"' in done.stdout
