"""Script-level tests of the walls beyond the balance that the mutation runner's full run of
the walls (scripts/mutate_lua.py --walls) found missing: the records' exact contents, the
calendar far from today, the tool named in a hold's refusals, the migration of the layout
before records (stale and unknown counters deleted). Each kills mutants no other money test
did."""

from __future__ import annotations

import calendar
import datetime as dt

import pytest

from tests.script_helpers import DAY_MS, Lua
from tests.test_script_expiry_edges import run_at
from tests.walls_helpers import minutes, records

MIN_MS = 60_000
HOUR_MS = 3_600_000
WINDOW = 31
CALLS = 32
TOOL_PER_CALL = 33
ERA_DAYS = 146_097  # days in 400 Gregorian years


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


# ---- the records: the layout _lib.lua documents --------------------------------------------

def spend_record(t: int, n: int, o: int, d: int, *rest: int) -> dict[str, int]:
    return dict(zip(("T", "N", "O", "D", "H", "R", "h", "W", "w", "M", "m"), (t, n, o, d, *rest),
                    strict=True))


def test_records_hold_the_minute_and_its_counters(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "nd", "100")
    ms = at(2027, 3, 10, 12, 34, 56)  # a Wednesday
    lua.shift_to(ms)
    assert lua.charge(700)[0] == 0
    t = ms // MIN_MS
    spent = spend_record(t, 1, 1, 1, 700, 0, 0, 700, 0, 700, 0)
    assert records(lua) == {"": spent, ":tool": spent,
                            "/v_tool": {"T": t, "N": 1, "O": 1, "D": 1}}
    assert set(lua.hash(lua.k().walls)) == {"@", "@:tool", "@/v_tool"}
    assert lua.hold(300, "h1")[0] == 0  # llm: held, and one more call
    recs = records(lua)
    assert recs[""] == spend_record(t, 2, 2, 2, 700, 0, 300, 700, 300, 700, 300)
    assert recs[":llm"] == spend_record(t, 1, 1, 1, 0, 0, 300, 0, 300, 0, 300)
    assert recs[":tool"] == spent and recs["/v_llm"] == {"T": t, "N": 1, "O": 1, "D": 1}
    day = ms // DAY_MS
    monday = day - dt.date(2027, 3, 10).weekday()
    week = (monday + 3) // 7  # the week's number: its Monday's (day 0 was a Thursday)
    hold = lua.hash(lua.k().hold("h1"))
    assert (hold["xw"], hold["wk"], hold["mo"]) == ("1", str(week), str(2027 * 12 + 3 - 1))
    # The next minute: minute t's spending gets a field of its own, and counts in R.
    lua.shift_to(ms + 10_000)
    assert lua.charge(5)[0] == 0
    assert minutes(lua) == {f"H{t}": 700, f"H{t}:tool": 700}
    assert records(lua)[""] == spend_record(t + 1, 1, 3, 3, 5, 700, 300, 705, 300, 705, 300)
    assert records(lua)[":tool"] == spend_record(t + 1, 1, 2, 2, 5, 700, 0, 705, 0, 705, 0)
    assert records(lua)[":llm"]["T"] == t  # a record is written only by its own calls


@pytest.mark.parametrize("y,m,d", [(2026, 12, 28), (2027, 1, 3), (2020, 12, 31), (2021, 1, 4),
                                   (2100, 2, 28), (2100, 3, 1), (2400, 2, 29)])
def test_week_and_month_numbers_across_year_ends(clocked_lua: Lua, y: int, m: int,
                                                  d: int) -> None:
    lua = clocked_lua
    walled(lua, "wk", "1000000")
    ms = at(y, m, d, 23, 59, 59)
    lua.shift_to(ms)
    assert lua.hold(5, "h1")[0] == 0
    day = ms // DAY_MS
    iso = dt.date(y % 400 + 2000, m, d).isocalendar()  # same weekday every 400 years
    week = (day - (iso.weekday - 1) + 3) // 7
    hold = lua.hash(lua.k().hold("h1"))
    assert (hold["wk"], hold["mo"]) == (str(week), str(y * 12 + m - 1))
    # A second later: a new week on a Monday, a new month on the 1st, and nothing else.
    lua.shift_to(ms + 1000)
    assert lua.charge(7)[0] == 0
    new_week = iso.weekday == 7
    new_month = d == month_days(y, m)
    rec = records(lua)[""]
    assert (rec["W"], rec["w"]) == ((7, 0) if new_week else (7, 5))
    assert (rec["M"], rec["m"]) == ((7, 0) if new_month else (7, 5))
    assert (rec["O"], rec["D"]) == (1, 1)  # a new hour and day


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


# ---- the layout before records: stale and unknown counters ---------------------------------

def test_a_counter_of_an_unknown_kind_is_stale(clocked_lua: Lua) -> None:
    """A field the scripts never wrote (another version's, a hand edit) in a hash of the
    layout before records counts in no wall, however it is named, and is deleted when the
    hash is migrated."""
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


