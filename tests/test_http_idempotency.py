"""The HTTP-level idempotency records (agent creation, freeze, keys, invoke, batches) are
crash-safe: created with their expiry in one command, and a retry after a crash between
the side effect and the kept answer has the effect once and answers it.

The crash is injected in-process, at the one command that keeps the answer (it fails as if
the gateway had died right there); the store is a real Redis.
"""

from __future__ import annotations

import http.server
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import redis

from gateway.api.app import create_app
from gateway.api.context import Context
from gateway.config import load_settings
from gateway.metering.errors import Unavailable
from gateway.store import keys
from tests.gateway_proc import ADMIN_TOKEN, Gateway
from tests.http_helpers import new_agent, unique, upstream_server

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


class _Upstream(http.server.BaseHTTPRequestHandler):
    calls: ClassVar[int] = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        _Upstream.calls += 1
        body = b'{"answer": 42}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with upstream_server(_Upstream, "/tool") as url:
        yield url


class App:
    def __init__(self, client: httpx.AsyncClient, ctx: Context) -> None:
        self.client = client
        self.ctx = ctx
        self.failures = 0

    def fail_keeping_answer(self, monkeypatch: pytest.MonkeyPatch, marker: bytes = b"") -> None:
        """The next command that keeps an answer in an HTTP idempotency record (and holds
        ``marker``) fails, as if the gateway had been killed right before it."""
        conn = self.ctx.engine.conn
        original = conn.call_or_raise

        async def call(*args: Any) -> Any:
            name = args[1] if len(args) > 1 else b""
            name = name.encode() if isinstance(name, str) else name
            if (isinstance(name, bytes) and b"hidem" in name and _keeps_answer(args)
                    and any(marker in _bytes(a) for a in args[2:]) and not self.failures):
                self.failures += 1
                raise Unavailable("injected: killed before the answer was kept")
            return await original(*args)

        monkeypatch.setattr(conn, "call_or_raise", call)

    async def admin(self, method: str, path: str, key: str | None = None,
                    **kw: Any) -> httpx.Response:
        headers = {**ADMIN, **({"idempotency-key": key} if key else {})}
        return await self.client.request(method, path, headers=headers, **kw)


def _keeps_answer(args: tuple[Any, ...]) -> bool:
    """A command that writes an answer into a record (not one that only binds the key)."""
    fields = [_bytes(a) for a in args[2:]]
    return (args[0] == b"SET" and b'"s":' in fields[0]) or (args[0] == b"HSET" and b"s" in fields)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


