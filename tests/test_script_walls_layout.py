"""The walls hash's records (issue #16's cost: a call reads exactly its three records, never the
whole hash) at the edges of the rolling hour, and the migration of a hash of the layout before
records (one field per counter and period), which a live Redis keeps after an upgrade: its
counts are carried over exactly, by the first script that touches it (a call, a hold's close,
a refund), never read as zero."""

from __future__ import annotations

from gateway.metering.walls import periods, usage
from tests.script_helpers import Lua
from tests.test_script_refund import refund
from tests.test_script_walls_mutants import at, spend_record, walled
from tests.walls_helpers import minutes, records

MIN_MS = 60_000
WINDOW = 31
MS = at(2027, 3, 10, 12, 34, 56)  # a Wednesday


def old_layout(ms: int) -> dict[str, str]:
    """A walls hash as the scripts before records left it at ``ms``: live counters of the
    agent, its category 'tool' and tool 'v_tool', another category's, stale ones, a
    foreign one."""
    p = periods(ms)
    return {
        f"H{p.minute}": "1000", f"H{p.minute}:tool": "1000",  # this minute
        f"H{p.minute - 59}": "2000", f"H{p.minute - 59}:tool": "2000",  # still in the hour
        f"H{p.minute - 60}": "4000", f"H{p.minute - 60}:tool": "4000",  # left it
        f"N{p.minute}": "3", f"N{p.minute - 1}": "9", f"O{p.hour}": "7", f"O{p.hour - 1}": "70",
        f"D{p.day}": "11", f"D{p.day}/v_tool": "2", f"D{p.day - 1}": "99",
        f"W{p.week}": "30000", f"W{p.week - 1}": "1", f"w{p.week}": "500",
        f"M{p.month}": "40000", f"M{p.month - 1}": "1", f"m{p.month}": "500",
        "h": "500", "h:tool": "500", f"D{p.day}:llm": "4", f"W{p.week}:llm": "6",
        "Z1": "5",
    }


def plant(lua: Lua, fields: dict[str, str]) -> None:
    lua.r.hset(lua.k().walls, items=[x for pair in fields.items() for x in pair])


def test_the_first_call_migrates_every_live_counter(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "hr", "100000", "nm", "10")
    lua.shift_to(MS)
    plant(lua, old_layout(MS))
    other = "1 2 3 4 5 6 7 8 9 10 11"  # a record already there: the migration leaves it
    lua.r.hset(lua.k().walls, "@:other", other)
    assert lua.charge(10)[0] == 0
    t = MS // MIN_MS
    assert records(lua) == {
        "": spend_record(t, 4, 8, 12, 1010, 2000, 500, 30010, 500, 40010, 500),
        ":tool": spend_record(t, 1, 1, 1, 1010, 2000, 500, 10, 0, 10, 0),
        "/v_tool": {"T": t, "N": 1, "O": 1, "D": 3},
        ":llm": spend_record(t, 0, 0, 4, 0, 0, 0, 6, 0, 0, 0),
        ":other": spend_record(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)}
    assert minutes(lua) == {f"H{t - 59}": 2000, f"H{t - 59}:tool": 2000}
    assert set(lua.hash(lua.k().walls)) == {"@", "@:tool", "@/v_tool", "@:llm", "@:other",
                                            f"H{t - 59}", f"H{t - 59}:tool"}
    # The hour holds 1010 + 2000 + 500 held: 96490 more fit, and then the minute of 59
    # minutes ago must leave (4 s later, at the next minute).
    assert lua.charge(96_490)[0] == 0
    assert lua.charge(1) == [WINDOW, "hourly", 100_000, 100_000, 4, "tool"]


def nonzero(used: dict[str, int]) -> dict[str, int]:
    return {wall: n for wall, n in used.items() if n != 0}


def test_python_reads_both_layouts_alike(clocked_lua: Lua) -> None:
    """The agent detail route reads a hash no script touched since the upgrade as the
    scripts would migrate it."""
    lua = clocked_lua
    walled(lua, "hr", "1000", "c:tool:hr", "1000", "wk", "100", "nd", "1000")
    lua.shift_to(MS)
    old = old_layout(MS)
    plant(lua, old)
    assert lua.charge(10)[0] == WINDOW  # refused: the migration alone is written
    new = lua.hash(lua.k().walls)
    assert "@" in new and "@" not in old
    assert nonzero(usage(new, MS)) == nonzero(usage(old, MS))
    assert usage(new, MS)["hr"] == 3500 and usage(new, MS)["nd/v_tool"] == 2
    later = MS + 60 * MIN_MS
    assert nonzero(usage(new, later)) == nonzero(usage(old, later))