def test_one_stale_counter_is_deleted(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "nd", "100")
    lua.r.hset(lua.k().walls, "D1", "7")  # a day of 1970
    assert lua.charge(10)[0] == 0
    assert "D1" not in lua.hash(lua.k().walls)


# ---- holds across the walls' periods --------------------------------------------------------

def test_hold_released_in_the_next_month_leaves_that_month_alone(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "mo", "100000", "c:llm:mo", "100000")
    lua.shift_to(at(2027, 3, 31, 23, 59, 30))  # a Wednesday: the week goes on
    assert lua.hold(60_000, "h1", ttl_ms=60_000)[0] == 0
    lua.shift_to(at(2027, 4, 1, 0, 0, 10))
    assert lua.release("h1")[0] == 0
    assert records(lua)[""]["m"] == records(lua)[":llm"]["m"] == 0  # March's record
    assert lua.charge(100_000, cat="llm")[0] == 0  # April spent nothing, held nothing
    assert lua.charge(1, cat="llm")[:4] == [WINDOW, "monthly", 100_000, 100_000]


def test_capture_that_creates_the_walls_hash_gives_it_its_expiry(clocked_lua: Lua) -> None:
    lua = clocked_lua
    lua.create(grant=100_000_000)
    assert lua.hold(80_000, "h1")[0] == 0  # before the walls: the hold is not in them
    lua.set_limits("hr", "100000")
    assert not lua.r.exists(lua.k().walls)
    assert lua.capture(50_000, "h1")[0] == 0
    assert records(lua)[""]["H"] == records(lua)[":llm"]["H"] == 50_000
    assert 34 * DAY_MS < lua.r.pttl(lua.k().walls) <= 35 * DAY_MS


# ---- the spend windows' edges -------------------------------------------------------------

def test_free_call_passes_a_spend_window_already_over_its_cap(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "hr", "100000", "wk", "100000", "mo", "100000")
    assert lua.charge(90_000)[0] == 0
    lua.set_limits("hr", "50000", "wk", "50000", "mo", "50000")  # lowered below the spending
    assert lua.charge(None, tool="free")[0] == 0
    assert lua.charge(1)[:4] == [WINDOW, "hourly", 50_000, 90_000]


def test_hour_retry_when_a_leaving_minute_makes_exactly_room(clocked_lua: Lua) -> None:
    lua = clocked_lua
    t0 = (lua.now_ms() // HOUR_MS + 1) * HOUR_MS
    walled(lua, "hr", "100")
    for minute, cost in ((0, 30), (5, 30)):
        lua.shift_to(t0 + minute * MIN_MS)
        assert lua.charge(cost)[0] == 0
    lua.shift_to(t0 + 30 * MIN_MS)
    assert lua.charge(70)[4] == 30 * 60  # 30 + 70 = 100 fits once minute 0 leaves
    assert lua.charge(100)[4] == 35 * 60
    assert lua.charge(101)[4] == 3600  # never fits: what the open holds stand for


# ---- retries at a whole second ------------------------------------------------------------

# The scripts read the clock in ms; a retry is the time left rounded up to a whole second, so
# when the time left is a whole number of seconds it is exactly that. run_at sets the clock
# from Redis's own TIME right before the call (one pipeline): most calls read the very
# millisecond set, where rounding up and adding a second differ.
ATTEMPTS = 10


def test_retries_are_exact_at_whole_seconds(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "hr", "100", "dl", "100000")
    t0 = (lua.now_ms() // DAY_MS + 1) * DAY_MS + 10 * HOUR_MS  # 10:00:00
    lua.shift_to(t0)
    assert lua.charge(100)[0] == 0
    for n in range(ATTEMPTS):
        reply = run_at(lua, t0 + (n + 1) * 1000, "charge", *lua.charge_args(1))
        assert reply[:2] == [WINDOW, "hourly"] and reply[4] == 3600 - (n + 1), n
    lua.set_limits("hr", "")
    assert lua.charge(99_900)[0] == 0
    for n in range(ATTEMPTS):
        reply = run_at(lua, t0 + (n + 100) * 1000, "charge", *lua.charge_args(1))
        assert reply[:4] == [15, 100_000, 100_000, 14 * 3600 - (n + 100)], n


# ---- near-limit warnings of the call caps ----------------------------------------------------

CALLS_NEAR = 64


@pytest.mark.parametrize("field", ["nm", "c:tool:nh", "t:v_tool:nd"])
def test_calls_near_counts_from_zero_on_the_first_call(lua: Lua, field: str) -> None:
    """A cap of 2: the first call is at 50 % (no warning; no counter existed before it), the
    second at 100 % (warned, and it still passes)."""
    walled(lua, field, "2")
    assert lua.charge(10)[2] & CALLS_NEAR == 0
    assert lua.charge(10)[2] & CALLS_NEAR == CALLS_NEAR
    assert lua.charge(10)[0] == CALLS
