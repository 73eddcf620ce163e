"""Attack: an MCP ``tools/call`` answers with its receipt, as the contract promises.

"Invoke and MCP calls always answer with ``receipt`` ... warnings and the receipt ride in
``_meta``": a metered MCP call's result carried the charge id, cost and balance, but no
receipt, so an agent on MCP could not prove what it paid."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest

from gateway.sdk import Client
from tests.gateway_proc import Gateway
from tests.proc_helpers import wait_for
from tests.servers import free_port

SECRET = "attack-upstream-secret"
MCP_HEADERS = {"accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "loadtests.mcp_upstream", str(port), SECRET],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool | None:
        try:
            return httpx.get(url + "/calls", headers={"x-upstream-secret": SECRET},
                             timeout=2).status_code == 200 or None
        except httpx.HTTPError:
            return None

    try:
        wait_for("the upstream MCP server", up, 30)
        yield url + "/mcp"
    finally:
        process.terminate()
        process.wait(10)


def _call(gw: Gateway, key: str, name: str) -> dict[str, object]:
    r = httpx.post(gw.url + "/mcp", timeout=30, headers={**MCP_HEADERS,
                                                           "authorization": f"Bearer {key}"},
                   json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                         "params": {"name": name, "arguments": {"text": "hi"}}})
    assert r.status_code == 200, r.text
    result: dict[str, object] = r.json()["result"]
    return result


@pytest.mark.parametrize("tool, price", [("echo", "0.25"), ("free", "0")])
def test_mcp_call_answers_with_a_verifiable_receipt(gateway: Gateway, upstream_url: str,
                                                    tool: str, price: str) -> None:
    server = f"atk{uuid.uuid4().hex[:6]}"
    name = f"atk-mcp-{uuid.uuid4().hex[:8]}"
    with gateway.admin() as admin:
        r = admin.put(f"/v1/mcp/servers/{server}", json={
            "url": upstream_url, "headers": {"x-upstream-secret": SECRET}})
        assert r.status_code == 200, r.text
        r = admin.put(f"/v1/tools/{server}.{tool}", json={"price": price, "category": "tool"})
        assert r.status_code == 200, r.text
        key = admin.post("/v1/agents", json={"name": name, "grant": "5"}).json()["api_key"]
    result = _call(gateway, key, f"{server}.{tool}")
    assert result["isError"] is False, result
    meta = result["_meta"]
    assert isinstance(meta, dict) and "iou/receipt" in meta, meta
    with Client(gateway.url, key) as client:
        claims = client.verify_receipt(meta["iou/receipt"])
    assert claims["charge_id"] == meta["iou/charge_id"]
    assert claims["agent"] == name and claims["tool"] == f"{server}.{tool}"
    assert claims["cost"] == price and claims["balance_after"] == meta["iou/balance"]
