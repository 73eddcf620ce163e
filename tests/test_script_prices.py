"""Prices read inside the scripts, called straight: the partitions' catalog copies
(tool_copy.lua) and what charge, hold and capture make of them (fixed prices, costs required
or refused, holds of the price, captures of a fixed hold)."""

from __future__ import annotations

from tests.script_helpers import Lua

T = 1_000_000


def copy_row(lua: Lua, tool: str) -> str | None:
    row: str | None = lua.r.hget(lua.k().tools, tool)  # type: ignore[assignment]
    return row


def test_tool_copy_keeps_the_newest_version(lua: Lua) -> None:
    run = lua.run
    assert run("tool_copy", *lua.tool_copy_args("t1", 5, 90_000, "web", "variable")) == [0, 1]
    assert copy_row(lua, "t1") == "5 90000 web variable"
    assert run("tool_copy", *lua.tool_copy_args("t1", 4, 1, "web", "fixed")) == [0, 0]
    assert run("tool_copy", *lua.tool_copy_args("t1", 5, 1, "web", "fixed")) == [0, 0]
    assert copy_row(lua, "t1") == "5 90000 web variable"
    assert run("tool_copy", *lua.tool_copy_args("t1", 6)) == [0, 1]  # deleted: a tombstone
    assert copy_row(lua, "t1") == "6"
    assert run("tool_copy", *lua.tool_copy_args("t1", 5, 2, "web", "fixed")) == [0, 0]
    assert copy_row(lua, "t1") == "6"
    forced = lua.tool_copy_args("t1", 3, 7, "web", "fixed", force="1")
    assert run("tool_copy", *forced) == [0, 1]
    assert copy_row(lua, "t1") == "3 7 web fixed"
    assert run("tool_copy", *lua.tool_copy_args("t2", 1, 0, "web", "fixed")) == [0, 1]


def test_a_deleted_or_unknown_tool_is_refused(lua: Lua) -> None:
    lua.create(grant=T)
    lua.run("tool_copy", *lua.tool_copy_args("v_tool", 2))  # deleted
    before = lua.snapshot()
    assert lua.charge(10, cat="tool") == [25]
    assert lua.charge(10, tool="nope") == [25]
    assert lua.hold(10, "h1", tool="nope") == [25]
    assert lua.charge(10, agent="ghost", cat="llm") == [10]
    assert lua.snapshot() == before


def test_fixed_price_charges(lua: Lua) -> None:
    lua.create(grant=T)
    before = lua.snapshot()
    assert lua.charge(50_000, tool="fx_tool") == [26, 50_000]
    assert lua.charge(0, tool="fx_tool") == [26, 50_000]
    assert lua.charge(None, cat="llm") == [27]
    assert lua.snapshot() == before
    reply = lua.charge(None, tool="fx_tool")
    assert reply[:3] + reply[4:] == [0, T - 50_000, 0, 50_000, "tool", ""]
    assert lua.events()[-1]["amount"] == "50000"
    assert lua.window()["s:tool"] == "50000"
    lua.run("freeze", *lua.freeze_args("1"))
    assert lua.charge(None, tool="free")[:2] == [0, T - 50_000]  # free calls pass a freeze
    assert lua.charge(None, tool="fx_tool") == [11]


def test_holds_of_fixed_and_variable_tools(lua: Lua) -> None:
    lua.create(grant=T)
    before = lua.snapshot()
    assert lua.hold(49_999, "h0", tool="fx_tool") == [28, 50_000]
    assert lua.hold(None, "h0", tool="free") == [29]
    assert lua.snapshot() == before
    for hold_id, max_cost in (("h1", None), ("h2", 50_000), ("h3", 70_000)):
        reply = lua.hold(max_cost, hold_id, tool="fx_tool")
        assert reply[0] == 0 and reply[5:] == [50_000, 1, ""], hold_id
        assert lua.hash(lua.k().hold(hold_id))["fx"] == "1"
        assert lua.events()[-1]["amount"] == "50000"
    assert lua.hold(None, "v1", cat="llm")[5:7] == [80_000, 0]  # the catalog price
    assert lua.hold(1_000, "v2", cat="llm")[5:7] == [1_000, 0]
    assert lua.hash(lua.k().hold("v2"))["fx"] == "0"
    assert lua.agent()["held"] == str(3 * 50_000 + 81_000)


