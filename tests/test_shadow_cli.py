"""`iou limits --shadow ...` / `--shadow-clear` and `iou shadow AGENT` against an embedded
gateway."""

from __future__ import annotations

import json

import httpx

from tests.gateway_proc import Gateway
from tests.test_cli import api, embedded_gateway, iou, make_agent

__all__ = ["embedded_gateway"]  # the module-scoped gateway fixture of test_cli


def test_shadow_flags_and_sums(embedded_gateway: Gateway) -> None:
    gw = embedded_gateway
    name = make_agent(gw)
    done = iou(gw, "--json", "limits", "--agent", name, "--shadow", "--per-call", "0.001",
               "--calls-per-day", "5", "--category-limit", "llm:daily=2")
    assert done.returncode == 0, done.stderr
    limits = json.loads(done.stdout)
    assert limits == api(gw, "GET", f"/v1/agents/{name}/limits")
    assert limits["per_call"] is None  # nothing enforced
    assert limits["shadow"]["per_call"] == "0.001"
    assert limits["shadow"]["calls"] == {"per_day": 5}
    assert limits["shadow"]["categories"] == {"llm": {"daily": "2"}}
    shown = iou(gw, "limits", "--agent", name).stdout
    assert "shadow.per_call" in shown and "shadow.calls.per_day" in shown
    refused = iou(gw, "limits", "--agent", name, "--shadow", "--loop", "3/60s")
    assert refused.returncode == 1 and "shadow.loop" in refused.stderr
    # One call over the shadow per-call cap: it succeeds, and `iou shadow` counts it.
    token = (gw.data_dir / "admin_token").read_text().strip()
    added = httpx.post(f"{gw.url}/v1/agents/{name}/keys",
                       headers={"authorization": f"Bearer {token}"}).json()["api_key"]
    assert httpx.put(f"{gw.url}/v1/tools/cli_shadow_tool", json={"price": "0.01",
                                                                 "category": "tool"},
                     headers={"authorization": f"Bearer {token}"}).status_code == 200
    charged = httpx.post(gw.url + "/v1/charge", json={"tool": "cli_shadow_tool"},
                         headers={"authorization": f"Bearer {added}"})
    assert charged.status_code == 200, charged.text
    sums = json.loads(iou(gw, "--json", "shadow", name).stdout)
    assert sums == {"agent": name, "refusals": {"per_call": {"count": 1, "amount": "0.01"}},
                    "total": {"count": 1, "amount": "0.01"}}
    table = iou(gw, "shadow", name).stdout
    assert "per_call" in table and "total" in table
    cleared = json.loads(iou(gw, "--json", "limits", "--agent", name, "--shadow-clear").stdout)
    assert "shadow" not in cleared
