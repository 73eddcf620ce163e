"""The charge as a Redis Function (FCALL): loaded at start, recovered when missing, and
EVALSHA on a server without functions; the same answers either way."""

from __future__ import annotations

from typing import Any

import redis

from gateway.metering.engine import Engine
from gateway.store.resp import RedisConnection, ReplyError, parse_redis_url
from gateway.store.scripts import FUNCTION_SCRIPTS, Scripts
from tests.conftest import make_engine
from tests.helpers import T, events, setup_catalog


def _calls(client: redis.Redis, command: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_charge_runs_as_a_function(real_engine: Engine, real_redis_url: str) -> None:
    """Every charge is one FCALL of the library loaded at start, no EVALSHA."""
    await setup_catalog(real_engine)
    await real_engine.create_agent("fn", grant_micros=10 * T)
    client = redis.Redis.from_url(real_redis_url)
    script = real_engine.scripts.by_name["charge"]
    listed = client.function_list(library=script.function)
    assert listed, "the charge's library was not loaded at start"
    client.config_resetstat()
    for _ in range(5):
        await real_engine.charge("fn", "web_search")
    assert _calls(client, "fcall") == 5
    assert _calls(client, "evalsha") == 0
    assert (await real_engine.agent_state("fn")).balance_micros == 10 * T - 5 * 50_000
    client.close()


async def test_hold_capture_release_run_as_functions(real_engine: Engine,
                                                     real_redis_url: str) -> None:
    await setup_catalog(real_engine)
    await real_engine.create_agent("fh", grant_micros=10 * T)
    client = redis.Redis.from_url(real_redis_url)
    client.config_resetstat()
    held = await real_engine.hold("fh", "web_search")
    await real_engine.capture("fh", held.hold_id)
    released = await real_engine.hold("fh", "web_search")
    await real_engine.release("fh", released.hold_id)
    assert _calls(client, "fcall") == 4
    assert _calls(client, "evalsha") == 0
    assert (await real_engine.agent_state("fh")).balance_micros == 10 * T - 50_000
    client.close()


async def test_missing_function_recovered_exactly_once(engine: Engine) -> None:
    """FUNCTION FLUSH before a charge: it runs once (EVAL of the source), the library is
    loaded again, and the next charge is an FCALL again."""
    await setup_catalog(engine)
    await engine.create_agent("gone", grant_micros=10 * T)
    await engine.conn.call_or_raise(b"FUNCTION", b"FLUSH")
    reloads = engine.scripts.reloads
    first = await engine.charge("gone", "web_search", idempotency_key="k1")
    assert engine.scripts.reloads == reloads + 1
    assert "charge" in engine.scripts.functions
    again = await engine.charge("gone", "web_search", idempotency_key="k1")
    assert again.replayed and again.charge_id == first.charge_id
    await engine.charge("gone", "web_search")
    assert engine.scripts.reloads == reloads + 1  # the library was back
    assert (await engine.agent_state("gone")).balance_micros == 10 * T - 2 * 50_000
    charges = [e for e in await events(engine, "gone") if e["kind"] == "charge"]
    assert len(charges) == 2


class _WithoutFunctions:
    """A real connection to a server that answers FUNCTION as Redis 6 does."""

    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn
        self.address = conn.address

    async def call(self, *args: Any) -> Any:
        if args[0] in (b"FUNCTION", "FUNCTION", b"FCALL", "FCALL"):
            return ReplyError(f"ERR unknown command '{args[0]!s}', with args beginning with: ")
        return await self.conn.call(*args)


async def test_server_without_functions_runs_evalsha(real_redis_url: str) -> None:
    engine = await make_engine(real_redis_url)
    try:
        plain = Scripts(_WithoutFunctions(engine.conn))  # type: ignore[arg-type]
        await plain.preload()
        assert plain.functions == set()
        engine.calls.scripts = plain
        await setup_catalog(engine)
        await engine.create_agent("old", grant_micros=10 * T)
        client = redis.Redis.from_url(real_redis_url)
        client.config_resetstat()
        await engine.charge("old", "web_search")
        assert _calls(client, "evalsha") == 1 and _calls(client, "fcall") == 0
        client.close()
        assert (await engine.agent_state("old")).balance_micros == 10 * T - 50_000
    finally:
        await engine.stop()
        engine.conn.close()


def test_library_is_lib_then_the_script_as_a_function() -> None:
    scripts = Scripts(RedisConnection(parse_redis_url("redis://127.0.0.1:1/0")))
    for name in FUNCTION_SCRIPTS:
        script = scripts.by_name[name]
        lib, own = script.source[:script.body_at], script.source[script.body_at:]
        assert lib.startswith("-- _lib.lua") and own.startswith(f"-- {name}.lua")
        assert script.library == (
            f"#!lua name={script.function}\n{lib}\n"
            f"redis.register_function('{script.function}', function(KEYS, ARGV)\n{own}\nend)\n")