def test_captures_of_a_fixed_hold(lua: Lua) -> None:
    lua.create(grant=T)
    assert lua.hold(None, "f1", tool="fx_tool")[0] == 0
    assert lua.hold(None, "v1", cat="llm")[0] == 0
    before = lua.snapshot()
    assert lua.capture(49_999, "f1") == [26, 50_000]
    assert lua.capture(0, "f1") == [26, 50_000]
    assert lua.capture(None, "v1") == [27]
    assert lua.snapshot() == before
    reply = lua.capture(None, "f1")
    assert reply[:3] + reply[4:] == [0, T - 80_000 - 50_000, 0, 0, 50_000]
    assert lua.events()[-1]["amount"] == "50000"
    assert lua.hash(lua.k().hold("f1"))["captured"] == "50000"
    assert lua.hold(None, "f2", tool="fx_tool")[0] == 0
    assert lua.capture(50_000, "f2")[4:] == [0, 50_000]


def test_a_hold_without_its_fixed_mark_reads_the_catalog(lua: Lua) -> None:
    lua.create(grant=T)
    for hold_id, tool in (("f1", "fx_tool"), ("v1", "v_llm"), ("g1", "gone")):
        lua.r.hset(lua.k().tools, "gone", "1 20000 llm fixed")
        assert lua.hold(None, hold_id, tool=tool)[0] == 0
        lua.r.hdel(lua.k().hold(hold_id), "fx")  # as iou recover rebuilds it
    lua.r.hset(lua.k().tools, "gone", "2")  # deleted since
    assert lua.capture(1, "f1") == [26, 50_000]
    assert lua.capture(None, "f1")[4:] == [0, 50_000]
    assert lua.capture(None, "v1") == [27]
    assert lua.capture(1, "v1")[4:] == [79_999, 1]
    assert lua.capture(None, "g1") == [27]  # unknown now: a cost must be named
    assert lua.capture(5, "g1")[4:] == [19_995, 5]


def test_replays_carry_the_first_answers_amounts(lua: Lua) -> None:
    lua.create(grant=T)
    first = lua.hold(None, "f1", tool="fx_tool", idem="k1")
    assert lua.hold(None, "f2", tool="fx_tool", idem="k1")[3:] == ["f1", str(first[4]),
                                                                  50_000, 1, ""]
    first = lua.hold(5_000, "v1", cat="llm", idem="k2")
    assert lua.hold(5_000, "v2", cat="llm", idem="k2")[3:] == ["v1", str(first[4]), 5_000, 0,
                                                                    ""]
    captured = lua.capture(1_000, "v1", idem="c1")
    assert lua.capture(1_000, "v1", idem="c1")[3:] == [captured[3], "4000", 1_000]
    charged = lua.charge(None, tool="fx_tool", idem="k3")
    assert lua.charge(None, tool="fx_tool", idem="k3") == [
        1, str(charged[1]), "0", charged[3], "50000", "tool", ""]


def test_a_hold_keeps_the_pricing_it_was_taken_with(lua: Lua) -> None:
    lua.create(grant=T)
    assert lua.hold(None, "f1", tool="fx_tool")[0] == 0
    assert lua.hold(5_000, "v1", cat="llm")[0] == 0
    lua.r.hset(lua.k().tools, mapping={"fx_tool": "9 50000 tool variable",
                                       "v_llm": "9 5000 llm fixed"})
    assert lua.capture(1, "f1") == [26, 50_000]  # still the fixed price it held
    assert lua.capture(1, "v1")[4:] == [4_999, 1]  # still variable


def test_a_hold_replay_reads_the_first_holds_record(lua: Lua) -> None:
    lua.create(grant=T)
    first = lua.hold(5_000, "v1", cat="llm", idem="k1")
    keys_, args = lua.hold_args(9_999, "v2", cat="llm", idem="k1", ih="hk1")  # same key
    assert lua.run("hold", keys_, args)[3:] == ["v1", str(first[4]), 5_000, 0, ""]
    fixed = lua.hold(None, "f1", tool="fx_tool", idem="k2")
    lua.r.hset(lua.k().tools, "fx_tool", "9 70000 tool variable")  # changed since
    assert lua.hold(None, "f2", tool="fx_tool", idem="k2")[3:] == ["f1", str(fixed[4]),
                                                                  50_000, 1, ""]
    # A hold key that does not end with the hold id is never used to find another record:
    # the answer falls back to what the catalog and the call say.
    keys_, args = lua.hold_args(9_999, "v3", cat="llm", idem="k1", ih="hk1")
    keys_[2] = lua.k().hold("xy")
    assert lua.run("hold", keys_, args)[5:7] == [9_999, 0]
    lua.r.hset(lua.k().tools, "fx2", "1 30000 tool fixed")
    assert lua.hold(None, "f3", tool="fx2", idem="k3")[5:7] == [30_000, 1]
    keys_, args = lua.hold_args(None, "f4", idem="k3", ih="hk3", tool="fx2")
    keys_[2] = lua.k().hold("xy")
    assert lua.run("hold", keys_, args)[5:7] == [30_000, 1]
