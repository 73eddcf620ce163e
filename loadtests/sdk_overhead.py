"""The SDK's own cost per charge, against a bare httpx call to the same route.

    python -m loadtests.sdk_overhead [--calls 200] [--rounds 20] [--json PATH]

Starts its own gateway (`iou serve` on the embedded default in a temp dir), provisions one
agent, and charges it sequentially over one kept-alive connection per client, in
alternating blocks:
a bare ``httpx.Client.post`` (the same headers: bearer, a fresh Idempotency-Key, JSON body,
answer parsed with orjson) and ``gateway.sdk.Client.charge`` (typed result, Decimal money,
the retry loop, warnings). Prints the median wall time and client CPU per call of each and
their ratios (SDK / bare). Traffic only to 127.0.0.1; stops what it started.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from gateway.sdk import Client

TOOL = "sdk_bench"
WARM_CALLS = 50
START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_gateway(data_dir: Path, admin_token: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env.update({"IOU_DATA_DIR": str(data_dir), "IOU_ADMIN_TOKEN": admin_token})
    log = open(data_dir / "gateway.log", "ab")  # noqa: SIM115  (outlives this function)
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "serve", "--port",
                                str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("the gateway did not start; see " + str(data_dir / "gateway.log"))


def provision(url: str, admin_token: str) -> str:
    with Client(url, admin_token) as admin:
        admin.request("PUT", f"/v1/tools/{TOOL}", {"price": "0.000001", "category": "tool"})
        created = admin.request("POST", "/v1/agents",
                                {"name": f"bench-{uuid.uuid4().hex[:8]}", "grant": "1000"})
        key: str = created["api_key"]
        return key


def bare_charger(url: str, key: str) -> tuple[Callable[[], None], Callable[[], None]]:
    http = httpx.Client(base_url=url, timeout=30,
                        headers={"authorization": f"Bearer {key}"})
    body = orjson.dumps({"tool": TOOL})

    def charge() -> None:
        response = http.post("/v1/charge", content=body,
                             headers={"idempotency-key": uuid.uuid4().hex,
                                      "content-type": "application/json"})
        answer = orjson.loads(response.content)
        assert response.status_code == 200, answer

    return charge, http.close


def sdk_charger(url: str, key: str) -> tuple[Callable[[], None], Callable[[], None]]:
    iou = Client(url, key)

    def charge() -> None:
        iou.charge(TOOL)

    return charge, iou.close


def timed(charge: Callable[[], None], calls: int) -> dict[str, float]:
    """Wall and client-CPU µs per call over ``calls`` sequential charges."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(calls):
        charge()
    wall_s, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"wall_us": wall_s / calls * 1e6, "cpu_us": cpu_s / calls * 1e6}


def measure(url: str, key: str, calls: int, rounds: int) -> dict[str, Any]:
    """Both clients open for the whole run (warm, one kept-alive connection each), blocks
    of ``calls`` alternating between them, so that a busy machine weighs on both alike;
    medians of the blocks."""
    chargers = {"bare": bare_charger(url, key), "sdk": sdk_charger(url, key)}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in chargers}
    try:
        for charge, _close in chargers.values():
            timed(charge, WARM_CALLS)
        for index in range(rounds):
            # ABBA order: neither client always runs first in a round.
            order = list(chargers) if index % 2 == 0 else list(reversed(chargers))
            for name in order:
                samples[name].append(timed(chargers[name][0], calls))
    finally:
        for _charge, close in chargers.values():
            close()
    result: dict[str, Any] = {"calls_per_block": calls, "blocks": rounds}
    for name, runs in samples.items():
        result[name] = {m: statistics.median(r[m] for r in runs) for m in ("wall_us", "cpu_us")}
    result["ratio_wall"] = result["sdk"]["wall_us"] / result["bare"]["wall_us"]
    result["ratio_cpu"] = result["sdk"]["cpu_us"] / result["bare"]["cpu_us"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per block")
    parser.add_argument("--rounds", type=int, default=20, help="blocks per client")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    admin_token = "bench-admin-" + uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="iou-sdk-bench-") as folder:
        process, url = start_gateway(Path(folder), admin_token)
        try:
            result = measure(url, provision(url, admin_token), args.calls, args.rounds)
        finally:
            process.terminate()
            process.wait(20)
    print(f"bare httpx: {result['bare']['wall_us']:.0f} µs/call wall, "
          f"{result['bare']['cpu_us']:.0f} µs client CPU")
    print(f"sdk:        {result['sdk']['wall_us']:.0f} µs/call wall, "
          f"{result['sdk']['cpu_us']:.0f} µs client CPU")
    print(f"ratio sdk/bare: {result['ratio_wall']:.3f} wall, {result['ratio_cpu']:.3f} CPU")
    if args.json is not None:
        args.json.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
