"""MCP ``tools/call`` through the gateway against the same call straight to the upstream,
in one run: the wall time per call of each and the gateway's CPU per metered call.

    python -m loadtests.bench_mcp [--calls 200] [--rounds 10] [--json PATH]

Starts its own gateway (`iou serve` on the embedded default in a temp dir, one worker) and
the upstream MCP server of loadtests/mcp_upstream.py, registers it, prices its ``echo`` and
provisions one agent. Two clients (the official SDK's, each with one session, warm) call
``echo`` sequentially in alternating blocks (ABBA): one straight to the upstream with its
credential, one to the gateway's /mcp with the agent key. The gateway's CPU is read from
/proc for its worker process over each gateway block: everything the gateway does for a
call (HTTP, JSON-RPC, authentication, hold, forwarding on the pooled session, capture),
since the upstream runs in its own process. A third block type, ``POST /v1/charge`` of the
same tool by the same agent, gives the metering alone for comparison. Traffic only to
127.0.0.1; stops what it started.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import orjson
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from loadtests.bench import cpu_s, server_pids
from loadtests.sdk_overhead import start_gateway
from loadtests.servers import free_port

SECRET = "bench-upstream-secret"
TOOL = "bench.echo"
WARM_CALLS = 50
START_TIMEOUT_S = 30.0


def start_upstream() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "loadtests.mcp_upstream", str(port),
                                SECRET], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/calls", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("the upstream MCP server did not start")


def provision(gateway_url: str, admin_token: str, upstream_url: str) -> str:
    """Register the upstream as ``bench``, price its echo, create an agent; its key."""
    admin = httpx.Client(base_url=gateway_url, timeout=30,
                         headers={"authorization": f"Bearer {admin_token}"})
    with admin:
        admin.put(f"/v1/tools/{TOOL}", json={"price": "0.000001", "category": "tool"}
                  ).raise_for_status()
        admin.put("/v1/mcp/servers/bench", json={
            "url": upstream_url + "/mcp", "headers": {"x-upstream-secret": SECRET}}
                  ).raise_for_status()
        created = admin.post("/v1/agents", json={"name": f"bench-{uuid.uuid4().hex[:8]}",
                                                 "grant": "1000"})
        created.raise_for_status()
        key: str = created.json()["api_key"]
        return key


@asynccontextmanager
async def client(url: str, headers: dict[str, str]) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(headers=headers, timeout=30)
    async with http, Client(streamable_http_client(url + "/mcp", http_client=http),
                            cache=None) as session:
        yield session


async def timed(call: Callable[[], Awaitable[Any]], calls: int, pids: list[int]
                ) -> dict[str, float]:
    """Wall µs per call, and the gateway's CPU µs per call, over ``calls`` sequential calls."""
    cpu0, wall0 = cpu_s(pids), time.perf_counter()
    for _ in range(calls):
        await call()
    wall_s, gateway_cpu_s = time.perf_counter() - wall0, cpu_s(pids) - cpu0
    return {"wall_us": wall_s / calls * 1e6, "gateway_cpu_us": gateway_cpu_s / calls * 1e6}


async def measure(gateway_url: str, key: str, upstream_url: str, pids: list[int], calls: int,
                  rounds: int) -> dict[str, Any]:
    async with (client(upstream_url, {"x-upstream-secret": SECRET}) as direct,
                client(gateway_url, {"authorization": f"Bearer {key}"}) as metered,
                httpx.AsyncClient(base_url=gateway_url, timeout=30, headers={
                    "authorization": f"Bearer {key}",
                    "content-type": "application/json"}) as http):
        async def straight() -> None:
            assert not (await direct.call_tool("echo", {"text": "x"})).is_error

        async def through() -> None:
            result = await metered.call_tool(TOOL, {"text": "x"})
            assert not result.is_error and result.meta and "iou/charge_id" in result.meta

        async def charge() -> None:  # the same agent and tool, metered without MCP
            answer = await http.post("/v1/charge", content=b'{"tool": "bench.echo"}')
            assert answer.status_code == 200, answer.text

        callers = {"direct": straight, "gateway": through, "charge": charge}
        for call in callers.values():
            await timed(call, WARM_CALLS, pids)
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in callers}
        for index in range(rounds):
            order = list(callers) if index % 2 == 0 else list(reversed(callers))
            for name in order:
                samples[name].append(await timed(callers[name], calls, pids))
    result: dict[str, Any] = {"calls_per_block": calls, "blocks": rounds}
    for name, runs in samples.items():
        result[name] = {m: statistics.median(r[m] for r in runs)
                        for m in ("wall_us", "gateway_cpu_us")}
    result["added_wall_us"] = result["gateway"]["wall_us"] - result["direct"]["wall_us"]
    result["gateway_cpu_us_per_call"] = result["gateway"]["gateway_cpu_us"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per block")
    parser.add_argument("--rounds", type=int, default=10, help="blocks per client")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    admin_token = "bench-admin-" + uuid.uuid4().hex
    upstream, upstream_url = start_upstream()
    try:
        with tempfile.TemporaryDirectory(prefix="iou-mcp-bench-") as folder:
            gateway, gateway_url = start_gateway(Path(folder), admin_token)
            try:
                key = provision(gateway_url, admin_token, upstream_url)
                result = asyncio.run(measure(gateway_url, key, upstream_url,
                                             server_pids(gateway.pid), args.calls,
                                             args.rounds))
            finally:
                gateway.terminate()
                gateway.wait(20)
    finally:
        upstream.terminate()
        upstream.wait(20)
    print(f"POST /v1/charge:          {result['charge']['wall_us']:.0f} µs/call wall, "
          f"{result['charge']['gateway_cpu_us']:.0f} µs of gateway CPU per charge")
    print(f"straight to the upstream: {result['direct']['wall_us']:.0f} µs/call wall")
    print(f"through the gateway:      {result['gateway']['wall_us']:.0f} µs/call wall "
          f"(+{result['added_wall_us']:.0f} µs), "
          f"{result['gateway_cpu_us_per_call']:.0f} µs of gateway CPU per call")
    if args.json is not None:
        args.json.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