def test_a_holds_close_migrates_first(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "hr", "100000", "wk", "100000", "mo", "100000")
    lua.shift_to(MS)
    assert lua.hold(60_000, "h1")[0] == 0
    p = periods(MS)
    # The same hold as the scripts before records counted it.
    lua.r.delete(lua.k().walls)
    lua.r.hset(lua.k().walls, mapping={
        "h": "60000", "h:llm": "60000", f"w{p.week}": "60000", f"w{p.week}:llm": "60000",
        f"m{p.month}": "60000", f"m{p.month}:llm": "60000", f"N{p.minute}/v_llm": "1"})
    assert lua.release("h1")[0] == 0
    recs = records(lua)
    assert [(recs[s]["h"], recs[s]["w"], recs[s]["m"]) for s in ("", ":llm")] == [(0, 0, 0)] * 2
    assert set(lua.hash(lua.k().walls)) == {"@", "@:llm", "@/v_llm"}
    assert lua.charge(100_000)[0] == 0


def test_a_refund_migrates_first(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "hr", "1000000", "wk", "1000000", "mo", "1000000")
    lua.shift_to(MS)
    p = periods(MS)
    lua.r.hset(lua.k().walls, mapping={
        f"H{p.minute}": "100000", f"W{p.week}": "100000", f"M{p.month}": "100000"})
    assert refund(lua, 100_000, 30_000, at_ms=MS)[0] == 0
    rec = records(lua)[""]
    assert (rec["H"], rec["W"], rec["M"]) == (70_000, 70_000, 70_000)


def test_an_empty_hash_is_not_written_by_a_refund_or_a_close(clocked_lua: Lua) -> None:
    lua = clocked_lua
    lua.create(grant=10_000_000)
    lua.shift_to(MS)
    assert refund(lua, 100_000, 30_000, at_ms=MS)[0] == 0
    assert not lua.r.exists(lua.k().walls)


# ---- the rolling hour's edges ---------------------------------------------------------------

