"""The four money bugs no test caught (issue: mutation testing of the scripts), one test each
and their neighbours: the daily window's reset at UTC midnight, a hold of exactly the
balance, fund's overflow check counting held money, closing a hold lowering today's held
counters. Script level, on the session's Redis: each test takes milliseconds."""

from __future__ import annotations

from tests.script_helpers import DAY_MS, Lua

T = 1_000_000


def midnight_after(lua: Lua) -> int:
    return (lua.now_ms() // DAY_MS + 1) * DAY_MS


def test_daily_window_restarts_at_utc_midnight(clocked_lua: Lua) -> None:
    lua = clocked_lua
    lua.create(grant=10 * T)
    lua.set_limits("dl", "100000", "c:tool:dl", "100000")
    midnight = midnight_after(lua)
    lua.shift_to(midnight - 1_000)  # 23:59:59
    assert lua.charge(100_000)[0] == 0
    refused = lua.charge(1)
    assert refused[:3] == [15, 100_000, 100_000]
    assert refused[3] == 1  # seconds to midnight, rounded up
    lua.shift_to(midnight + 1_000)  # 00:00:01 the next day
    assert lua.charge(60_000)[0] == 0
    day = str(midnight // DAY_MS)
    assert lua.window() == {"day": day, "s": "60000", "s:tool": "60000"}
    assert lua.charge(40_000)[0] == 0
    assert lua.charge(1)[:3] == [15, 100_000, 100_000]
    assert 0 < lua.r.pttl(lua.k().window) <= 2 * DAY_MS


def test_category_window_restarts_at_utc_midnight(clocked_lua: Lua) -> None:
    lua = clocked_lua
    lua.create(grant=10 * T)
    lua.set_limits("c:llm:dl", "100000")
    midnight = midnight_after(lua)
    lua.shift_to(midnight - 2_000)
    assert lua.hold(100_000, "h1")[0] == 0
    assert lua.hold(1, "h2")[:3] == [16, 100_000, 100_000]
    assert lua.charge(5, cat="llm")[:3] == [16, 100_000, 100_000]
    lua.shift_to(midnight + 2_000)
    assert lua.hold(100_000, "h3")[0] == 0  # yesterday's hold no longer counts today
    day = str(midnight // DAY_MS)
    assert lua.window() == {"day": day, "h": "100000", "h:llm": "100000"}
    # Yesterday's hold closes without touching today's counters.
    assert lua.release("h1")[0] == 0
    assert lua.window() == {"day": day, "h": "100000", "h:llm": "100000"}
    assert lua.capture(30_000, "h3")[0] == 0
    assert lua.window() == {"day": day, "h": "0", "h:llm": "0", "s": "30000",
                            "s:llm": "30000"}


def test_yesterdays_hold_closed_today_leaves_todays_window(clocked_lua: Lua) -> None:
    lua = clocked_lua
    lua.create(grant=10 * T)
    lua.set_limits("dl", "300000")
    midnight = midnight_after(lua)
    lua.shift_to(midnight - 1_000)
    assert lua.hold(200_000, "old", ttl_ms=3_600_000)[0] == 0
    lua.shift_to(midnight + 1_000)
    assert lua.charge(100_000)[0] == 0
    assert lua.capture(150_000, "old")[0] == 0  # spent today, its hold was yesterday's
    day = str(midnight // DAY_MS)
    assert lua.window() == {"day": day, "s": "250000", "s:llm": "150000", "s:tool": "100000"}
    assert lua.charge(50_000)[0] == 0
    assert lua.charge(1)[:3] == [15, 300_000, 300_000]


def test_hold_of_exactly_the_balance_is_taken(lua: Lua) -> None:
    lua.create(grant=100_000)
    before = lua.snapshot()
    assert lua.hold(100_001)[:3] == [17, 100_000, 100_001]
    assert lua.snapshot() == before
    reply = lua.hold(100_000)
    assert reply[:4] == [0, 0, 0, "hold1"]
    assert (lua.bal(), lua.agent()["held"]) == (0, "100000")
    assert lua.hold(1, "hold2")[:3] == [17, 0, 1]


def test_hold_at_each_cap_exactly(lua: Lua) -> None:
    lua.create(grant=10 * T)
    lua.set_limits("pc", "50000")
    assert lua.hold(50_001, "p1")[:3] == [13, 50_000, 50_001]
    assert lua.hold(50_000, "p2")[0] == 0
    lua.set_limits("pc", "", "c:llm:pc", "40000")
    assert lua.hold(40_001, "c1")[:3] == [14, 40_000, 40_001]
    assert lua.hold(40_000, "c2")[0] == 0
    lua.set_limits("c:llm:pc", "", "dl", "190000")
    assert lua.hold(100_001, "d1")[:3] == [15, 190_000, 90_000]
    assert lua.hold(100_000, "d2")[0] == 0
    lua.set_limits("dl", "", "c:llm:dl", "200000")
    assert lua.hold(10_001, "e1")[:3] == [16, 200_000, 190_000]
    assert lua.hold(10_000, "e2")[0] == 0


def test_fund_overflow_counts_held_money(lua: Lua) -> None:
    lua.create(grant=100)
    assert lua.hold(40)[0] == 0  # balance 60, held 40: 100 funded
    before = lua.snapshot()
    assert lua.fund(50, balance_max=149) == [22, 60, 149]
    assert lua.snapshot() == before
    assert lua.fund(50, balance_max=150)[:2] == [0, 110]
    assert lua.fund(1, balance_max=150) == [22, 110, 150]


def test_fund_overflow_without_held_money(lua: Lua) -> None:
    lua.create(grant=100)
    assert lua.fund(50, balance_max=149) == [22, 100, 149]
    assert lua.fund(50, balance_max=150)[:2] == [0, 150]


def window_counters(lua: Lua) -> tuple[str | None, ...]:
    w = lua.window()
    return w.get("h"), w.get("h:llm"), w.get("s"), w.get("s:llm")


def test_release_lowers_todays_held_counters(lua: Lua) -> None:
    lua.create(grant=10 * T)
    lua.set_limits("dl", "200000", "c:llm:dl", "200000")
    assert lua.hold(150_000)[0] == 0
    assert window_counters(lua) == ("150000", "150000", None, None)
    assert lua.hold(50_001, "h2")[0] == 15
    assert lua.release()[0] == 0
    assert window_counters(lua) == ("0", "0", None, None)
    assert lua.hold(200_000, "h3")[0] == 0


def test_capture_moves_held_to_spent_today(lua: Lua) -> None:
    lua.create(grant=10 * T)
    lua.set_limits("dl", "200000", "c:llm:dl", "200000")
    assert lua.hold(150_000)[0] == 0
    assert lua.capture(50_000)[0] == 0
    assert window_counters(lua) == ("0", "0", "50000", "50000")
    assert lua.hold(150_001, "h2")[0] == 15
    assert lua.hold(150_000, "h2")[0] == 0


def test_expiry_lowers_todays_held_counters(lua: Lua) -> None:
    lua.create(grant=10 * T)
    lua.set_limits("dl", "200000", "c:llm:dl", "200000")
    assert lua.hold(150_000, ttl_ms=1)[0] == 0
    assert lua.hold(20_000, "keep")[0] == 0
    deadline = lua.now_ms() + 2_000
    while lua.expire() != [0, 1]:
        assert lua.now_ms() < deadline, "the 1 ms hold was never expired"
    assert window_counters(lua) == ("20000", "20000", None, None)
    assert lua.hold(180_000, "h3")[0] == 0


def test_capture_after_midnight_is_checked_against_todays_caps(clocked_lua: Lua) -> None:
    lua = clocked_lua
    lua.create(grant=10 * T)
    lua.set_limits("dl", "300000")
    midnight = midnight_after(lua)
    lua.shift_to(midnight - 1_000)
    assert lua.hold(250_000, "old", ttl_ms=3_600_000)[0] == 0
    lua.set_limits("c:llm:dl", "200000")
    lua.shift_to(midnight + 1_000)
    assert lua.charge(100_000)[0] == 0
    before = lua.snapshot()
    refused = lua.capture(200_001, "old")
    assert refused[:3] + refused[4:] == [15, 300_000, 100_000, "llm"]
    assert 86_398 <= refused[3] <= 86_400
    lua.set_limits("dl", "400000")
    before = lua.snapshot()
    refused = lua.capture(200_001, "old")
    assert refused[:3] + refused[4:] == [16, 200_000, 0, "llm"]
    assert lua.snapshot() == before
    assert lua.capture(200_000, "old")[::2] == [0, 2, 50_000]  # code, flags, released
    day = str(midnight // DAY_MS)
    assert lua.window() == {"day": day, "s": "300000", "s:tool": "100000", "s:llm": "200000"}
    assert lua.agent()["held"] == "0"


def test_capture_on_the_day_of_its_hold_is_not_checked_again(clocked_lua: Lua) -> None:
    lua = clocked_lua
    lua.create(grant=10 * T)
    lua.set_limits("dl", "300000")
    midnight = midnight_after(lua)
    lua.shift_to(midnight - 60_000)
    assert lua.hold(250_000, "h1")[0] == 0
    lua.set_limits("dl", "1", "c:llm:dl", "1")  # the hold was counted when it was taken
    lua.shift_to(midnight - 1_000)
    assert lua.capture(250_000, "h1")[::2] == [0, 2, 0]
