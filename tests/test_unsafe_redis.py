"""Redis answers that make writing unsafe fail closed: 503 ``unavailable`` on every route,
nothing half-applied, and service back by itself when Redis is (no gateway restart).

Each fault is made for real on a redis-server of this module's own: out of memory
(``maxmemory`` below use), LOADING (``DEBUG RELOAD`` slowed by ``key-load-delay``, the
loading code of a restart), BUSY (a script past ``busy-reply-threshold``), READONLY and
MASTERDOWN (the server turned into a replica of a master that is down), NOREPLICAS
(``min-replicas-to-write``). Before each fault the dataset is fingerprinted key by key
(``DEBUG DIGEST-VALUE``) and after it is cleared it must be the same: a refused call wrote
nothing, not even an idempotency marker.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from gateway.store.errors import StoreUnavailable
from gateway.store.resp import RedisConnection, ReplyError, parse_redis_url, refusal_kind
from tests.gateway_proc import Gateway, running_gateway
from tests.http_helpers import error_of, new_agent, seed_tools, unique
from tests.servers import free_port, redis_server

LOADING_KEYS = 10_000  # x 100 µs of key-load-delay: about 2 s of LOADING
DEADLINE_S = 15.0


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with redis_server("--enable-debug-command", "local") as found:
        yield found


@pytest.fixture(scope="module")
def gw(server: tuple[str, subprocess.Popen[bytes]]) -> Iterator[Gateway]:
    # No ledger writer: its stream reads would change the fingerprint while nothing is paid.
    with running_gateway(server[0], writer=False) as gateway:
        seed_tools(gateway)
        with gateway.admin() as admin:
            closed = f"http://127.0.0.1:{free_port()}/never"
            assert admin.put("/v1/tools/proxied", json={"price": "0.5", "category": "tool",
                                                       "upstream": closed}).status_code == 200
        yield gateway


@pytest.fixture
def r(server: tuple[str, subprocess.Popen[bytes]]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server[0])
    yield client
    client.close()


@dataclass
class Account:
    name: str
    key: str
    hold_id: str


def account(gw: Gateway) -> Account:
    name, key = new_agent(gw, "5")
    with gw.agent(key) as agent:
        hold = agent.post("/v1/holds", json={"tool": "web_search", "ttl_s": 3600})
    assert hold.status_code == 201, hold.text
    return Account(name, key, hold.json()["hold_id"])


def paid_calls(gw: Gateway, acct: Account, catalog: bool = True) -> dict[str, httpx.Response]:
    """One call of every route that writes, by the caller that may make it (``catalog``:
    with the tool routes)."""
    idem = {"idempotency-key": unique("k")}
    out: dict[str, httpx.Response] = {}
    with gw.agent(acct.key) as agent:
        out["charge"] = agent.post("/v1/charge", json={"tool": "web_search"})
        out["charge keyed"] = agent.post("/v1/charge", json={"tool": "web_search"}, headers=idem)
        out["batch"] = agent.post("/v1/charges", json={"charges": [{"tool": "web_search"}] * 3})
        out["batch keyed"] = agent.post("/v1/charges", headers=idem,
                                        json={"charges": [{"tool": "email_send"}]})
        out["hold"] = agent.post("/v1/holds", json={"tool": "web_search"})
        out["capture"] = agent.post(f"/v1/holds/{acct.hold_id}/capture", json={"cost": "0.05"})
        out["release"] = agent.post(f"/v1/holds/{acct.hold_id}/release")
        out["invoke"] = agent.post("/v1/tools/proxied/invoke", json={})
    with gw.admin() as admin:
        path = f"/v1/agents/{acct.name}"
        out["create agent"] = admin.post("/v1/agents", json={"name": unique("new")},
                                         headers=idem)
        out["fund"] = admin.post(f"{path}/fund", json={"amount": "1"})
        out["limits"] = admin.patch(f"{path}/limits", json={"per_call": "1"})
        out["freeze"] = admin.post(f"{path}/freeze")
        out["add key"] = admin.post(f"{path}/keys")
        if catalog:
            out["put tool"] = admin.put("/v1/tools/web_search", json={"price": "0.07",
                                                                      "category": "tool"})
            out["delete tool"] = admin.delete("/v1/tools/email_send")
    return out


def assert_all_unavailable(answers: dict[str, httpx.Response], port: int) -> None:
    wrong = {route: f"{a.status_code} {a.headers.get('content-type')} {a.text[:120]}"
             for route, a in answers.items() if not _is_unavailable(a, port)}
    assert wrong == {}


def _is_unavailable(answer: httpx.Response, port: int) -> bool:
    if answer.status_code != 503 or answer.headers.get("content-type") != "application/json":
        return False
    message = answer.json().get("message", "")
    return (error_of(answer) == "unavailable" and "127.0.0.1" not in message
            and str(port) not in message)


def fingerprint(r: redis.Redis) -> dict[bytes, bytes]:
    """Every key with a digest of its value (and so any change, any new or lost key)."""
    names = sorted(r.scan_iter(count=1000))
    digests: list[Any] = []
    for i in range(0, len(names), 500):
        digests += command(r, "DEBUG", "DIGEST-VALUE", *names[i:i + 500])
    return dict(zip(names, digests, strict=True))


def charge_ok_within(gw: Gateway, acct: Account, deadline_s: float = DEADLINE_S) -> None:
    """The gateway serves again, by itself: poll a charge until it is 200."""
    deadline = time.monotonic() + deadline_s
    with gw.agent(acct.key) as agent:
        while (answer := agent.post("/v1/charge", json={"tool": "web_search"})).status_code != 200:
            assert answer.status_code == 503, answer.text
            assert time.monotonic() < deadline, "the gateway did not recover by itself"
            time.sleep(0.1)


def port_of(r: redis.Redis) -> int:
    port: int = r.connection_pool.connection_kwargs["port"]
    return port


def command(r: redis.Redis, *args: object) -> Any:
    return r.execute_command(*args)  # type: ignore[no-untyped-call]


def run_fault(gw: Gateway, r: redis.Redis, make: Callable[[], object],
              clear: Callable[[], object], catalog: bool = True) -> None:
    acct = account(gw)
    before = fingerprint(r)
    make()
    try:
        answers = paid_calls(gw, acct, catalog)
    finally:
        clear()
    assert_all_unavailable(answers, port_of(r))
    assert fingerprint(r) == before, "a refused call left something in Redis"
    charge_ok_within(gw, acct)
    with gw.agent(acct.key) as agent:
        assert agent.get("/v1/balance").json()["balance"] == "4.9"  # 5 - hold 0.05 - 0.05


def test_out_of_memory_refuses_then_recovers(gw: Gateway, r: redis.Redis) -> None:
    used = int(r.info("memory")["used_memory"])

    def make() -> None:
        r.config_set("maxmemory", used // 2)

    # Not the catalog routes: their scripts start by deleting (DEL, SREM), which Redis
    # admits under OOM, and then run whole (see the next test).
    run_fault(gw, r, make, lambda: r.config_set("maxmemory", 0), catalog=False)


def test_oom_never_half_applies_a_script(r: redis.Redis) -> None:
    """What the scripts rely on, checked on this Redis. Redis does not refuse a script
    without a shebang at its start; under OOM it refuses the script's first write that may
    grow memory, which aborts the script before anything was written (the scripts read and
    check first, then write). A script whose first write frees memory (DEL) is admitted and
    then runs whole. Either way, all or nothing."""
    r.delete("probe:a", "probe:b", "probe:c")
    r.config_set("maxmemory", 1)
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            r.eval("redis.call('GET', 'probe:a'); redis.call('SET', 'probe:a', 1);"
                   "redis.call('SET', 'probe:b', 1)", 0)
        assert r.exists("probe:a", "probe:b") == 0
        r.eval("redis.call('DEL', 'probe:a'); redis.call('SET', 'probe:b', 1);"
               "redis.call('SET', 'probe:c', 1)", 0)
        assert r.exists("probe:b", "probe:c") == 2
    finally:
        r.config_set("maxmemory", 0)
        r.delete("probe:b", "probe:c")


def test_noreplicas_refuses_then_recovers(gw: Gateway, r: redis.Redis) -> None:
    run_fault(gw, r, lambda: r.config_set("min-replicas-to-write", 1),
              lambda: r.config_set("min-replicas-to-write", 0))


@pytest.mark.parametrize("serve_stale", [True, False], ids=["readonly", "masterdown"])
def test_replica_refuses_then_recovers(gw: Gateway, r: redis.Redis, serve_stale: bool) -> None:
    """The server becomes a replica of a master that is down: it keeps its data (no sync
    ever happens) and refuses writes (READONLY), and reads too without stale serving
    (MASTERDOWN)."""

    def make() -> None:
        r.config_set("replica-serve-stale-data", "yes" if serve_stale else "no")
        command(r, "REPLICAOF", "127.0.0.1", free_port())

    def clear() -> None:
        command(r, "REPLICAOF", "NO", "ONE")
        r.config_set("replica-serve-stale-data", "yes")

    run_fault(gw, r, make, clear)


def test_busy_script_refuses_then_recovers(gw: Gateway, r: redis.Redis) -> None:
    blocker = redis.Redis(host="127.0.0.1", port=port_of(r))
    thread = threading.Thread(target=_ignore_errors(
        lambda: blocker.eval("while true do end", 0)), daemon=True)

    def make() -> None:
        r.config_set("busy-reply-threshold", 50)
        thread.start()
        _wait_for_error(r, "BUSY")

    def clear() -> None:
        _until(lambda: _script_killed(r))
        thread.join(DEADLINE_S)
        blocker.close()
        r.config_set("busy-reply-threshold", 5000)

    run_fault(gw, r, make, clear)


def test_loading_refuses_then_recovers(gw: Gateway, r: redis.Redis) -> None:
    """LOADING comes from the same code as loading at start (rdbLoad), here run by DEBUG
    RELOAD on a server slowed to ~2 s of loading."""
    acct = account(gw)
    command(r, "DEBUG", "POPULATE", LOADING_KEYS, "filler")
    before = fingerprint(r)
    r.config_set("loading-process-events-interval-bytes", 1024)
    r.config_set("key-load-delay", 100)
    reloader = redis.Redis(host="127.0.0.1", port=port_of(r))
    thread = threading.Thread(target=lambda: command(reloader, "DEBUG", "RELOAD"), daemon=True)
    thread.start()
    try:
        _wait_for_error(r, "LOADING")
        answers = paid_calls(gw, acct)
        with gw.agent(acct.key) as agent:
            answers["balance (a read)"] = agent.get("/v1/balance")
        still_loading = _error_of(r) == "LOADING"
    finally:
        thread.join(60)
        reloader.close()
        r.config_set("key-load-delay", 0)
    assert still_loading, "the load ended before the calls: make it slower"
    assert_all_unavailable(answers, port_of(r))
    assert fingerprint(r) == before
    charge_ok_within(gw, acct)


def test_stopped_redis_message_names_no_host_or_port() -> None:
    with redis_server() as (url, process), running_gateway(url, writer=False) as gw:
        seed_tools(gw)
        acct = account(gw)
        port = parse_redis_url(url).port
        process.terminate()
        process.wait()
        answers = paid_calls(gw, acct)
        answers["readyz"] = httpx.get(gw.url + "/readyz")
        assert "127.0.0.1:" not in answers["readyz"].text
        answers.pop("readyz")
        assert_all_unavailable(answers, port)
        assert f"127.0.0.1:{port}" in gw.log_text()  # named for the operator, in the log


async def test_connection_reset_mid_reply_is_unavailable_then_recovers() -> None:
    """A server that sends half a reply and resets: the caller gets StoreUnavailable (never a
    half-parsed value), and the next call reconnects and gets a whole reply."""
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        served += 1
        await reader.read(1024)
        if served == 1:
            writer.write(b"*3\r\n:1\r\n$5\r\nhel")
            await writer.drain()
            writer.transport.abort()
            return
        writer.write(b"*3\r\n:1\r\n$5\r\nhello\r\n:2\r\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    conn = RedisConnection(parse_redis_url(f"redis://127.0.0.1:{port}/0"))
    try:
        with pytest.raises(StoreUnavailable) as refused:
            await conn.call(b"EVALSHA", b"x", 0)
        assert str(port) not in str(refused.value)
        assert await conn.call(b"EVALSHA", b"x", 0) == [1, b"hello", 2]
    finally:
        conn.close()
        listener.close()
        await listener.wait_closed()


@pytest.mark.parametrize(("reply", "kind"), [
    ("OOM command not allowed when used memory > 'maxmemory'.", "OOM"),
    ("OOM command not allowed when used memory > 'maxmemory'. script: 1f0e, on "
     "@user_script:12.", "OOM"),
    # Redis before 7 wraps an error raised inside a script:
    ("ERR Error running script (call to f_1f0e): @user_script:12: -OOM command not allowed "
     "when used memory > 'maxmemory'.", "OOM"),
    ("ERR Error running script (call to f_1f0e): @user_script:3: -READONLY You can't write "
     "against a read only replica.", "READONLY"),
    ("LOADING Redis is loading the dataset in memory", "LOADING"),
    ("BUSY Redis is busy running a script.", "BUSY"),
    ("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to "
     "persist to disk.", "MISCONF"),
    ("NOSCRIPT No matching script. Please use EVAL.", None),  # reloaded, never a 503
    ("ERR Error running script (call to f_1f0e): @user_script:3: user_script:3: bad", None),
    ("MOVED 3999 127.0.0.1:6381", None),  # followed by the cluster client
    ("WRONGTYPE Operation against a key holding the wrong kind of value", None),
])
def test_refusal_kinds(reply: str, kind: str | None) -> None:
    assert refusal_kind(ReplyError(reply)) == kind


def _error_of(r: redis.Redis) -> str | None:
    try:
        r.get("probe")
    except redis.exceptions.ResponseError as exc:
        return str(exc).split(" ", 1)[0]
    except redis.exceptions.BusyLoadingError:
        return "LOADING"
    return None


def _wait_for_error(r: redis.Redis, kind: str) -> None:
    _until(lambda: _error_of(r) == kind)


def _script_killed(r: redis.Redis) -> bool:
    try:
        r.script_kill()
    except redis.exceptions.ResponseError as exc:
        return "NOTBUSY" in str(exc)
    return True


def _until(done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        assert time.monotonic() < deadline, "the fault did not show in time"
        time.sleep(0.01)


def _ignore_errors(call: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        with suppress(redis.RedisError):
            call()
    return run
