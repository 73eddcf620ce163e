"""Upstream credentials are encrypted at rest: never in clear in Redis (keys and AOF), the
event streams or either ledger; `recover` restores them; the proxy still sends them."""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gateway.api.responses import http_status
from gateway.ledger.recover import recover
from gateway.metering.engine import Engine
from gateway.metering.secrets_store import SEALED_PREFIX, SecretBox, open_headers
from gateway.store import keys
from tests.conftest import flush, make_engine
from tests.gateway_proc import running_gateway
from tests.http_helpers import (
    Recorded,
    error_of,
    new_agent,
    recording_handler,
    unique,
    upstream_server,
)
from tests.ledger_helpers import store_for, writer_for
from tests.pg import pg_bin
from tests.servers import redis_server

SECRET_KEY = "test-secret-key-" + "0123456789abcdef" * 2


UPSTREAM = Recorded()  # the tool's upstream, recording the credentials it was sent


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with upstream_server(recording_handler(UPSTREAM), "/tool") as url:
        yield url


def credential() -> str:
    return "Bearer upstream-" + secrets.token_hex(16)


def redis_text(client: Any) -> bytes:
    """Every key and value of a Redis, whatever its type, as one byte string."""
    out: list[Any] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        out.append(key)
        if kind == b"string":
            out.append(client.get(key))
        elif kind == b"hash":
            out += [k + b"=" + v for k, v in client.hgetall(key).items()]
        elif kind == b"set":
            out += client.smembers(key)
        elif kind in (b"zset", b"list"):
            read = client.zrange if kind == b"zset" else client.lrange
            out += read(key, 0, -1)
        elif kind == b"stream":
            out += [k + b"=" + v for _, fields in client.xrange(key) for k, v in fields.items()]
    return b"\n".join(x if isinstance(x, bytes) else str(x).encode() for x in out)


