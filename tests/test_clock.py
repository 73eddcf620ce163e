"""The test clock (IOU_TEST_CLOCK): scripts and the engine see Redis TIME plus an offset."""

from __future__ import annotations

from gateway.metering.engine import Engine
from gateway.store.keys import TEST_CLOCK_KEY
from gateway.store.scripts import load_script
from tests.helpers import T, shift_to

DAY_MS = 86_400_000


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
