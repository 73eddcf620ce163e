"""The test clock (IOU_TEST_CLOCK): scripts and the engine see Redis TIME plus an offset."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.config import TEST_CLOCK_KEY
from gateway.engine import Engine
from gateway.scripts import load_script
from tests.conftest import make_engine
from tests.helpers import T, setup_catalog

DAY_MS = 86_400_000


@pytest.fixture
async def clocked(real_redis_url: str) -> AsyncIterator[Engine]:
    eng = await make_engine(real_redis_url, IOU_TEST_CLOCK="1")
    await setup_catalog(eng)
    yield eng
    await eng.stop()
    eng.conn.close()


async def shift_to(engine: Engine, target_ms: int) -> None:
    """Move the scripts' clock so that it now reads ``target_ms``."""
    await engine.conn.call_or_raise(b"SET", TEST_CLOCK_KEY, 0)
    real = await engine.clock_ms()
    await engine.conn.call_or_raise(b"SET", TEST_CLOCK_KEY, target_ms - real)


def test_production_scripts_do_not_read_the_offset() -> None:
    assert TEST_CLOCK_KEY not in load_script("charge").source
    assert TEST_CLOCK_KEY in load_script("charge", TEST_CLOCK_KEY).source


async def test_offset_moves_the_day_for_scripts_and_state(clocked: Engine) -> None:
    await clocked.create_agent("a", 5 * T)
    await clocked.set_limits("a", {"daily": T})
    now = await clocked.clock_ms()
    await shift_to(clocked, (now // DAY_MS + 1) * DAY_MS - 1_000)  # 23:59:59
    await clocked.charge("a", "web_search")
    assert (await clocked.agent_state("a")).spent_today_micros == 50_000
    await shift_to(clocked, (now // DAY_MS + 1) * DAY_MS + 1_000)  # 00:00:01 next day
    assert (await clocked.agent_state("a")).spent_today_micros == 0
    await clocked.charge("a", "web_search")
    assert (await clocked.agent_state("a")).spent_today_micros == 50_000
