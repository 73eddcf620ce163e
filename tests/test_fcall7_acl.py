"""A Redis user (ACL) that may run EVALSHA but not FUNCTION LOAD or FCALL: the gateway says so
in one line at start and runs the charge, hold, capture and release by EVALSHA, instead of
failing to start (no FUNCTION) or refusing every paid call with a 503 (no FCALL)."""

from __future__ import annotations

import logging

import pytest
import redis

from tests.conftest import make_engine
from tests.helpers import T, setup_catalog
from tests.servers import redis_server


@pytest.mark.parametrize("denied", ["-function", "-fcall"])
async def test_user_without_functions_charges_by_evalsha(
        denied: str, caplog: pytest.LogCaptureFixture) -> None:
    with redis_server() as (url, _process):
        admin = redis.Redis.from_url(url)
        admin.acl_setuser("gw", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                          commands=["+@all", denied])
        admin.close()
        user_url = url.replace("redis://", "redis://gw:pw@")
        with caplog.at_level(logging.WARNING):
            engine = await make_engine(user_url)
        try:
            assert engine.scripts.functions == set()
            lines = [r.getMessage() for r in caplog.records if "EVALSHA" in r.getMessage()]
            assert len(lines) == 1, caplog.text
            await setup_catalog(engine)
            await engine.create_agent("acl", grant_micros=10 * T)
            await engine.charge("acl", "web_search")
            assert (await engine.agent_state("acl")).balance_micros == 10 * T - 50_000
        finally:
            await engine.stop()
            engine.conn.close()
