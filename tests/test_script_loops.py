"""Script-level tests of the loop breaker (lua/_lib.lua loop_*, in charge.lua and hold.lua):
the same tool with the same arguments (one loop list per digest) more than `repeats` times
within `window_s` is refused, with action freeze the agent is also frozen."""

from __future__ import annotations

from typing import Any

import pytest

from tests.script_helpers import Lua

LOOP = 50
FROZEN = 11
BALANCE = 17
PER_CALL = 13
T0 = 1_795_000_000_000  # a fixed time for the clocked tests (ms)


def looping(lua: Lua, setting: str, *pairs: str, grant: int = 100_000_000) -> None:
    lua.create(grant=grant)
    lua.set_limits("lp", setting, *pairs)


def charge(lua: Lua, cost: int | None = 1000, loop: str = "d1", tool: str = "",
           idem: str = "") -> list[Any]:
    return lua.run("charge", *lua.charge_args(cost, tool=tool, loop=loop, idem=idem,
                                              ih="h" + idem if idem else ""))


def hold(lua: Lua, hold_id: str, loop: str = "d1") -> list[Any]:
    return lua.run("hold", *lua.hold_args(5000, hold_id, loop=loop))


def loop_times(lua: Lua, loop: str = "d1") -> list[int]:
    return [int(t) for t in lua.r.lrange(lua.k().loop(loop), 0, -1)]


# ---- the setting ------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["5/60/r", "1/1/f", "1000/86400/r", "07/60/f"])
def test_set_limits_takes_loop_settings(lua: Lua, value: str) -> None:
    lua.create()
    lua.set_limits("lp", value)
    assert lua.agent()["lp"] == value
    assert lua.events()[-1]["l.lp"] == value
    assert "x" not in lua.agent()  # the loop is read through its own field, not the walls
    lua.set_limits("lp", "")
    assert "lp" not in lua.agent()
    assert "l.lp" not in lua.events()[-1]


@pytest.mark.parametrize("value", [
    "0/60/r", "5/0/r", "1001/60/r", "5/86401/r", "5/60/x", "5/60", " 5/60/r", "5//60/r",
    "5/60/r ", "5/60/rf", "-1/60/r", "5/6e1/r", "5/60/R", "nan/60/r", "1.5/60/r",
    "10000000000000000/60/r", "5 60 r"])
def test_set_limits_refuses_bad_loop_settings(lua: Lua, value: str) -> None:
    lua.create()
    before = lua.snapshot()
    assert lua.run("set_limits", *lua.limits_args("lp", value)) == [30, 5]
    assert lua.snapshot() == before


# ---- without a loop setting --------------------------------------------------------------------

def test_no_loop_setting_never_touches_the_loop_key(lua: Lua) -> None:
    """The loop list is never read nor written for an agent without 'lp': a key of the wrong
    type in its place would fail any list command."""
    lua.create()
    lua.r.set(lua.k().loop("d1"), "not a list")
    for _ in range(4):
        assert charge(lua)[0] == 0
        assert charge(lua, None, tool="free")[0] == 0
    assert hold(lua, "hold1")[0] == 0
    assert lua.r.get(lua.k().loop("d1")) == "not a list"


def test_a_bad_stored_setting_is_no_loop(lua: Lua) -> None:
    """A field set_limits.lua would never write reads as no loop setting (not an error)."""
    lua.create()
    for bad in ("0/60/r", "5/0/r", "5/60/q", "1001/60/r", "5/86401/f", "5 60 r"):
        lua.r.hset(lua.k().agent_hash, "lp", bad)
        for _ in range(3):
            assert charge(lua)[0] == 0, bad
    assert not lua.r.exists(lua.k().loop("d1"))


# ---- refuse ---------------------------------------------------------------------------------

def test_repeats_then_refused_and_nothing_written(clocked_lua: Lua) -> None:
    lua = clocked_lua
    looping(lua, "3/60/r")
    lua.shift_to(T0)
    for i in range(3):
        assert charge(lua)[0] == 0, i
    bal = lua.bal()
    before = lua.snapshot()
    reply = charge(lua)
    assert reply[0] == LOOP
    assert reply[1:5] == ["v_tool", 3, 60, 60]
    assert reply[5] == 0
    assert lua.snapshot() == before
    assert lua.bal() == bal
    assert len(loop_times(lua)) == 3


def test_other_arguments_and_tools_have_their_own_lists(lua: Lua) -> None:
    looping(lua, "2/60/r")
    assert [charge(lua, loop="a")[0] for _ in range(3)] == [0, 0, LOOP]
    assert [charge(lua, loop="b")[0] for _ in range(3)] == [0, 0, LOOP]
    assert [charge(lua, loop="c", tool="v_llm")[0] for _ in range(2)] == [0, 0]
    assert loop_times(lua, "a") == loop_times(lua, "a")[:2]