def files_text(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


def aof_folder(client: Any) -> Path:
    config = client.config_get("dir")
    return Path(str(config.get("dir") or config[b"dir"].decode()))


def wait_for_bytes(folder_of: Any, needle: bytes) -> bytes:
    """The files' bytes once ``needle`` reached them (appendfsync everysec: within ~1 s)."""
    deadline = time.monotonic() + 10
    while needle not in (text := files_text(folder_of())):
        assert time.monotonic() < deadline, f"{needle!r} never reached the files"
        time.sleep(0.1)
    return text


def postgres_rows_containing(dsn: str, needle: str) -> int:
    """Rows of every table of the database whose text contains ``needle``."""
    tables = subprocess.run(
        [pg_bin("psql"), dsn, "-At", "-c",
         "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"],
        check=True, capture_output=True, text=True).stdout.split()
    assert "tools" in tables and "ledger_entries" in tables
    found = 0
    for table in tables:
        count = subprocess.run(
            [pg_bin("psql"), dsn, "-At", "-c",
             f"SELECT count(*) FROM {table} t WHERE t::text LIKE '%{needle}%'"],
            check=True, capture_output=True, text=True).stdout.strip()
        found += int(count)
    return found


async def test_credentials_are_ciphertext_in_redis_aof_and_ledger_and_recover_restores_them(
        real_redis_url: str, ledger_url: str) -> None:
    engine: Engine = await make_engine(real_redis_url, IOU_SECRET_KEY=SECRET_KEY)
    store = store_for(ledger_url)
    await store.migrate()
    client: Any = redis.Redis.from_url(real_redis_url)
    try:
        secret = credential()
        tool = unique("vault").replace("-", "_")
        await engine.set_tool(tool, 100_000, "tool", upstream="http://127.0.0.1:9/x",
                              upstream_headers={"Authorization": secret})
        writer = writer_for(engine, store)
        await writer.drain()
        writer.close()
        # Redis: every key (the tool hash, the catalog stream) and the AOF on disk.
        assert secret.encode() not in redis_text(client)
        stored = client.hget(keys.tool(tool), "headers")
        assert stored is not None and stored.startswith(SEALED_PREFIX.encode())
        aof = wait_for_bytes(lambda: aof_folder(client), tool.encode())
        assert secret.encode() not in aof and secret.split()[1].encode() not in aof
        # The ledger: the tools table holds the same ciphertext, no row holds the secret.
        if ledger_url.startswith("sqlite:///"):
            folder = Path(ledger_url.removeprefix("sqlite:///")).parent
            assert secret.encode() not in files_text(folder)
        else:
            assert postgres_rows_containing(ledger_url, secret.split()[1]) == 0
        # Recover copies the ciphertext back, and it still opens with the key.
        await store.set_meta("partitions", str(engine.partitions))
        flush(real_redis_url)
        await engine.scripts.preload()
        await recover(engine, store)
        assert client.hget(keys.tool(tool), "headers") == stored
        entry = next(t for t in engine.tools() if t.name == tool)
        assert open_headers(engine.settings, tool, entry.upstream_headers) == {
            "Authorization": secret}
    finally:
        client.close()
        await store.close()
        await engine.stop()
        engine.conn.close()


def test_embedded_default_generates_its_key_and_the_proxy_sends_the_credential(
        upstream: str) -> None:
    secret = credential()
    with running_gateway(None, IOU_SECRET_KEY="") as gw:
        key_file = gw.data_dir / "secret_key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert len(key_file.read_text().strip()) >= 32
        with gw.admin() as admin:
            put = admin.put("/v1/tools/vault", json={
                "price": "0.1", "category": "tool", "upstream": upstream,
                "upstream_headers": {"Authorization": secret}})
            assert put.status_code == 200 and "upstream-" not in put.text
            listed = admin.get("/v1/tools")
            assert secret not in listed.text
        _, key = new_agent(gw, "1")
        with gw.agent(key) as agent:
            invoked = agent.post("/v1/tools/vault/invoke", json={"q": 1})
        assert invoked.status_code == 200 and UPSTREAM.header("authorization")[-1] == secret
        # The ledger's tools table holds the ciphertext (once the writer got there), and
        # every file of the data dir (AOF, SQLite ledger and WAL, logs) is free of it.
        deadline = time.monotonic() + 10
        while not (row := _ledger_tool(gw.data_dir / "ledger.db", "vault")):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert row.startswith(SEALED_PREFIX)
        data = wait_for_bytes(lambda: gw.data_dir, b"vault")
        assert secret.split()[1].encode() not in data


def _ledger_tool(path: Path, tool: str) -> str | None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        try:
            row = db.execute("SELECT headers FROM tools WHERE tool = ?", (tool,)).fetchone()
        except sqlite3.OperationalError:  # not migrated yet
            return None
    return None if row is None else str(row[0])


def test_without_a_secret_key_credentials_are_refused_and_sealed_ones_cost_nothing(
        upstream: str) -> None:
    with redis_server() as (url, _), running_gateway(url, IOU_SECRET_KEY="") as gw:
        assert "IOU_SECRET_KEY is not set" in gw.log_text()
        with gw.admin() as admin:
            refused = admin.put("/v1/tools/vault", json={
                "price": "0.1", "category": "tool", "upstream": upstream,
                "upstream_headers": {"Authorization": credential()}})
            assert refused.status_code == 422 and error_of(refused) == "invalid_request"
            assert refused.json()["field"] == "upstream_headers"
            assert "vault" not in admin.get("/v1/tools").text  # nothing was written
            plain = admin.put("/v1/tools/open", json={"price": "0.1", "category": "tool",
                                                      "upstream": upstream})
            assert plain.status_code == 200
        # A tool sealed by a gateway with a key, invoked through this one: 503, no charge.
        _seal_tool_with_another_gateway(url, upstream)
        _, key = new_agent(gw, "1")
        before = UPSTREAM.count
        with gw.agent(key) as agent:
            deadline = time.monotonic() + 5
            while (answer := agent.post("/v1/tools/sealed/invoke", json={})).status_code == 404:
                assert time.monotonic() < deadline  # the catalog reaches this worker
                time.sleep(0.1)
            assert answer.status_code == 503 and error_of(answer) == "unavailable"
            assert agent.get("/v1/balance").json()["balance"] == "1"
        assert UPSTREAM.count == before


def _seal_tool_with_another_gateway(url: str, upstream: str) -> None:
    with running_gateway(url, IOU_SECRET_KEY=SECRET_KEY) as other, other.admin() as admin:
        put = admin.put("/v1/tools/sealed", json={
            "price": "0.1", "category": "tool", "upstream": upstream,
            "upstream_headers": {"Authorization": credential()}})
        assert put.status_code == 200


def test_sealed_values_open_only_with_their_key_and_tool() -> None:
    box = SecretBox(SECRET_KEY)
    sealed = box.seal(b'{"a":"b"}', b"iou:tool:x")
    assert sealed.startswith(SEALED_PREFIX) and box.open(sealed, b"iou:tool:x") == b'{"a":"b"}'
    assert box.seal(b'{"a":"b"}', b"iou:tool:x") != sealed  # a fresh nonce each time
    with pytest.raises(ValueError, match="another IOU_SECRET_KEY"):
        SecretBox(SECRET_KEY + "2").open(sealed, b"iou:tool:x")
    with pytest.raises(ValueError):
        box.open(sealed, b"iou:tool:y")  # moved onto another tool
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(ValueError):
        box.open(tampered, b"iou:tool:x")


def test_headers_of_one_kind_do_not_open_as_another(tmp_path: Path) -> None:
    from gateway.config import load_settings
    from gateway.metering.errors import GatewayError
    from gateway.metering.secrets_store import seal_headers

    settings = load_settings({"IOU_REDIS_URL": "redis://127.0.0.1:9",
                              "IOU_SECRET_KEY": SECRET_KEY, "IOU_DATA_DIR": str(tmp_path)})
    sealed = seal_headers(settings, "search", {"Authorization": "x"}, kind="mcp")
    assert open_headers(settings, "search", sealed, kind="mcp") == {"Authorization": "x"}
    with pytest.raises(GatewayError) as refused:  # an MCP server's headers on a tool
        open_headers(settings, "search", sealed)
    assert http_status(refused.value) == 503 and "search" in refused.value.message
    keyless = load_settings({"IOU_REDIS_URL": "redis://127.0.0.1:9",
                             "IOU_DATA_DIR": str(tmp_path)})
    with pytest.raises(GatewayError) as no_key:
        seal_headers(keyless, "srv", {"a": "b"}, kind="mcp", field="headers")
    assert http_status(no_key.value) == 422 and no_key.value.details["field"] == "headers"
