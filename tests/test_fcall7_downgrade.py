"""The server behind the URL loses FCALL while the gateway runs (replaced at the same address by
a Redis 6, or one that disables FUNCTION and FCALL): a charge is answered by EVAL, and the next
ones by EVALSHA, instead of a script error (500) on every paid call until a restart."""

from __future__ import annotations

import asyncio
import time

from gateway.metering.engine import Engine
from gateway.store.errors import StoreUnavailable
from tests.conftest import make_engine
from tests.helpers import T, setup_catalog
from tests.servers import free_port, redis_server

NO_FUNCTIONS = ("--rename-command", "FCALL", "", "--rename-command", "FUNCTION", "")


async def test_server_without_fcall_at_the_same_address() -> None:
    port = free_port()
    with redis_server(port=port) as (url, _process):
        engine = await make_engine(url)
    try:
        assert "charge" in engine.scripts.functions
        with redis_server(*NO_FUNCTIONS, port=port) as (url, _process):
            await _reconnected(engine)
            await setup_catalog(engine)
            await engine.create_agent("old", grant_micros=10 * T)
            await engine.charge("old", "web_search", idempotency_key="one")
            await engine.charge("old", "web_search", idempotency_key="two")
            await engine.charge("old", "web_search", idempotency_key="two")
            assert (await engine.agent_state("old")).balance_micros == 10 * T - 2 * 50_000
            assert engine.scripts.functions == set()
    finally:
        await engine.stop()
        engine.conn.close()


async def _reconnected(engine: Engine) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            await engine.conn.call(b"PING")
            return
        except StoreUnavailable:
            assert time.monotonic() < deadline, "the gateway did not reconnect in 10 s"
            await asyncio.sleep(0.05)
