"""A library's name follows its whole text, not only the Lua source: a gateway whose wrapper
around the same source differs (another version) never takes the other's library for its
own ("already exists") and runs it."""

from __future__ import annotations

import redis

from gateway.store.scripts import load_script
from tests.conftest import make_engine
from tests.helpers import T, setup_catalog
from tests.servers import redis_server


async def test_library_of_another_wrapper_over_the_same_source_is_not_ours() -> None:
    with redis_server() as (url, _process):
        script = load_script("charge")
        # What another version would load for the same source: the name the source alone
        # gives, a body of its own (here one that answers a refusal code without charging).
        stale = f"iou_charge_{script.sha[:16]}"
        admin = redis.Redis.from_url(url)
        admin.function_load(f"#!lua name={stale}\nredis.register_function('{stale}', "
                            "function(KEYS, ARGV) return {17} end)\n")
        engine = await make_engine(url)
        try:
            await setup_catalog(engine)
            await engine.create_agent("names", grant_micros=10 * T)
            await engine.charge("names", "web_search")
            assert (await engine.agent_state("names")).balance_micros == 10 * T - 50_000
            assert engine.scripts.by_name["charge"].function != stale
        finally:
            await engine.stop()
            engine.conn.close()
            admin.close()
