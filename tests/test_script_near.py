"""Script-level tests of the walls' near-limit warning bits (lua/_lib.lua walls_near): over
80 % of a rolling-hour, weekly or monthly cap, or of a call cap, with the call counted."""

from __future__ import annotations

import pytest

from tests.script_helpers import Lua

HOURLY, WEEKLY, MONTHLY, CALLS = 8, 16, 32, 64
WINDOW, CALLS_REFUSED = 31, 32


def walled(lua: Lua, *pairs: str) -> None:
    lua.create(grant=100_000_000)
    lua.set_limits(*pairs)


@pytest.mark.parametrize("field,bit", [("hr", HOURLY), ("wk", WEEKLY), ("mo", MONTHLY)])
def test_spend_window_near_at_80_percent(lua: Lua, field: str, bit: int) -> None:
    walled(lua, field, "100000")
    assert lua.charge(80_000)[2] == 0  # exactly 80 %: not over
    assert lua.charge(1)[2] == bit
    assert lua.charge(19_999)[2] == bit  # 100 %: still passes, still warned
    assert lua.charge(1)[0] == WINDOW


@pytest.mark.parametrize("field,bit", [("c:llm:hr", HOURLY), ("c:llm:wk", WEEKLY),
                                       ("c:llm:mo", MONTHLY)])
def test_category_window_near_only_for_its_category(lua: Lua, field: str, bit: int) -> None:
    walled(lua, field, "100000")
    assert lua.charge(90_000, cat="tool")[2] == 0
    assert lua.charge(80_000, cat="llm")[2] == 0
    assert lua.charge(1, cat="llm")[2] == bit
    assert lua.charge(1, cat="tool")[2] == 0


def test_hold_counts_its_amount(lua: Lua) -> None:
    walled(lua, "hr", "1000000", "wk", "1000000", "mo", "2000000")
    assert lua.hold(800_000, "h1")[2] == 0
    assert lua.hold(1, "h2")[2] == HOURLY + WEEKLY


@pytest.mark.parametrize("field", ["nm", "nh", "nd", "c:tool:nm", "c:tool:nh", "c:tool:nd",
                                   "t:v_tool:nm", "t:v_tool:nh", "t:v_tool:nd"])
def test_call_cap_near(lua: Lua, field: str) -> None:
    walled(lua, field, "10")
    flags = [lua.charge(1000)[2] for _ in range(10)]
    assert flags == [0] * 8 + [CALLS, CALLS]  # the 9th and 10th calls are over 80 %
    assert lua.charge(1000)[0] == CALLS_REFUSED
    if field[0] in "ct":
        assert lua.charge(1000, cat="llm")[2] == 0  # another category and tool


def test_call_cap_of_two_warns_on_the_second_call_only(lua: Lua) -> None:
    walled(lua, "t:v_tool:nd", "2")
    assert lua.charge(1000)[2] == 0  # 1 of 2 calls: 50 %, no counter yet
    assert lua.charge(1000)[2] == CALLS


def test_free_calls_and_bits_together(lua: Lua) -> None:
    walled(lua, "nd", "5", "hr", "10", "wk", "10", "mo", "10", "low", "1000")
    for _ in range(4):
        assert lua.charge(None, tool="free")[2] == 0
    # the 5th call (100 % of the calls), free, in windows that are not near: calls only
    assert lua.charge(None, tool="free")[2] == CALLS
    lua.set_limits("nd", "")
    assert lua.charge(9)[2] == HOURLY + WEEKLY + MONTHLY


def test_low_crossing_still_reported_with_near_bits(lua: Lua) -> None:
    """outbox_low reads the crossing bit below the near bits: it still fires."""
    lua.create(grant=100_000)
    lua.set_limits("nd", "1", "low", "60000", "wh", "http://127.0.0.1:9/hook")
    assert lua.charge(50_000)[2] == 1 + 4 + CALLS
    assert [e["event"] for e in lua.events(lua.k().webhooks)] == ["balance.low",
                                                                  "refill.requested"]


def test_no_walls_no_near_bits(lua: Lua) -> None:
    lua.create(grant=100_000_000)
    lua.set_limits("dl", "100000")
    assert lua.charge(90_000)[2] == 2  # only daily_near
