"""The money checks at their edges, called straight: the order of the refusals, the exact
refusal replies, replays of every idempotent script, the warning bits at their thresholds,
holds in every state. Script level, on the session's Redis."""

from __future__ import annotations

import pytest

from tests.script_helpers import DAY_MS, Lua

T = 1_000_000


def seconds_to_midnight(ms: int) -> int:
    return -(-(DAY_MS - ms % DAY_MS) // 1000)


# ---- refusals: order and replies -----------------------------------------------------------

def test_charge_refusal_order(lua: Lua) -> None:
    lua.create(grant=100)
    lua.set_limits("pc", "50", "c:tool:pc", "40", "dl", "30", "c:tool:dl", "20")
    lua.r.hset(lua.k().agent_hash, "frozen", "1")
    assert lua.charge(1000) == [11]
    lua.r.hset(lua.k().agent_hash, "frozen", "0")
    assert lua.charge(1000) == [13, 50, 1000, "tool"]
    assert lua.charge(45) == [14, 40, 45, "tool"]
    lua.set_limits("pc", "", "c:tool:pc", "")
    assert lua.charge(1000)[:3] == [15, 30, 0]
    lua.set_limits("dl", "")
    assert lua.charge(1000)[:3] == [16, 20, 0]
    lua.set_limits("c:tool:dl", "")
    assert lua.charge(1000) == [17, 100, 1000]
    assert lua.charge(101) == [17, 100, 101]
    assert (lua.bal(), lua.window()) == (100, {})
    assert lua.charge(1)[:2] == [0, 99]  # the smallest charge moves the balance
    assert lua.window()["s"] == "1"


def test_caps_exactly_and_one_over(lua: Lua) -> None:
    lua.create(grant=10 * T)
    lua.set_limits("pc", "50000", "c:tool:pc", "60000")
    assert lua.charge(50_000)[0] == 0
    assert lua.charge(50_001) == [13, 50_000, 50_001, "tool"]
    lua.set_limits("pc", "", "c:tool:pc", "50000")
    assert lua.charge(50_000)[0] == 0
    assert lua.charge(50_001) == [14, 50_000, 50_001, "tool"]
    assert lua.charge(50_001, cat="web")[0] == 0  # another category's cap does not apply
    lua.set_limits("c:tool:pc", "", "dl", "250001", "c:tool:dl", "150000")  # 150001 spent
    assert lua.charge(50_001)[:3] == [16, 150_000, 100_000]
    assert lua.charge(50_000)[0] == 0
    assert lua.charge(1)[:3] == [16, 150_000, 150_000]
    assert lua.charge(50_000, cat="web")[0] == 0  # 250001 spent today: at the daily cap
    assert lua.charge(1, cat="web")[:3] == [15, 250_001, 250_001]


def test_frozen_refuses_paid_calls_only(lua: Lua) -> None:
    lua.create(grant=T)
    assert lua.hold(10_000, "open")[0] == 0
    lua.run("freeze", *lua.freeze_args("1"))
    before = lua.snapshot()
    assert lua.charge(1) == [11]
    assert lua.hold(1, "h2") == [11]
    assert lua.snapshot() == before
    assert lua.charge(0)[0] == 0
    assert lua.capture(5_000, "open")[0] == 0  # settling an open hold is not a new payment
    lua.run("freeze", *lua.freeze_args("0"))
    assert lua.charge(1)[0] == 0


def test_unknown_agent_and_hold(lua: Lua) -> None:
    lua.create(grant=T)
    lua.create("b2", grant=T)
    assert lua.hold(10_000)[0] == 0
    before = lua.snapshot()
    assert lua.charge(1, agent="ghost") == [10]
    assert lua.charge(0, agent="ghost") == [10]
    assert lua.hold(1, "hx", agent="ghost") == [10]
    assert lua.fund(1, agent="ghost") == [10]
    assert lua.run("set_limits", *lua.limits_args("pc", "1", agent="ghost")) == [10]
    assert lua.capture(1, "nohold") == [18]
    assert lua.release("nohold") == [18]
    assert lua.capture(1, "hold1", agent="b2") == [18]  # another agent's hold
    assert lua.release("hold1", agent="b2") == [18]
    assert lua.hold(10, "hold1") == [30, 3]  # a hold id is never reused
    assert lua.snapshot() == before


def test_retry_after_is_the_time_to_utc_midnight(lua: Lua) -> None:
    lua.create(grant=T)
    lua.set_limits("dl", "10", "c:llm:dl", "10")
    for reply in (lua.charge(11), lua.hold(11), lua.charge(11, cat="llm")):
        after = seconds_to_midnight(lua.now_ms())
        assert reply[0] in (15, 16)
        assert after <= reply[3] <= after + 1, reply


def test_retry_after_near_midnight(clocked_lua: Lua) -> None:
    lua = clocked_lua
    lua.create(grant=T)
    lua.set_limits("dl", "10")
    midnight = (lua.now_ms() // DAY_MS + 1) * DAY_MS
    for left_ms, low, high in ((1_500, 1, 2), (43_200_000, 43_199, 43_200),
                               (DAY_MS - 2_000, 86_397, 86_398)):
        lua.shift_to(midnight - left_ms)
        assert low <= lua.charge(11)[3] <= high, left_ms


# ---- idempotency ---------------------------------------------------------------------------

def test_charge_replay_and_conflict(lua: Lua) -> None:
    lua.create(grant=200_000)
    lua.set_limits("low", "150000", "dl", "100000")
    first = lua.charge(90_000, idem="k1")
    assert first[:3] == [0, 110_000, 1 + 2 + 4]
    lua.r.hset(lua.k().agent_hash, "frozen", "1")  # replays answer whatever changed since
    before = lua.snapshot()
    assert lua.charge(90_000, idem="k1") == [1, "110000", "7", first[3], "90000", "tool",
                                                  ""]
    assert lua.run("charge", *lua.charge_args(90_000, idem="k1", ih="other")) == [12]
    assert lua.snapshot() == before
    assert lua.charge(90_000, idem="k2") == [11]


def test_no_key_never_replays(lua: Lua) -> None:
    lua.create(grant=T)
    keys_, args = lua.charge_args(10)
    lua.r.set(keys_[2], f"x {T} 0 e0 10")  # a record where the no-key calls point
    assert lua.run("charge", keys_, args)[:2] == [0, T - 10]
    assert lua.r.get(keys_[2]) == f"x {T} 0 e0 10"
    assert lua.charge(10)[:2] == [0, T - 20]
    lua.r.delete(keys_[2])
    assert lua.charge(10)[:2] == [0, T - 30]
    assert lua.fund(30)[:2] == [0, T]
    assert lua.hold(10, "hx")[0] == 0
    assert lua.release("hx")[0] == 0
    assert lua.r.exists(keys_[2]) == 0  # no record written without a key


def test_hold_replay_and_conflict(lua: Lua) -> None:
    lua.create(grant=200_000)
    lua.set_limits("low", "150000")
    first = lua.hold(100_000, "h1", idem="k1")
    assert first[:4] == [0, 100_000, 5, "h1"]
    before = lua.snapshot()
    assert lua.hold(100_000, "h2", idem="k1") == [1, "100000", "5", "h1", str(first[4]),
                                                   100_000, 0, ""]
    assert lua.run("hold", *lua.hold_args(100_000, "h3", idem="k1", ih="x")) == [12]
    assert lua.snapshot() == before


def test_capture_and_release_replay_after_closing(lua: Lua) -> None:
    lua.create(grant=T)
    assert lua.hold(100_000, "h1")[0] == 0
    assert lua.hold(100_000, "h2")[0] == 0
    first = lua.capture(30_000, "h1", idem="c1")
    assert first == [0, T - 130_000, 0, first[3], 70_000, 30_000]
    released = lua.release("h2", idem="r1")
    assert released == [0, T - 30_000, 0, released[3], 100_000]
    before = lua.snapshot()
    assert lua.capture(30_000, "h1", idem="c1") == [1, str(T - 130_000), "0", first[3],
                                                    "70000", 30_000]
    assert lua.release("h2", idem="r1") == [1, str(T - 30_000), "0", released[3], "100000"]
    assert lua.run("capture", *lua.capture_args(30_000, "h1", idem="c1", ih="x")) == [12]
    assert lua.run("release", *lua.release_args("h2", idem="r1", ih="x")) == [12]
    assert lua.capture(30_000, "h1") == [19, "captured"]
    assert lua.release("h2") == [19, "released"]
    assert lua.release("h1") == [19, "captured"]
    assert lua.snapshot() == before


def test_fund_replay_and_conflict(lua: Lua) -> None:
    lua.create(grant=0)
    lua.set_limits("low", "100")
    first = lua.fund(50, idem="f1")
    assert first == [0, 50, 1, first[3]]
    before = lua.snapshot()
    assert lua.fund(50, idem="f1") == [1, "50", "1", first[3], "50"]
    assert lua.run("fund", *lua.fund_args(50, idem="f1", ih="x")) == [12]
    assert lua.snapshot() == before


def test_replay_survives_a_refusal_the_first_call_would_get_now(lua: Lua) -> None:
    lua.create(grant=100_000)
    first = lua.charge(100_000, idem="all")
    assert first[:2] == [0, 0]
    assert lua.charge(100_000, idem="all")[0] == 1
    assert lua.charge(100_000) == [17, 0, 100_000]


# ---- warnings ------------------------------------------------------------------------------

def test_daily_near_at_eighty_percent(lua: Lua) -> None:
    lua.create(grant=10 * T)
    lua.set_limits("dl", "100000")
    assert lua.charge(40_000)[2] == 0
    assert lua.hold(40_000)[2] == 0  # 80 % exactly: not over
    assert lua.charge(1)[2] == 2
    assert lua.capture(0)[2] == 0  # the hold left the window: 40001 spent, none held
    lua.reset()
    lua.create(grant=10 * T)
    lua.set_limits("dl", "100000")
    assert lua.hold(90_000)[2] == 2
    assert lua.capture(80_000)[2] == 0
    assert lua.hold(10, "h2")[2] == 2


def test_daily_near_counts_what_is_held(lua: Lua) -> None:
    lua.create(grant=10 * T)
    lua.set_limits("dl", "100000", "c:llm:dl", "200000")
    assert lua.hold(40_000, "h1")[2] == 0
    assert lua.hold(40_000, "h2")[2] == 0
    assert lua.hold(1, "h3")[2] == 2
    lua.set_limits("dl", "", "c:llm:dl", "100000")
    assert lua.hold(1, "h4")[2] == 2
    assert lua.release("h4")[0] == 0
    assert lua.release("h3")[0] == 0
    assert lua.charge(1, cat="llm")[2] == 2
    assert lua.charge(1, cat="tool")[2] == 0


def test_category_daily_near_at_eighty_percent(lua: Lua) -> None:
    lua.create(grant=10 * T)
    lua.set_limits("c:llm:dl", "100000")
    assert lua.charge(40_000, cat="llm")[2] == 0
    assert lua.charge(90_000)[2] == 0  # other categories do not count
    assert lua.hold(40_000)[2] == 0
    assert lua.charge(1, cat="llm")[2] == 2
    assert lua.capture(0)[2] == 0  # the hold's 40000 left the window: 40001 spent
    assert lua.hold(39_999, "h2")[2] == 0
    assert lua.hold(1, "h3")[2] == 2


def test_capture_daily_near_of_each_cap(lua: Lua) -> None:
    lua.create(grant=10 * T)
    lua.set_limits("c:llm:dl", "100000")
    assert lua.hold(90_000, "h1")[2] == 2
    assert lua.capture(80_001, "h1")[2] == 2
    lua.set_limits("c:llm:dl", "", "dl", "100000")
    assert lua.hold(1_000, "h2")[2] == 2
    assert lua.capture(0, "h2")[2] == 2
    lua.set_limits("dl", "1000000")
    assert lua.hold(1_000, "h3")[2] == 0
    assert lua.capture(0, "h3")[2] == 0


def test_low_balance_bits(lua: Lua) -> None:
    lua.create(grant=200_000)
    lua.set_limits("low", "100000")
    assert lua.charge(100_000)[:3] == [0, 100_000, 0]  # at the threshold: not below
    assert lua.charge(0)[2] == 0
    assert lua.charge(1)[2] == 1 + 4  # crossed
    assert lua.agent()["lowf"] == "1"
    assert lua.charge(0)[2] == 1
    assert lua.charge(1)[2] == 1  # still below, no new crossing
    assert lua.fund(2)[2] == 0  # back at 100000: re-armed
    assert lua.agent()["lowf"] == "0"
    assert lua.hold(1)[2] == 5
    assert lua.release()[2] == 0
    assert lua.agent()["lowf"] == "0"
    assert lua.hold(50_000, "h2")[2] == 5
    assert lua.capture(1, "h2")[2] == 1  # 99999 left: below, crossing already told
    assert lua.fund(1)[2] == 0
    assert lua.hold(10, "h3")[2] == 5
    lua.r.hset(lua.k().hold("h3"), "exp", "1")
    lua.r.zadd(lua.k().holds, {"h3": 1})
    assert lua.expire() == [0, 1]
    assert lua.agent()["lowf"] == "0"
    assert lua.fund(1)[2] == 0
    lua.set_limits("low", "")
    assert lua.charge(50_000)[2] == 0


def test_low_flag_after_fund_below_and_capture_above(lua: Lua) -> None:
    lua.create(grant=0)
    lua.set_limits("low", "100")
    assert lua.fund(10)[2] == 1  # still below, armed quietly by set_limits
    assert lua.fund(90)[2] == 0
    assert lua.hold(50)[2] == 5
    assert lua.capture(0)[2] == 0
    assert lua.agent()["lowf"] == "0"


# ---- windows -------------------------------------------------------------------------------

def test_capture_of_nothing_adds_no_spending_fields(lua: Lua) -> None:
    lua.create(grant=T)
    assert lua.hold(10_000)[0] == 0
    assert lua.capture(0)[0] == 0
    assert lua.window() == {"day": str(lua.today()), "h": "0", "h:llm": "0"}


def test_stale_window_is_replaced_whole(lua: Lua) -> None:
    lua.create(grant=T)
    k = lua.k()
    lua.r.hset(k.window, mapping={"day": "5", "s": "900", "h": "50", "s:old": "900",
                                  "h:llm": "50"})
    assert lua.charge(100)[0] == 0
    assert lua.window() == {"day": str(lua.today()), "s": "100", "s:tool": "100"}
    assert 0 < lua.r.pttl(k.window) <= 2 * DAY_MS
    lua.r.hset(k.window, mapping={"day": "5", "s": "900"})
    lua.r.persist(k.window)
    assert lua.hold(10)[0] == 0
    assert lua.window() == {"day": str(lua.today()), "h": "10", "h:llm": "10"}
    assert 0 < lua.r.pttl(k.window) <= 2 * DAY_MS
    lua.r.hset(k.window, mapping={"day": "5", "s": "900", "h": "10"})
    lua.r.persist(k.window)
    assert lua.capture(0)[0] == 0  # nothing spent, but today's window starts
    assert lua.window() == {"day": str(lua.today()), "s": "0", "s:llm": "0"}
    assert 0 < lua.r.pttl(k.window) <= 2 * DAY_MS


def test_todays_window_keeps_its_expiry(lua: Lua) -> None:
    lua.create(grant=T)
    assert lua.charge(100)[0] == 0
    lua.r.pexpire(lua.k().window, 10_000_000)
    assert lua.charge(100)[0] == 0
    assert lua.hold(100)[0] == 0
    assert 9_000_000 < lua.r.pttl(lua.k().window) <= 10_000_000


def test_expired_hold_cannot_be_captured_but_can_be_released(lua: Lua) -> None:
    lua.create(grant=T)
    assert lua.hold(10_000, "h1")[0] == 0
    assert lua.hold(10_000, "h2")[0] == 0
    lua.r.hset(lua.k().hold("h1"), "exp", str(lua.now_ms() - 1))
    lua.r.hset(lua.k().hold("h2"), "exp", str(lua.now_ms() + 60_000))
    before = lua.snapshot()
    assert lua.capture(1, "h1") == [19, "expired"]
    assert lua.snapshot() == before
    assert lua.capture(1, "h2")[0] == 0
    assert lua.release("h1")[:2] == [0, T - 1]


# Spent and held today, in two categories, all different: s 36000, h 30000, s:llm 5000,
# h:llm 23000, s:tool 31000, h:tool 7000; so a sum that takes the wrong counter is off.
def busy_day(lua: Lua) -> None:
    lua.create(grant=10 * T)
    assert lua.charge(31_000, cat="tool")[0] == 0
    assert lua.charge(5_000, cat="llm")[0] == 0
    assert lua.hold(20_000, "A", cat="llm")[0] == 0
    assert lua.hold(3_000, "B", cat="llm")[0] == 0
    assert lua.hold(7_000, "C", cat="tool")[0] == 0


NEAR_CASES = [  # (call, limit field, limit, cost at 80 % exactly)
    ("charge", "dl", 100_000, 14_000), ("charge", "c:tool:dl", 100_000, 42_000),
    ("hold", "dl", 100_000, 14_000), ("hold", "c:llm:dl", 100_000, 52_000),
    ("capture", "dl", 75_000, 14_000), ("capture", "c:llm:dl", 25_000, 12_000),
]


@pytest.mark.parametrize(("call", "field", "limit", "edge"), NEAR_CASES)
@pytest.mark.parametrize("over", [0, 1])
def test_daily_near_sums_the_right_counters(lua: Lua, call: str, field: str, limit: int,
                                            edge: int, over: int) -> None:
    busy_day(lua)
    lua.set_limits(field, str(limit))
    cost = edge + over
    if call == "charge":
        reply = lua.charge(cost, cat="tool")
    elif call == "hold":
        reply = lua.hold(cost, "D", cat="llm")
    else:
        reply = lua.capture(cost, "A")
    assert reply[0] == 0 and reply[2] == 2 * over, reply


def test_a_second_hold_below_the_threshold_is_no_new_crossing(lua: Lua) -> None:
    lua.create(grant=200_000)
    lua.set_limits("low", "100000", "c:llm:pc", "500000")
    assert lua.hold(100_001, "h1")[2] == 5
    assert lua.hold(1, "h2")[2] == 1
    assert lua.charge(1)[2] == 1