def test_many_minutes_leave_the_hour_at_once(clocked_lua: Lua) -> None:
    """A call after 30 idle minutes takes the 30 minutes that left out of R, and exactly
    those; their fields are deleted."""
    lua = clocked_lua
    walled(lua, "hr", "1000000")
    t0 = (MS // MIN_MS) * MIN_MS
    for i in range(50):  # 50 minutes, each 100 * (i + 1)
        lua.shift_to(t0 + i * MIN_MS)
        assert lua.charge(100 * (i + 1))[0] == 0
    assert len(minutes(lua)) == 2 * 49
    lua.shift_to(t0 + 79 * MIN_MS + 30_000)  # minutes 0..19 have left the hour
    assert lua.charge(1)[0] == 0
    left = sum(100 * (i + 1) for i in range(20, 50))
    rec = records(lua)[""]
    assert (rec["H"], rec["R"]) == (1, left)
    assert sorted(int(f[1:]) for f in minutes(lua) if ":" not in f) == [
        t0 // MIN_MS + i for i in range(20, 50)]
    assert usage(lua.hash(lua.k().walls), lua.now_ms())["hr"] == left + 1


def test_an_idle_hour_then_a_call(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "hr", "1000")
    t0 = (MS // MIN_MS) * MIN_MS
    for i in range(3):
        lua.shift_to(t0 + i * MIN_MS)
        assert lua.charge(300)[0] == 0
    assert lua.charge(101)[0] == WINDOW
    lua.shift_to(t0 + 62 * MIN_MS)  # minute 2, the last one spent in, has just left
    assert lua.charge(1000)[0] == 0
    assert minutes(lua) == {}
    assert records(lua)[""]["R"] == 0


def test_the_hour_rolls_at_its_exact_minute(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "hr", "1000")
    t0 = (MS // MIN_MS) * MIN_MS
    lua.shift_to(t0)
    assert lua.charge(600)[0] == 0
    lua.shift_to(t0 + 30 * MIN_MS)
    assert lua.charge(400)[0] == 0
    lua.shift_to(t0 + 60 * MIN_MS - 500)  # minute 0 still in the hour (a margin for the call)
    assert lua.charge(1) == [WINDOW, "hourly", 1000, 1000, 1, "tool"]
    lua.shift_to(t0 + 60 * MIN_MS)  # minute 0 left: 600 free
    assert lua.charge(600)[0] == 0
    assert lua.charge(1)[:2] == [WINDOW, "hourly"]


def test_the_hour_slides_minute_by_minute_in_two_categories(clocked_lua: Lua) -> None:
    """130 minutes of one call a minute, in two categories, against a model of the
    rolling hour: after each call every touched record's R is the sum of its scope's earlier
    minutes in the hour, each of which is a field of its own (none 0, none older), and the
    hour the refusals see is the last 60 minutes' spending."""
    lua = clocked_lua
    walled(lua, "hr", "10000000", "nd", "100000")
    t0 = (MS // MIN_MS) * MIN_MS
    spent: dict[tuple[str, int], int] = {}  # (scope, minute) -> micros
    last: dict[str, int] = {}  # scope -> the minute its record was last written in
    for i in range(130):
        cat = "llm" if i % 7 == 0 else "tool"  # 60 % 7 != 0: minutes leave one scope alone
        cost = 0 if i % 7 == 3 else 10 * (i + 1)  # some minutes spend nothing
        minute = t0 // MIN_MS + i
        lua.shift_to(t0 + i * MIN_MS + 5_000)
        assert lua.charge(cost, cat=cat)[0] == 0
        for scope in ("", ":" + cat):
            spent[(scope, minute)] = cost
            last[scope] = minute
        expected = {f"H{m}{s}": v for (s, m), v in spent.items()
                    if last[s] - 60 < m < last[s] and v > 0}
        assert minutes(lua) == expected, i
        recs = records(lua)
        for scope in ("", ":" + cat):
            assert recs[scope]["T"] == minute
            assert recs[scope]["H"] == cost
            assert recs[scope]["R"] == sum(v for f, v in expected.items()
                                           if f[1:].lstrip("0123456789") == scope)
        hour = sum(v for (s, m), v in spent.items() if s == "" and m > minute - 60)
        assert usage(lua.hash(lua.k().walls), lua.now_ms())["hr"] == hour


def test_a_hash_of_minutes_only_is_migrated(clocked_lua: Lua) -> None:
    """An older hash holding nothing but earlier minutes of the hour: they stay, nothing is
    deleted, and the hour counts them."""
    lua = clocked_lua
    walled(lua, "hr", "1000")
    lua.shift_to(MS)
    t = MS // MIN_MS
    plant(lua, {f"H{t - 1}": "300", f"H{t - 2}:tool": "200"})
    assert lua.charge(700)[0] == 0
    assert minutes(lua) == {f"H{t - 1}": 300, f"H{t - 2}:tool": 200}
    assert records(lua)[""]["R"] == 300 and records(lua)[":tool"]["R"] == 200
    assert lua.charge(1)[:2] == [WINDOW, "hourly"]


def test_a_minute_of_one_micro_leaves_the_hour_too(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "hr", "1000")
    t0 = (MS // MIN_MS) * MIN_MS
    lua.shift_to(t0)
    assert lua.charge(1)[0] == 0
    lua.shift_to(t0 + MIN_MS)
    assert lua.charge(999)[0] == 0
    assert records(lua)[""]["R"] == 1
    lua.shift_to(t0 + 60 * MIN_MS)  # minute 0 has left, minute 1 has not
    assert lua.charge(1)[0] == 0
    assert records(lua)[""]["R"] == 999
    assert minutes(lua) == {f"H{t0 // MIN_MS + 1}": 999, f"H{t0 // MIN_MS + 1}:tool": 999}


def test_a_clock_gone_back_neither_fails_nor_lets_more_through(clocked_lua: Lua) -> None:
    """Redis TIME behind a record's minute (a failover to a replica whose clock lags): the
    call is checked against everything the hour counted, later minutes included."""
    lua = clocked_lua
    walled(lua, "hr", "1000")
    t0 = (MS // MIN_MS) * MIN_MS
    lua.shift_to(t0 + 5 * MIN_MS)
    assert lua.charge(600)[0] == 0
    lua.shift_to(t0 + 6 * MIN_MS)
    assert lua.charge(300)[0] == 0
    lua.shift_to(t0 + 3 * MIN_MS)
    assert lua.charge(100)[0] == 0
    assert lua.charge(1)[:4] == [WINDOW, "hourly", 1000, 1000]


def test_refunds_of_a_minute_down_to_one_micro_then_gone(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "hr", "10000000")
    lua.shift_to(MS)
    assert lua.charge(100_000)[0] == 0
    lua.shift_to(MS + MIN_MS)
    assert lua.charge(5)[0] == 0
    t = MS // MIN_MS
    assert refund(lua, 300_000, 99_999, at_ms=MS)[0] == 0  # 1 micro left in minute t
    assert minutes(lua) == {f"H{t}": 1, f"H{t}:tool": 1}
    assert records(lua)[""]["R"] == 1
    assert refund(lua, 300_000, 50_000, at_ms=MS, charge_id="c2")[0] == 0
    assert minutes(lua) == {}
    assert refund(lua, 300_000, 50_000, at_ms=MS, charge_id="c3")[0] == 0  # the field is gone
    rec = records(lua)[""]
    assert (rec["H"], rec["R"]) == (5, 0)


def test_a_refund_without_the_categorys_record_gives_back_to_the_agents(clocked_lua: Lua) -> None:
    """A charge in a category the walls never counted (made before they were set) is refunded
    from the agent's record alone."""
    lua = clocked_lua
    lua.create(grant=10_000_000)
    lua.shift_to(MS)
    assert lua.charge(100_000, cat="llm")[0] == 0  # no walls yet
    lua.set_limits("wk", "1000000")
    assert lua.charge(200_000)[0] == 0
    assert set(records(lua)) == {"", ":tool", "/v_tool"}
    assert refund(lua, 100_000, 30_000, at_ms=MS, cat="llm")[0] == 0
    assert records(lua)[""]["W"] == 170_000
    assert ":llm" not in records(lua)


def test_a_hold_closed_after_its_month_turned_leaves_the_new_month_alone(
        clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "mo", "100000", "wk", "1000000")
    lua.shift_to(at(2027, 3, 31, 23, 59, 30))  # a Wednesday: the week goes on
    assert lua.hold(60_000, "h1", ttl_ms=120_000)[0] == 0
    lua.shift_to(at(2027, 4, 1, 0, 0, 10))
    assert lua.charge(10_000, cat="llm")[0] == 0  # April's first call: the record turns
    assert lua.release("h1")[0] == 0
    rec = records(lua)[""]
    assert (rec["M"], rec["m"]) == (10_000, 0)
    assert (rec["W"], rec["w"]) == (10_000, 0)  # the week's held leaves: same week
    assert lua.charge(90_000, cat="llm")[0] == 0
    assert lua.charge(1, cat="llm")[:4] == [WINDOW, "monthly", 100_000, 100_000]


def test_a_capture_is_checked_against_the_month_it_lands_in_and_counts_no_call(
        clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "mo", "100000", "nd", "100")
    lua.shift_to(at(2027, 3, 31, 23, 50))
    assert lua.hold(60_000, "h1", ttl_ms=3_600_000)[0] == 0
    assert lua.hold(60_000, "h2", ttl_ms=3_600_000)[0] == WINDOW  # 120000 held > 100000
    assert lua.capture(60_000, "h1")[0] == 0  # its own month counted it already
    assert records(lua)[""]["N"] == 1 and records(lua)[":llm"]["D"] == 1
    assert lua.hold(40_000, "h3", ttl_ms=3_600_000)[0] == 0
    lua.shift_to(at(2027, 4, 1, 0, 5))
    assert lua.charge(70_000, cat="llm")[0] == 0
    # April: 70000 spent; h3's 40000 was held in March, so April checks it as new spending.
    assert lua.capture(40_000, "h3")[:2] == [WINDOW, "monthly"]
    assert lua.capture(30_000, "h3")[0] == 0
    assert records(lua)[""]["D"] == 1  # April's one charge; the capture counted no call


def test_the_categorys_hour_counts_its_earlier_minutes(clocked_lua: Lua) -> None:
    lua = clocked_lua
    walled(lua, "c:tool:hr", "1000")
    t0 = (MS // MIN_MS) * MIN_MS
    lua.shift_to(t0)
    assert lua.charge(600)[0] == 0
    lua.shift_to(t0 + MIN_MS)
    assert lua.charge(400)[0] == 0
    assert lua.charge(1)[:4] == [WINDOW, "category_hourly", 1000, 1000]