def test_window_slides_and_retry_after_is_exact(clocked_lua: Lua) -> None:
    """The clock runs on after shift_to (a few ms until the script reads it), so each step
    is placed half a second from a boundary, relative to the times the script stored."""
    lua = clocked_lua
    looping(lua, "3/60/r")
    for offset_ms in (0, 10_000, 20_000):
        lua.shift_to(T0 + offset_ms)
        assert charge(lua)[0] == 0
    newest, middle, oldest = loop_times(lua)
    assert oldest - T0 < 500 and abs(newest - middle - 10_000) < 500
    lua.shift_to(oldest + 30_500)
    assert charge(lua)[1:5] == ["v_tool", 3, 60, 30]  # the oldest leaves in 29.5 s
    lua.shift_to(oldest + 59_500)
    assert charge(lua)[:5] == [LOOP, "v_tool", 3, 60, 1]
    lua.shift_to(oldest + 60_000)  # the oldest has left the window (now - 60 s, now]
    assert charge(lua)[0] == 0
    assert loop_times(lua)[1:] == [newest, middle]
    lua.shift_to(middle + 51_500)
    assert charge(lua)[:5] == [LOOP, "v_tool", 3, 60, 9]  # the middle leaves at +60 s
    lua.shift_to(middle + 59_500)
    assert charge(lua)[4] == 1
    lua.shift_to(middle + 60_000)
    assert charge(lua)[0] == 0


def test_list_keeps_repeats_and_expires_with_the_window(clocked_lua: Lua) -> None:
    lua = clocked_lua
    looping(lua, "2/90/r")
    for i in range(6):
        lua.shift_to(T0 + i * 100_000)
        assert charge(lua)[0] == 0
        assert len(loop_times(lua)) == min(i + 1, 2)
        assert 89_000 < lua.r.pttl(lua.k().loop("d1")) <= 90_000


def test_one_repeat_refuses_the_second_call(lua: Lua) -> None:
    looping(lua, "1/3600/r")
    assert charge(lua)[0] == 0
    reply = charge(lua)
    assert reply[0] == LOOP and 3599 <= reply[4] <= 3600


def test_lowering_repeats_applies_to_the_kept_times(lua: Lua) -> None:
    looping(lua, "5/60/r")
    for _ in range(4):
        assert charge(lua)[0] == 0
    lua.set_limits("lp", "2/60/r")
    assert charge(lua)[0] == LOOP
    lua.set_limits("lp", "")
    assert charge(lua)[0] == 0  # no setting: no check, and the list is left alone
    assert len(loop_times(lua)) == 4


def test_free_calls_count(lua: Lua) -> None:
    looping(lua, "2/60/r")
    assert [charge(lua, None, tool="free")[0] for _ in range(3)] == [0, 0, LOOP]


def test_replays_neither_count_nor_are_refused(lua: Lua) -> None:
    looping(lua, "1/60/r")
    first = charge(lua, idem="k1")
    assert first[0] == 0
    again = charge(lua, idem="k1")
    assert again[0] == 1 and again[3] == first[3]
    assert len(loop_times(lua)) == 1
    assert charge(lua, idem="k2")[0] == LOOP


def test_calls_refused_by_other_walls_do_not_count(lua: Lua) -> None:
    looping(lua, "3/60/r", "pc", "5000", grant=10_000)
    assert charge(lua, 6000)[0] == PER_CALL
    assert not lua.r.exists(lua.k().loop("d1"))
    assert charge(lua, 4000)[0] == 0
    assert charge(lua, 4000)[0] == 0
    assert charge(lua, 4000)[0] == BALANCE
    assert len(loop_times(lua)) == 2
    assert charge(lua, 1000)[0] == 0
    assert charge(lua, 1000)[0] == LOOP
    assert charge(lua, 9000)[0] == LOOP  # the loop is checked before the other walls
    assert charge(lua, 5000)[0] == LOOP


def test_frozen_comes_before_the_loop(lua: Lua) -> None:
    looping(lua, "1/60/r")
    assert charge(lua)[0] == 0
    lua.r.hset(lua.k().agent_hash, "frozen", "1")
    assert charge(lua)[0] == FROZEN
    assert hold(lua, "hold2")[0] == FROZEN
    # free calls pass a freeze, not a loop
    assert charge(lua, None, tool="free", loop="f")[0] == 0
    assert charge(lua, None, tool="free", loop="f")[0] == LOOP


# ---- holds ----------------------------------------------------------------------------------

def test_holds_meet_the_loop(clocked_lua: Lua) -> None:
    lua = clocked_lua
    looping(lua, "2/30/r")
    lua.shift_to(T0)
    assert hold(lua, "hold1")[0] == 0
    lua.shift_to(T0 + 5_000)
    assert hold(lua, "hold2")[0] == 0
    before = lua.snapshot()
    lua.shift_to(T0 + 6_500)  # half a second from a boundary: the clock runs on a few ms
    reply = hold(lua, "hold3")
    assert reply[0] == LOOP
    assert reply[1:6] == ["v_llm", 2, 30, 24, 0]
    assert lua.snapshot() == before
    assert hold(lua, "hold4", loop="other")[0] == 0
    lua.shift_to(T0 + 30_500)
    assert hold(lua, "hold5")[0] == 0


