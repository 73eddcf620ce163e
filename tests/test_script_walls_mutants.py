"""Script-level tests of the walls beyond the balance that the mutation runner's full run of
the walls (scripts/mutate_lua.py --walls) found missing: the counters' exact names, the
calendar far from today, the tool named in a hold's refusals, the clean-up of stale and
unknown counters. Each kills mutants no other money test did."""

from __future__ import annotations

import calendar
import datetime as dt

import pytest

from tests.script_helpers import DAY_MS, Lua

MIN_MS = 60_000
HOUR_MS = 3_600_000
WINDOW = 31
CALLS = 32
TOOL_PER_CALL = 33
ERA_DAYS = 146_097  # days in 400 Gregorian years
STALE_DELETE_MAX = 256  # _lib.lua: stale counters one call deletes at most


def days_since_epoch(y: int, m: int, d: int) -> int:
    """Days from 1970-01-01, for any year >= 1 (Python's dates stop at 9999: the Gregorian
    calendar repeats every 400 years, so later years are counted from an earlier one)."""
    eras = max(0, (y - 9000) // 400 + 1)
    base = dt.date(y - 400 * eras, m, d) - dt.date(1970, 1, 1)
    return base.days + eras * ERA_DAYS


def at(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> int:
    """A UTC time in ms, for any year >= 1."""
    return days_since_epoch(y, m, d) * DAY_MS + ((hh * 60 + mm) * 60 + ss) * 1000


def month_days(y: int, m: int) -> int:
    return calendar.monthrange(y % 400 + 2000, m)[1]  # same leap rule every 400 years


def walled(lua: Lua, *pairs: str, grant: int = 100_000_000) -> None:
    lua.create(grant=grant)
    lua.set_limits(*pairs)


def test_days_since_epoch_counts_across_eras() -> None:
    assert days_since_epoch(1970, 1, 1) == 0
    assert days_since_epoch(2000, 3, 1) == 11_017
    assert days_since_epoch(10_400, 3, 1) - days_since_epoch(10_000, 3, 1) == ERA_DAYS
    assert days_since_epoch(9999, 12, 31) + 1 == days_since_epoch(10_000, 1, 1)


# ---- the counters' names: the layout _lib.lua documents ------------------------------------

def test_counters_are_named_by_minute_hour_day_iso_week_and_month(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "nd", "100")
    ms = at(2027, 3, 10, 12, 34, 56)  # a Wednesday
    lua.shift_to(ms)
    assert lua.charge(700)[0] == 0
    day = ms // DAY_MS
    monday = day - dt.date(2027, 3, 10).weekday()
    week = (monday + 3) // 7  # the week's number: its Monday's (day 0 was a Thursday)
    month = 2027 * 12 + 3 - 1
    spent = {f"{kind}{n}{sfx}": "700" for sfx in ("", ":tool")
             for kind, n in (("H", ms // MIN_MS), ("W", week), ("M", month))}
    calls = {f"{kind}{n}{sfx}": "1" for sfx in ("", ":tool", "/v_tool")
             for kind, n in (("N", ms // MIN_MS), ("O", ms // HOUR_MS), ("D", day))}
    assert lua.hash(lua.k().walls) == {**spent, **calls}
    assert lua.hold(300, "h1")[0] == 0  # llm
    walls = lua.hash(lua.k().walls)
    for sfx in ("", ":llm"):
        assert walls["h" + sfx] == "300"
        assert walls[f"w{week}{sfx}"] == "300"
        assert walls[f"m{month}{sfx}"] == "300"
    hold = lua.hash(lua.k().hold("h1"))
    assert (hold["xw"], hold["wk"], hold["mo"]) == ("1", str(week), str(month))


@pytest.mark.parametrize("y,m,d", [(2026, 12, 28), (2027, 1, 3), (2020, 12, 31), (2021, 1, 4),
                                   (2100, 2, 28), (2100, 3, 1), (2400, 2, 29)])
def test_week_and_month_numbers_across_year_ends(clocked_lua: Lua, y: int, m: int,
                                                  d: int) -> None:
    lua = clocked_lua
    walled(lua, "wk", "1000000")
    ms = at(y, m, d, 23, 59, 59)
    lua.shift_to(ms)
    assert lua.charge(5)[0] == 0
    day = ms // DAY_MS
    iso = dt.date(y % 400 + 2000, m, d).isocalendar()  # same weekday every 400 years
    week = (day - (iso.weekday - 1) + 3) // 7
    walls = lua.hash(lua.k().walls)
    assert walls[f"W{week}"] == "5"
    assert walls[f"M{y * 12 + m - 1}"] == "5"


# ---- the calendar far from today ----------------------------------------------------------

# Days where Hinnant's era arithmetic turns (every 400 years on March 1st), month ends of
# leap and common years, and 12400-03-31: the first day a 146098-day era would misplace.
FAR_DAYS = [(2000, 3, 1), (2000, 2, 29), (2100, 2, 28), (2100, 3, 1), (2400, 3, 1),
            (2400, 2, 29), (2400, 3, 31), (1999, 12, 31), (2399, 12, 31), (12400, 3, 31),
            (12400, 2, 29), (12399, 3, 1), (12800, 4, 30)]


@pytest.mark.parametrize("y,m,d", FAR_DAYS)
def test_month_and_week_end_far_from_today(clocked_lua: Lua, y: int, m: int, d: int) -> None:
    lua = clocked_lua
    walled(lua, "mo", "10", "wk", "1000")
    noon = at(y, m, d, 12)
    lua.shift_to(noon)
    assert lua.charge(10)[0] == 0
    left_s = (month_days(y, m) - d) * 86400 + 43200
    assert lua.charge(1)[:5] == [WINDOW, "monthly", 10, 10, left_s]
    lua.shift_to(noon + left_s * 1000 - 1000)  # the month's last second
    assert lua.charge(1)[:5] == [WINDOW, "monthly", 10, 10, 1]
    first = noon + left_s * 1000  # the next month's first ms: nothing spent in it yet
    lua.shift_to(first)
    assert lua.charge(10)[0] == 0
    # The ISO week of that first day: Monday 00:00 UTC to Monday 00:00 UTC.
    day, first_day = noon // DAY_MS, first // DAY_MS
    weekday = (dt.date(y % 400 + 2000, m, d).weekday() + first_day - day) % 7
    monday = first_day - weekday
    lua.set_limits("mo", "")
    spent = 20 if monday <= day else 10
    assert lua.charge(1000)[:5] == [WINDOW, "weekly", 1000, spent, 7 * 86400 - weekday * 86400]


# ---- a hold's refusals name the hold's tool -----------------------------------------------

def test_hold_refused_by_the_tools_caps_names_the_tool(clocked_lua: Lua) -> None:
    lua = clocked_lua
    t0 = (lua.now_ms() // MIN_MS + 1) * MIN_MS
    walled(lua, "t:v_llm:pc", "1000", "t:v_llm:nm", "1")
    lua.shift_to(t0 + 10_000)
    assert lua.hold(1001, "h1") == [TOOL_PER_CALL, 1000, 1001, "llm", "v_llm"]
    assert lua.hold(1000, "h1")[0] == 0
    assert lua.hold(10, "h2") == [CALLS, "calls_per_minute", "tool", 1, 50, "llm", "v_llm"]


# ---- stale and unknown counters -------------------------------------------------------------

def test_one_call_deletes_at_most_256_stale_counters(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "nd", "100")
    stale = {f"H{minute}" for minute in range(1, 301)}  # minutes of 1970
    lua.r.hset(lua.k().walls, mapping={f: "5" for f in stale})
    assert lua.charge(10)[0] == 0
    left = set(lua.hash(lua.k().walls)) & stale
    assert len(left) == len(stale) - STALE_DELETE_MAX
    assert lua.charge(10)[0] == 0
    assert not set(lua.hash(lua.k().walls)) & stale


def test_a_counter_of_an_unknown_kind_is_stale(clocked_lua: Lua) -> None:
    """A field the scripts never write (another version's, a hand edit) counts in no wall,
    however it is named, and is deleted by the next write."""
    lua = clocked_lua
    walled(lua, "nd", "2", "nm", "2", "nh", "2", "hr", "100", "wk", "100", "mo", "100")
    ms = lua.now_ms()
    p = {"min": ms // MIN_MS, "hour": ms // HOUR_MS, "day": ms // DAY_MS}
    foreign = {f"{kind}{n}" for kind in "ZXYz" for n in p.values()} | {"Q", "Z"}
    lua.r.hset(lua.k().walls, mapping={f: "50" for f in foreign})
    assert lua.charge(60)[0] == 0
    assert lua.charge(40)[0] == 0
    walls = lua.hash(lua.k().walls)
    assert not set(walls) & foreign
