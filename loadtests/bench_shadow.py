"""Redis CPU per charge with shadow limits, against the same limits enforced, and none.

    python -m loadtests.bench_shadow [--rounds 5] [--requests 200000] [--kind K ...]
        [--baseline-lua DIR]

redis-benchmark EVALSHA of the real lua/charge.lua (50 clients, pipeline 16, unix socket,
appendfsync always) on one agent of each kind, rounds alternating, the median of Redis's own
``usec_per_call`` (INFO commandstats) per kind:
  - none: no limits;
  - enforced pc+dl / shadow pc+dl: per-call and daily caps only (agent and category), no
    walls, enforced or as shadow limits (never firing);
  - enforced: per-call, daily and every wall (hour, week, month, call caps of the agent,
    its category and the tool), set so high that no call is refused;
  - shadow: the same caps as shadow limits, never firing;
  - shadow firing: the same with a shadow per-call cap below the price, so every call is a
    would-be refusal (the sums' two HINCRBY and the event's field are written each time);
  - enforced, full hour: every wall enforced, the walls hash first filled as a long-running
    agent's is (``fill_long_running``): 59 minutes of spending (agent and category), 40
    other tools and 10 other categories used today, counters of earlier periods. It is
    written in the counters' layout before #16's cost fix (one field per period), which the
    scripts of today migrate on their first touch, so one bench compares both layouts.
With ``--baseline-lua DIR`` (e.g. the lua/ folder of an older checkout) each kind runs also
on DIR's charge.lua in the same rounds, as "<kind> (baseline)": before and after in one run.
The figures go into docs/benchmarks.md with this command.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from gateway.store import keys
from loadtests.servers import free_port

BIG = str(10**15)
CALLS = "1000000000"
CAPS = {"pc": BIG, "dl": BIG, "c:tool:pc": BIG, "c:tool:dl": BIG, "hr": BIG, "wk": BIG,
        "mo": BIG, "nm": CALLS, "nh": CALLS, "nd": CALLS, "c:tool:hr": BIG, "c:tool:wk": BIG,
        "c:tool:mo": BIG, "c:tool:nm": CALLS, "c:tool:nh": CALLS, "c:tool:nd": CALLS,
        "t:web_search:pc": BIG, "t:web_search:nm": CALLS, "t:web_search:nh": CALLS,
        "t:web_search:nd": CALLS}
SIMPLE = {"pc": BIG, "dl": BIG, "c:tool:pc": BIG, "c:tool:dl": BIG}
KINDS: dict[str, dict[str, str]] = {
    "none": {},
    "enforced pc+dl": SIMPLE,
    "shadow pc+dl": {**{"s." + f: v for f, v in SIMPLE.items()}, "sx": "1"},
    "enforced": {**CAPS, "x": "1"},
    "shadow": {**{"s." + f: v for f, v in CAPS.items()}, "x": "1", "sx": "1"},
    "shadow firing": {**{"s." + f: v for f, v in CAPS.items()}, "s.pc": "1", "x": "1",
                      "sx": "1"},
}
KINDS["enforced, full hour"] = KINDS["enforced"]
PRICE_MICROS = 2  # above the firing kind's shadow per-call cap of 1
OTHER_TOOLS = 40
OTHER_CATEGORIES = 10


def fill_long_running(client: redis.Redis, walls_key: str) -> None:
    """A long-running agent's walls hash, in the layout of one field per counter and period
    (``H<minute>``, ``N<minute>``, ``O<hour>``, ``D<day>``, ``W<week>``, ``M<month>``, scope
    '', ':<category>' or '/<tool>'): spending in each of the last 59 minutes, calls of today
    by other tools and categories, and counters of past periods."""
    from gateway.metering.walls import periods

    now_s, _ = client.time()
    p = periods(int(now_s) * 1000)
    fields: dict[str, str] = {}
    for minute in range(p.minute - 59, p.minute):
        for scope in ("", ":tool"):
            fields[f"H{minute}{scope}"] = "2000"
    for i in range(OTHER_TOOLS):
        for name in (f"O{p.hour}/t{i}", f"D{p.day}/t{i}", f"D{p.day - 1}/t{i}"):
            fields[name] = "3"
    for i in range(OTHER_CATEGORIES):
        for name in (f"W{p.week}:c{i}", f"M{p.month}:c{i}", f"D{p.day}:c{i}",
                     f"H{p.minute - 1}:c{i}"):
            fields[name] = "5"
    client.hset(walls_key, items=[x for pair in fields.items() for x in pair])


def _start(binary: str, data_dir: str) -> tuple[subprocess.Popen[bytes], str, redis.Redis]:
    sock = f"{data_dir}/redis.sock"
    server = subprocess.Popen(
        [binary, "--port", str(free_port()), "--bind", "127.0.0.1", "--dir", data_dir,
         "--unixsocket", sock, "--appendonly", "yes", "--appendfsync", "always", "--save", "",
         "--maxmemory-policy", "noeviction"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(unix_socket_path=sock)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            return server, sock, client
        except redis.RedisError:
            assert time.monotonic() < deadline, f"{binary} did not start"
            time.sleep(0.05)


BASELINE = " (baseline)"


def one_run(client: redis.Redis, sock: str, sha: str, label: str, requests: int) -> float:
    """Redis µs per charge of one redis-benchmark run on a fresh agent of the kind ``label``
    names (a baseline's label ends in BASELINE)."""
    kind = label.removesuffix(BASELINE)
    agent = "bench-" + re.sub(r"\W", "-", label)
    k = keys.agent_keys(agent, 16)
    client.delete(k.agent_hash, k.window, k.walls)
    client.hset(k.agent_hash, mapping={"bal": BIG, "held": "0", "frozen": "0", "lowf": "0"})
    for field, value in KINDS[kind].items():
        client.hset(k.agent_hash, field, value)
    if kind == "enforced, full hour":
        fill_long_running(client, k.walls)
    client.hset(k.tools, "web_search", f"1 {PRICE_MICROS} tool fixed")
    client.config_resetstat()
    subprocess.run(["redis-benchmark", "-s", sock, "-n", str(requests), "-c", "50", "-P", "16",
                    "-q", "EVALSHA", sha, "7", k.agent_hash, k.window, k.idempotency("none"),
                    k.events, k.webhooks, k.tools, k.walls, agent,
                    "01900000-0000-7000-8000-000000000000", "web_search", "", BIG, "", "", ""],
                   capture_output=True, text=True, check=True)
    assert client.hget(k.agent_hash, "bal") != BIG.encode(), "the script did not charge"
    fired = client.hget(k.agent_hash, "sn:per_call")
    assert (fired is not None) == (kind == "shadow firing"), (kind, fired)
    client.delete(k.events)  # keep the AOF and memory small between runs
    return float(client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])