@pytest.fixture
async def app(gateway: Gateway, gateway_redis: tuple[str, Any], tmp_path: Path
              ) -> AsyncIterator[App]:
    """The app in this process, on the module's Redis (its gateway seeded the tools)."""
    settings = load_settings({"IOU_REDIS_URL": gateway_redis[0], "IOU_DATA_DIR": str(tmp_path),
                              "IOU_ADMIN_TOKEN": ADMIN_TOKEN})
    asgi = create_app(settings)
    async with asgi.app.router.lifespan_context(asgi.app):
        transport = httpx.ASGITransport(app=asgi, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield App(client, asgi.app.state.ctx)


def key_ids(gateway_redis: tuple[str, Any], agent: str) -> list[str]:
    with redis.Redis.from_url(gateway_redis[0], decode_responses=True) as client:
        return sorted(client.hkeys(keys.agent_keys(agent, 16).keys))


async def test_agent_creation_killed_before_its_answer_is_kept(
        app: App, gateway_redis: tuple[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    name = unique("crash")
    app.fail_keeping_answer(monkeypatch)
    first = await app.admin("POST", "/v1/agents", "c-" + name, json={"name": name, "grant": "3"})
    assert first.status_code == 503 and app.failures == 1
    again = await app.admin("POST", "/v1/agents", "c-" + name, json={"name": name, "grant": "3"})
    assert again.status_code == 201, again.text
    body = again.json()
    assert body["agent"] == name and body["balance"] == "3" and body["api_key"] is None
    assert "POST /v1/agents/{agent}/keys" in body["api_key_note"]
    assert again.headers["idempotent-replayed"] == "true"
    assert key_ids(gateway_redis, name) == [body["key_id"]]  # created once
    third = await app.admin("POST", "/v1/agents", "c-" + name, json={"name": name, "grant": "3"})
    assert third.json() == body
    other = await app.admin("POST", "/v1/agents", "other-" + name, json={"name": name})
    assert other.status_code == 409 and other.json()["error"] == "agent_exists"


async def test_key_creation_killed_before_its_answer_is_kept(
        app: App, gateway: Gateway, gateway_redis: tuple[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    name, _ = new_agent(gateway)
    before = key_ids(gateway_redis, name)
    app.fail_keeping_answer(monkeypatch)
    first = await app.admin("POST", f"/v1/agents/{name}/keys", "k-" + name)
    assert first.status_code == 503
    again = await app.admin("POST", f"/v1/agents/{name}/keys", "k-" + name)
    assert again.status_code == 201, again.text
    assert again.json()["api_key"] is None
    after = key_ids(gateway_redis, name)
    assert len(after) == len(before) + 1 and again.json()["key_id"] in after


async def test_freeze_killed_before_its_answer_is_kept(
        app: App, gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    name, _ = new_agent(gateway)
    app.fail_keeping_answer(monkeypatch)
    assert (await app.admin("POST", f"/v1/agents/{name}/freeze", "f-" + name)).status_code == 503
    again = await app.admin("POST", f"/v1/agents/{name}/freeze", "f-" + name)
    assert again.status_code == 200 and again.json() == {"agent": name, "frozen": True}


async def test_invoke_killed_after_its_capture_is_charged_once(
        app: App, gateway: Gateway, upstream: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = unique("proxied").replace("-", "_")
    with gateway.admin() as admin:
        assert admin.put(f"/v1/tools/{tool}", json={"price": "0.5", "category": "tool",
                                                    "upstream": upstream}).status_code == 200
    _, api_key = new_agent(gateway, "2")
    headers = {"authorization": f"Bearer {api_key}", "idempotency-key": "inv-1"}
    calls = _Upstream.calls
    app.fail_keeping_answer(monkeypatch, b"x-iou-charge-id")
    first = await app.client.post(f"/v1/tools/{tool}/invoke", json={"q": 1}, headers=headers)
    assert first.status_code == 503 and app.failures == 1
    again = await app.client.post(f"/v1/tools/{tool}/invoke", json={"q": 1}, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json() == {"answer": 42} and again.headers["content-type"] == "application/json"
    assert again.headers["x-iou-balance"] == "1.5" and again.headers["x-iou-charge-id"]
    assert _Upstream.calls == calls + 1  # the upstream answer was kept, not asked again
    status = await app.client.get("/v1/balance", headers=headers)
    assert status.json()["balance"] == "1.5" and status.json()["held"] == "0"
    third = await app.client.post(f"/v1/tools/{tool}/invoke", json={"q": 1}, headers=headers)
    assert third.content == again.content
    assert third.headers["x-iou-charge-id"] == again.headers["x-iou-charge-id"]


async def test_invoke_killed_before_its_capture_is_charged_once(
        app: App, gateway: Gateway, upstream: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = unique("proxied").replace("-", "_")
    with gateway.admin() as admin:
        assert admin.put(f"/v1/tools/{tool}", json={"price": "0.5", "category": "tool",
                                                    "upstream": upstream}).status_code == 200
    _, api_key = new_agent(gateway, "2")
    headers = {"authorization": f"Bearer {api_key}", "idempotency-key": "inv-2"}
    engine = app.ctx.engine
    original = engine.capture

    async def capture_dies(*args: Any, **kw: Any) -> Any:
        monkeypatch.setattr(engine, "capture", original)
        raise Unavailable("injected: killed before the capture")

    monkeypatch.setattr(engine, "capture", capture_dies)
    first = await app.client.post(f"/v1/tools/{tool}/invoke", json={"q": 2}, headers=headers)
    assert first.status_code == 503
    again = await app.client.post(f"/v1/tools/{tool}/invoke", json={"q": 2}, headers=headers)
    assert again.status_code == 200 and again.headers["x-iou-balance"] == "1.5"
    status = await app.client.get("/v1/balance", headers=headers)
    assert status.json()["balance"] == "1.5" and status.json()["held"] == "0"


def test_every_idempotency_record_is_created_with_its_expiry(
        gateway: Gateway, gateway_redis: tuple[str, Any], upstream: str) -> None:
    """Watch every command the gateway sends (MONITOR) while keyed requests of each kind
    run: no command creates an HTTP idempotency record without its expiry."""
    tool = unique("proxied").replace("-", "_")
    name, api_key = new_agent(gateway, "5")
    with redis.Redis.from_url(gateway_redis[0]) as client, client.monitor() as monitor:
        with gateway.admin() as admin:
            admin.put(f"/v1/tools/{tool}", json={"price": "0.5", "category": "tool",
                                                 "upstream": upstream})
            admin.post("/v1/agents", json={"name": name + "-b"}, headers={"idempotency-key": "a"})
            admin.post(f"/v1/agents/{name}/freeze", headers={"idempotency-key": "f"})
            admin.post(f"/v1/agents/{name}/unfreeze", headers={"idempotency-key": "u"})
            admin.post(f"/v1/agents/{name}/keys", headers={"idempotency-key": "k"})
        with gateway.agent(api_key) as agent:
            agent.post("/v1/charges", json={"charges": [{"tool": "web_search"}]},
                       headers={"idempotency-key": "b"})
            agent.post(f"/v1/tools/{tool}/invoke", json={}, headers={"idempotency-key": "i"})
            agent.get("/v1/balance", headers={"x-end": "1"})
        commands = []
        for event in monitor.listen():
            command = str(event["command"])
            if "hidem" in command:
                commands.append(command)
            if "HGETALL" in command and "win:" + name in command:
                break  # the balance call: everything before it has been sent
    writes = [c for c in commands if c.split()[0].upper() not in ("GET", "HMGET", "EVAL",
                                                                  "DEL", "PTTL")]
    assert writes, commands
    for command in writes:
        words = command.upper().split()
        assert words[0] == "SET" and "PX" in words, command


def redis_contents(client: redis.Redis) -> Iterator[bytes]:
    """Every key name and every value held in ``client``'s Redis."""
    readers: dict[Any, Any] = {b"string": lambda k: [client.get(k)], b"hash": client.hgetall,
               b"set": client.smembers, b"list": lambda k: client.lrange(k, 0, -1),
               b"zset": lambda k: client.zrange(k, 0, -1),
               b"stream": lambda k: client.xrange(k, "-", "+")}
    for name in client.scan_iter(count=1000):
        yield name
        yield repr(readers[client.type(name)](name)).encode()


def aof_text(client: redis.Redis, sentinel: str) -> bytes:
    """Every append-only file of the server, once it holds ``sentinel`` (written last)."""
    client.set(sentinel, sentinel)
    directory = Path(str(client.config_get("dir")["dir"]))
    deadline = time.monotonic() + 10
    while True:
        text = b"".join(p.read_bytes() for p in directory.rglob("*") if p.is_file())
        if sentinel.encode() in text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_agent_keys_are_never_kept_in_clear(gateway: Gateway,
                                            gateway_redis: tuple[str, Any]) -> None:
    name = unique("secret")
    with gateway.admin() as admin:
        created = admin.post("/v1/agents", json={"name": name},
                             headers={"idempotency-key": "s-" + name})
        added = admin.post(f"/v1/agents/{name}/keys", headers={"idempotency-key": "k-" + name})
        replayed = admin.post(f"/v1/agents/{name}/keys", headers={"idempotency-key": "k-" + name})
    assert created.status_code == added.status_code == replayed.status_code == 201
    secrets = [created.json()["api_key"].encode(), added.json()["api_key"].encode()]
    with redis.Redis.from_url(gateway_redis[0]) as client:
        for content in redis_contents(client):
            assert not any(s in content for s in secrets), content[:200]
        aof = aof_text(client, unique("sentinel"))
    assert len(aof) > 1000 and name.encode() in aof  # the AOF is there and was read
    assert not any(s in aof for s in secrets)
    assert replayed.json()["key_id"] == added.json()["key_id"]
    assert replayed.json()["api_key"] is None and "api_key_note" in replayed.json()


def test_the_openapi_document_says_a_replayed_creation_shows_no_key() -> None:
    from gateway.api.openapi import openapi_document

    paths = openapi_document()["paths"]
    for path in ("/v1/agents", "/v1/agents/{agent}/keys"):
        text = paths[path]["post"]["description"]
        assert '"api_key": null' in text and "Idempotent-Replayed" in text
    assert "exactly-once" in paths["/v1/charges"]["post"]["description"]