def test_charges_and_holds_share_a_list(lua: Lua) -> None:
    """The digest names the tool and arguments; charge and hold of the same count together."""
    looping(lua, "2/60/r")
    assert charge(lua, tool="v_llm")[0] == 0
    assert hold(lua, "hold1")[0] == 0
    assert charge(lua, tool="v_llm")[0] == LOOP


# ---- freeze ---------------------------------------------------------------------------------

def test_freeze_action_freezes_in_the_same_script(lua: Lua) -> None:
    looping(lua, "2/60/f", "wh", "http://127.0.0.1:9/hook")
    assert charge(lua)[0] == 0
    assert charge(lua)[0] == 0
    bal = lua.bal()
    args = lua.charge_args(1000, loop="d1")
    entry_id = args[1][1]
    reply = lua.run("charge", *args)
    assert reply[0] == LOOP and reply[5] == 1
    assert lua.agent()["frozen"] == "1"
    assert lua.bal() == bal
    event = lua.events()[-1]
    assert event == {"id": entry_id, "at": event["at"], "kind": "freeze", "agent": "a1",
                     "tool": "v_tool", "reason": "loop_detected", "repeats": "2",
                     "window_s": "60"}
    hooks = lua.events(lua.k().webhooks)
    assert hooks == [{"event_id": entry_id + ":agent.loop_detected",
                      "event": "agent.loop_detected", "agent": "a1", "balance": str(bal),
                      "at": event["at"], "tool": "v_tool", "repeats": "2", "window_s": "60",
                      "url": "http://127.0.0.1:9/hook"}]
    assert len(loop_times(lua)) == 2
    # Frozen: paid calls are refused as frozen; a looping free call is refused again without
    # a second freeze.
    assert charge(lua)[0] == FROZEN
    events = len(lua.events())
    assert charge(lua, None, tool="free", loop="f")[0] == 0
    assert charge(lua, None, tool="free", loop="f")[0] == 0
    reply = charge(lua, None, tool="free", loop="f")
    assert reply[0] == LOOP and reply[5] == 1
    assert len(lua.events()) == events + 2
    assert len(lua.events(lua.k().webhooks)) == 1


def test_hold_freeze_queues_the_webhook(lua: Lua) -> None:
    looping(lua, "1/60/f", "wh", "http://127.0.0.1:9/hook")
    assert hold(lua, "hold1")[0] == 0
    args = lua.hold_args(5000, "hold2", loop="d1")
    reply = lua.run("hold", *args)
    assert reply[0] == LOOP and reply[5] == 1
    hooks = lua.events(lua.k().webhooks)
    assert [(h["event"], h["event_id"], h["tool"]) for h in hooks] == [
        ("agent.loop_detected", args[1][1] + ":agent.loop_detected", "v_llm")]
    assert lua.events()[-1]["kind"] == "freeze"


def test_freeze_without_webhook_queues_none(lua: Lua) -> None:
    looping(lua, "1/60/f")
    assert hold(lua, "hold1")[0] == 0
    reply = hold(lua, "hold2")
    assert reply[0] == LOOP and reply[5] == 1
    assert lua.agent()["frozen"] == "1"
    assert lua.events()[-1]["kind"] == "freeze"
    assert not lua.r.exists(lua.k().webhooks)
    assert not lua.r.exists(lua.k().hold("hold2"))


def test_refuse_action_never_freezes(lua: Lua) -> None:
    looping(lua, "1/60/r", "wh", "http://127.0.0.1:9/hook")
    assert charge(lua)[0] == 0
    for _ in range(3):
        assert charge(lua)[0] == LOOP
    assert lua.agent().get("frozen", "0") == "0"
    assert lua.events()[-1]["kind"] == "charge"
    assert not lua.r.exists(lua.k().webhooks)


# ---- mutants ----------------------------------------------------------------------------------

def test_a_frozen_agent_is_refused_from_the_first_micro(lua: Lua) -> None:
    looping(lua, "5/60/r")
    lua.r.hset(lua.k().agent_hash, "frozen", "1")
    assert charge(lua, 1)[0] == FROZEN
    assert charge(lua, 0, tool="v_tool")[0] == 0  # a zero cost is no paid call


def test_retry_is_exact_at_whole_seconds(clocked_lua: Lua) -> None:
    """Retry-After is the time left rounded up to a whole second: exactly n s when n s are
    left. The clock runs on a little between shift_to and the call; a later call only leaves
    less than a whole second, which rounds up to the same answer."""
    lua = clocked_lua
    looping(lua, "1/60/r")
    lua.shift_to(T0)
    assert charge(lua)[0] == 0
    (stamp,) = loop_times(lua)
    for n in range(1, 31):
        lua.shift_to(stamp + n * 1000)
        assert charge(lua)[:5] == [LOOP, "v_tool", 1, 60, 60 - n], n