def measure(rounds: int, requests: int, kinds: list[str] | None = None,
            baseline_lua: Path | None = None) -> dict[str, Any]:
    from gateway.store.scripts import load_script

    binary = shutil.which("redis-server") or "redis-server"
    with tempfile.TemporaryDirectory(prefix="iou-shadow-") as data_dir:
        server, sock, client = _start(binary, data_dir)
        try:
            version = client.info("server").get("redis_version", "?")
            shas = {kind: client.script_load(load_script("charge").source)
                    for kind in kinds or KINDS}
            if baseline_lua is not None:
                source = ((baseline_lua / "_lib.lua").read_text() + "\n"
                          + (baseline_lua / "charge.lua").read_text())
                shas |= {kind + BASELINE: client.script_load(source) for kind in kinds or KINDS}
            runs: dict[str, list[float]] = {label: [] for label in shas}
            for _ in range(rounds):
                for label, sha in shas.items():
                    runs[label].append(one_run(client, sock, sha, label, requests))
            client.close()
        finally:
            server.terminate()
            server.wait(20)
    return {"server": f"{Path(binary).name} {version}", "rounds": rounds, "requests": requests,
            "median_us": {kind: statistics.median(v) for kind, v in runs.items()},
            "runs_us": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--kind", action="append", choices=list(KINDS),
                        help="only these kinds (repeatable; default: every kind)")
    parser.add_argument("--baseline-lua", type=Path,
                        help="also run each kind on this folder's _lib.lua + charge.lua")
    args = parser.parse_args()
    result = measure(args.rounds, args.requests, args.kind, args.baseline_lua)
    print(f"{result['server']}, {args.rounds} alternating rounds of {args.requests} "
          "EVALSHA charge.lua (-c 50 -P 16, unix socket, appendfsync always):")
    for kind, us in result["median_us"].items():
        print(f"  {kind:31s} {us:6.2f} µs of Redis CPU per charge (median)")
    medians = result["median_us"]
    for suffix in ("", BASELINE):
        for kind in ("enforced", "enforced, full hour"):
            if medians.get("none" + suffix) and kind + suffix in medians:
                print(f"  {kind}{suffix} ÷ none{suffix}: "
                      f"{medians[kind + suffix] / medians['none' + suffix]:.2f}")


if __name__ == "__main__":
    main()
