"""Script-level tests of the walls beyond the balance: rolling-hour, weekly and monthly spend
windows and call caps (lua/_lib.lua walls_*), on the clocked scripts."""

from __future__ import annotations

import calendar
import datetime as dt

import pytest

from tests.script_helpers import DAY_MS, Lua
from tests.walls_helpers import records

MIN_MS = 60_000
HOUR_MS = 3_600_000
WINDOW = 31
CALLS = 32
TOOL_PER_CALL = 33


def at(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> int:
    """A UTC time in ms."""
    return int(dt.datetime(y, m, d, hh, mm, ss, tzinfo=dt.UTC).timestamp() * 1000)


def walled(lua: Lua, *pairs: str, grant: int = 100_000_000) -> None:
    lua.create(grant=grant)
    lua.set_limits(*pairs)


# ---- set_limits: the fields and the x flag --------------------------------------------------

def test_set_limits_keeps_the_walls_flag(lua: Lua) -> None:
    lua.create()
    lua.set_limits("pc", "5", "dl", "9", "c:llm:pc", "3", "c:llm:dl", "4")
    assert "x" not in lua.agent()
    for field in ("hr", "wk", "mo", "nm", "nh", "nd", "c:llm:hr", "c:llm:wk", "c:llm:mo",
                  "c:llm:nd", "t:web:pc", "t:web:nm", "t:web:nh", "t:web:nd"):
        lua.set_limits(field, "7")
        assert lua.agent()["x"] == "1", field
        assert lua.events()[-1]["l." + field] == "7"
        lua.set_limits(field, "")
        assert "x" not in lua.agent(), field
    lua.set_limits("hr", "7", "nd", "2")
    lua.set_limits("hr", "")
    assert lua.agent()["x"] == "1"  # nd still set


@pytest.mark.parametrize("field,value", [
    ("t:web:hr", "5"), ("t:web:wk", "5"), ("t:web:dl", "5"), ("nm", "0"), ("hr", "0"),
    ("nd", "1000000001"), ("c:llm:nx", "1"), ("t:" + "w" * 65 + ":nm", "1"), ("x", "1"),
    ("c:LLM:hr", "1"), ("t:web:pcx", "1"), ("nm", "-1"), ("wk", "1.5")])
def test_set_limits_refuses_unknown_walls(lua: Lua, field: str, value: str) -> None:
    lua.create()
    before = lua.snapshot()
    assert lua.run("set_limits", *lua.limits_args(field, value)) == [30, 5]
    assert lua.snapshot() == before


def test_count_caps_take_up_to_a_billion(lua: Lua) -> None:
    lua.create()
    lua.set_limits("nd", "1000000000", "t:web:nm", "1")
    assert lua.agent()["nd"] == "1000000000"


# ---- an agent without walls -----------------------------------------------------------------

def test_no_walls_no_walls_key(lua: Lua) -> None:
    lua.create()
    lua.set_limits("pc", "900000", "dl", "9000000")
    assert lua.charge(1000)[0] == 0
    assert lua.hold(1000)[0] == 0
    assert lua.capture(500)[0] == 0
    assert lua.charge(None, tool="free")[0] == 0
    assert not lua.r.exists(lua.k().walls)
    assert "xw" not in lua.hash(lua.k().hold("hold1"))


# ---- the rolling hour -----------------------------------------------------------------------

def test_hour_rolls_minute_by_minute(clocked_lua: Lua) -> None:
    lua = clocked_lua
    t0 = (lua.now_ms() // HOUR_MS + 1) * HOUR_MS + 10 * MIN_MS  # hh:10:00
    walled(lua, "hr", "100000")
    lua.shift_to(t0 + 59_000)  # hh:10:59, in minute 10
    assert lua.charge(60_000)[0] == 0
    lua.shift_to(t0 + 30 * MIN_MS)  # hh:40:00
    assert lua.charge(40_000)[0] == 0
    before = lua.snapshot()
    # 100000 spent in the last hour: refused until hh+1:10:00, when minute 10 leaves.
    assert lua.charge(1) == [WINDOW, "hourly", 100_000, 100_000, 30 * 60, "tool"]
    assert lua.snapshot() == before
    lua.shift_to(t0 + 60 * MIN_MS - 900)  # the clock runs on: a margin for this call
    assert lua.charge(1) == [WINDOW, "hourly", 100_000, 100_000, 1, "tool"]
    lua.shift_to(t0 + 60 * MIN_MS)
    assert lua.charge(60_001)[0] == WINDOW  # 40000 still in the window
    assert lua.charge(60_000)[0] == 0
    # Both left only when the 40000 of hh:40 leaves too.
    assert lua.charge(1)[4] == 30 * 60


def test_hour_retry_counts_what_must_leave(clocked_lua: Lua) -> None:
    lua = clocked_lua
    t0 = (lua.now_ms() // HOUR_MS + 1) * HOUR_MS
    walled(lua, "hr", "100")
    for minute, cost in ((0, 30), (5, 30), (20, 30)):
        lua.shift_to(t0 + minute * MIN_MS)
        assert lua.charge(cost)[0] == 0
    lua.shift_to(t0 + 30 * MIN_MS)
    assert lua.charge(11)[4] == 30 * 60  # 90 + 11 > 100: minute 0 must leave (at hh+1:00)
    assert lua.charge(41)[4] == 35 * 60  # minutes 0 and 5 must leave
    assert lua.charge(71)[4] == 50 * 60  # all three


def test_category_hour_and_holds_while_open(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "c:llm:hr", "100000")
    assert lua.hold(70_000, "h1")[0] == 0  # llm
    assert lua.charge(90_000, cat="tool")[0] == 0  # another category: not in llm's cap
    refused = lua.charge(40_000, cat="llm")
    assert refused[:4] == [WINDOW, "category_hourly", 100_000, 70_000]
    assert refused[5] == "llm"
    assert refused[4] == 3600  # only an open hold stands in the way
    assert lua.release("h1")[0] == 0
    assert lua.charge(100_000, cat="llm")[0] == 0
    assert lua.charge(1, cat="llm")[0] == WINDOW


def test_hold_in_the_hour_leaves_when_captured_and_counts_its_cost(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "hr", "100000")
    assert lua.hold(80_000, "h1")[0] == 0
    assert lua.charge(30_000)[:2] == [WINDOW, "hourly"]
    assert lua.capture(50_000, "h1")[0] == 0  # never re-checked: it was counted
    assert lua.charge(50_000)[0] == 0
    assert lua.charge(1)[0] == WINDOW


def test_expired_hold_leaves_the_walls(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "hr", "100000", "wk", "100000", "mo", "100000")
    assert lua.hold(100_000, "h1", ttl_ms=1_000)[0] == 0
    assert lua.charge(1)[0] == WINDOW
    lua.shift_to(lua.now_ms() + 2_000)
    assert lua.expire()[:2] == [0, 1]
    recs = records(lua)
    assert recs[""]["h"] == recs[":llm"]["h"] == 0
    assert lua.charge(100_000)[0] == 0


# ---- weeks and months ----------------------------------------------------------------------

def test_week_turns_on_monday_utc(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "wk", "100000", "c:llm:wk", "50000")
    lua.shift_to(at(2027, 3, 1, 0, 0, 0))  # a Monday
    assert lua.charge(50_000, cat="llm")[0] == 0
    assert lua.charge(1, cat="llm") == [WINDOW, "category_weekly", 50_000, 50_000, 7 * 86400,
                                        "llm"]
    lua.shift_to(at(2027, 3, 7, 23, 59, 59))  # Sunday
    assert lua.charge(50_000)[0] == 0
    assert lua.charge(1) == [WINDOW, "weekly", 100_000, 100_000, 1, "tool"]
    lua.shift_to(at(2027, 3, 8, 0, 0, 0))  # Monday
    assert lua.charge(50_000, cat="llm")[0] == 0
    assert lua.charge(50_000)[0] == 0


def test_hold_captured_in_the_next_week_is_checked_there(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "wk", "100000")
    lua.shift_to(at(2027, 3, 7, 23, 59, 30))
    assert lua.hold(60_000, "h1", ttl_ms=60_000)[0] == 0
    lua.shift_to(at(2027, 3, 8, 0, 0, 10))
    assert lua.charge(70_000)[0] == 0  # the new week holds nothing yet
    before = lua.snapshot()
    assert lua.capture(40_000, "h1")[:2] == [WINDOW, "weekly"]
    assert lua.snapshot() == before
    assert lua.capture(30_000, "h1")[0] == 0
    assert lua.charge(1)[0] == WINDOW


def test_hold_taken_before_the_walls_is_checked_when_captured(clocked_lua: Lua) -> None:
    lua = clocked_lua
    lua.create(grant=100_000_000)
    assert lua.hold(80_000, "h1")[0] == 0
    lua.set_limits("hr", "50000")
    assert lua.capture(60_000, "h1")[:2] == [WINDOW, "hourly"]
    assert lua.capture(50_000, "h1")[0] == 0
    assert lua.charge(1)[0] == WINDOW


@pytest.mark.parametrize("year,month", [(2027, 1), (2027, 2), (2028, 2), (2027, 4), (2100, 2),
                                        (2000, 2), (2027, 12), (2026, 11)])
def test_month_ends_after_its_days(clocked_lua: Lua, year: int, month: int) -> None:
    lua = clocked_lua
    days = calendar.monthrange(year, month)[1]
    walled(lua, "mo", "100000", "c:llm:mo", "10")
    lua.shift_to(at(year, month, 1, 0, 0, 0))
    assert lua.charge(10, cat="llm")[0] == 0
    assert lua.charge(1, cat="llm")[:5] == [WINDOW, "category_monthly", 10, 10, days * 86400]
    assert lua.charge(99_990)[0] == 0
    assert lua.charge(1)[:5] == [WINDOW, "monthly", 100_000, 100_000, days * 86400]
    last = at(year, month, days, 23, 59, 59)
    lua.shift_to(last)
    assert lua.charge(1)[4] == 1
    lua.shift_to(last + 1_000)
    assert lua.charge(100_000)[0] == 0


def test_every_month_of_a_century_ends_on_time(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "mo", "1", "wk", "10")
    for year in (1999, 2000, 2024, 2027, 2028, 2099, 2100):
        for month in range(1, 13):
            start = at(year, month, 1, 12, 0, 0)
            lua.shift_to(start)
            days = calendar.monthrange(year, month)[1]
            reply = lua.charge(2)
            assert reply[:2] == [WINDOW, "monthly"] and reply[4] == days * 86400 - 43200
    lua.shift_to(at(2027, 3, 3, 12, 0, 0))  # a Wednesday: the week ends Monday 00:00
    lua.set_limits("mo", "")
    assert lua.charge(11)[:5] == [WINDOW, "weekly", 10, 0, 4 * 86400 + 43200]


# ---- call caps -----------------------------------------------------------------------------

def test_calls_per_minute_count_free_calls(clocked_lua: Lua) -> None:
    lua = clocked_lua
    t0 = (lua.now_ms() // MIN_MS + 1) * MIN_MS
    walled(lua, "nm", "3")
    lua.shift_to(t0 + 10_000)
    assert lua.charge(None, tool="free")[0] == 0
    assert lua.charge(10)[0] == 0
    assert lua.hold(10)[0] == 0
    assert lua.capture(5)[0] == 0  # a capture is not another call
    before = lua.snapshot()
    lua.shift_to(t0 + 15_000)
    assert lua.charge(None, tool="free") == [CALLS, "calls_per_minute", "agent", 3, 45, "tool",
                                             "free"]
    assert lua.snapshot() == before
    lua.shift_to(t0 + MIN_MS)
    assert lua.charge(None, tool="free")[0] == 0


def test_calls_per_hour_and_day_by_scope(clocked_lua: Lua) -> None:
    lua = clocked_lua
    day0 = (lua.now_ms() // DAY_MS + 1) * DAY_MS
    walled(lua, "t:fx_tool:nd", "2", "c:llm:nh", "1")
    lua.shift_to(day0 + 10 * HOUR_MS)
    assert lua.charge(None, tool="fx_tool")[0] == 0
    assert lua.charge(None, tool="fx_tool")[0] == 0
    assert lua.charge(None, tool="fx_tool") == [CALLS, "calls_per_day", "tool", 2, 14 * 3600,
                                                "tool", "fx_tool"]
    assert lua.charge(5)[0] == 0  # same category, another tool
    assert lua.charge(5, cat="llm")[0] == 0
    lua.shift_to(day0 + 10 * HOUR_MS + 60_000)
    refused = lua.hold(5, "h2", cat="llm")
    assert refused[:5] == [CALLS, "calls_per_hour", "category", 1, 3540]  # to 11:00:00
    lua.shift_to(day0 + 11 * HOUR_MS)
    assert lua.hold(5, "h2", cat="llm")[0] == 0
    lua.shift_to(day0 + DAY_MS)
    assert lua.charge(None, tool="fx_tool")[0] == 0


def test_tool_per_call_cap(lua: Lua) -> None:
    walled(lua, "t:v_llm:pc", "1000")
    assert lua.charge(1001, cat="llm") == [TOOL_PER_CALL, 1000, 1001, "llm", "v_llm"]
    assert lua.hold(1001, cat="llm")[0] == TOOL_PER_CALL
    assert lua.charge(1000, cat="llm")[0] == 0
    assert lua.charge(5000, cat="tool")[0] == 0


def test_minutes_that_left_the_hour_are_deleted(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "hr", "1000000", "nm", "100")
    assert lua.charge(10)[0] == 0
    lua.shift_to(lua.now_ms() + MIN_MS)
    assert lua.charge(10)[0] == 0
    minute = set(lua.hash(lua.k().walls)) - {"@", "@:tool", "@/v_tool"}
    assert len(minute) == 2  # the first call's minute, the agent's and the category's
    lua.shift_to(lua.now_ms() + 2 * HOUR_MS)
    assert lua.charge(10)[0] == 0
    assert set(lua.hash(lua.k().walls)) == {"@", "@:tool", "@/v_tool"}
    assert records(lua)[""]["R"] == 0 and records(lua)[""]["H"] == 10
    assert 0 < lua.r.pttl(lua.k().walls) <= 35 * DAY_MS
