"""Script-level tests of tasks (budget envelopes): task_open.lua, task_close.lua and the task
parts of charge.lua, hold.lua, capture.lua, release.lua and expire_holds.lua (lua/_lib.lua's
tasks section), called straight on the real Redis."""

from __future__ import annotations

from typing import Any

import pytest

from tests.script_helpers import AGENT, AMAX, DAY_MS, Lua

NOT_FOUND, BAD = 10, 30
TASK_NOT_FOUND, TASK_CLOSED, TASK_BUDGET, TASK_CALLS, TASK_REQUIRED, IDS_SHORT = range(40, 46)
TTL_MAX_MS = 604_800_000
T1 = "task_" + "1" * 32
T2 = "task_" + "2" * 32


def open_args(task: str = T1, budget: int = 100_000, ttl_ms: int = 60_000, name: str = "",
              *pairs: str, agent: str = AGENT, lua: Lua) -> tuple[list[str], list[str]]:
    k = lua.k(agent)
    return ([k.agent_hash, k.task(task), k.tasks()],
            [agent, task, str(budget), str(AMAX), str(ttl_ms), str(TTL_MAX_MS), name, *pairs])


def open_task(lua: Lua, task: str = T1, budget: int = 100_000, *pairs: str,
              ttl_ms: int = 60_000, agent: str = AGENT) -> list[Any]:
    reply = lua.run("task_open", *open_args(task, budget, ttl_ms, "", *pairs, agent=agent,
                                             lua=lua))
    assert reply[0] == 0, reply
    return reply


def charge(  # noqa: PLR0913 - one argument per script input
        lua: Lua, cost: int | None, task: str = T1, agent: str = AGENT, cat: str = "tool",
        tool: str = "", idem: str = "") -> list[Any]:
    keys, args = lua.charge_args(cost, agent, cat, idem, "h" + idem if idem else "", tool=tool)
    return lua.run("charge", [*keys, lua.k(agent).task(task or "-")], [*args, task])


def hold(  # noqa: PLR0913 - one argument per script input
        lua: Lua, amount: int | None, hold_id: str = "hold1", task: str = T1,
        cat: str = "llm", ttl_ms: int = 60_000, agent: str = AGENT) -> list[Any]:
    keys, args = lua.hold_args(amount, hold_id, agent, cat, ttl_ms)
    return lua.run("hold", [*keys, lua.k(agent).task(task or "-")], [*args, task])


def close_args(lua: Lua, task: str = T1, ids: int = 4, agent: str = AGENT
               ) -> tuple[list[str], list[str]]:
    k = lua.k(agent)
    return ([k.agent_hash, k.task(task), k.window, k.walls, k.holds, k.events],
            [agent, task, *(lua.eid() for _ in range(ids))])


def close(lua: Lua, task: str = T1, ids: int = 4, agent: str = AGENT) -> list[Any]:
    return lua.run("task_close", *close_args(lua, task, ids, agent))


def task(lua: Lua, task_id: str = T1, agent: str = AGENT) -> dict[str, str]:
    return lua.hash(lua.k(agent).task(task_id))


# ---- task_open ------------------------------------------------------------------------------

def test_open_writes_the_task_its_expiry_and_the_index(lua: Lua) -> None:
    lua.create()
    before_ms = lua.now_ms()
    reply = lua.run("task_open", *open_args(T1, 250_000, 90_000, "buy one", "web", "3",
                                             "commerce", "1", lua=lua))
    assert reply[0] == 0
    created, expires = reply[1], reply[2]
    assert before_ms <= created <= lua.now_ms()
    assert expires == created + 90_000
    assert task(lua) == {"budget": "250000", "spent": "0", "held": "0", "calls": "0",
                         "exp": str(expires), "state": "open", "created": str(created),
                         "name": "buy one", "m:web": "3", "m:commerce": "1"}
    ttl_ms = lua.r.pttl(lua.k().task(T1))
    assert 90_000 + DAY_MS - 5_000 < ttl_ms <= 90_000 + DAY_MS
    assert lua.r.zrange(lua.k().tasks(), 0, -1, withscores=True) == [(T1, float(created))]
    index_ttl = lua.r.pttl(lua.k().tasks())
    assert TTL_MAX_MS + DAY_MS - 5_000 < index_ttl <= TTL_MAX_MS + DAY_MS


def test_open_forgets_index_entries_older_than_any_task(lua: Lua) -> None:
    lua.create()
    now = lua.now_ms()
    old, recent = now - TTL_MAX_MS - DAY_MS - 10_000, now - TTL_MAX_MS - DAY_MS + 60_000
    lua.r.zadd(lua.k().tasks(), {"task_old": old, "task_recent": recent})
    open_task(lua)
    assert lua.r.zrange(lua.k().tasks(), 0, -1) == ["task_recent", T1]


@pytest.mark.parametrize("index,value", [
    (3, "0"), (3, "-1"), (3, "1.5"), (3, str(AMAX + 1)), (3, ""), (4, "x"), (5, "0"),
    (5, str(TTL_MAX_MS + 1)), (5, "nan"), (6, "x"), (1, "Bad"), (2, ""), (2, "a b"),
    (2, "t" * 65), (7, "n" * 129), (7, "tab\there")])
def test_open_refuses_bad_arguments(lua: Lua, index: int, value: str) -> None:
    lua.create()
    keys, args = open_args(lua=lua)
    args[index - 1] = value
    before = lua.snapshot()
    assert lua.run("task_open", keys, args) == [BAD, index]
    assert lua.snapshot() == before


@pytest.mark.parametrize("pairs,index", [
    (("web",), 8), (("Web", "1"), 8), (("web", "0"), 9), (("web", "1000000001"), 9),
    (("web", "x"), 9), (("w" * 65, "1"), 8)])
def test_open_refuses_bad_max_calls(lua: Lua, pairs: tuple[str, ...], index: int) -> None:
    lua.create()
    before = lua.snapshot()
    assert lua.run("task_open", *open_args(T1, 100, 60_000, "", *pairs, lua=lua)) == [BAD, index]
    assert lua.snapshot() == before


def test_open_takes_64_max_calls_and_a_long_name(lua: Lua) -> None:
    lua.create()
    pairs = [x for i in range(64) for x in (f"t{i}", "1000000000")]
    keys, args = open_args(T1, 100, 60_000, "n" * 128, *pairs, lua=lua)
    assert lua.run("task_open", keys, args)[0] == 0
    assert task(lua)["m:t63"] == "1000000000"
    too_many = open_args(T2, 100, 60_000, "", *pairs, "t64", "1", lua=lua)
    assert lua.run("task_open", *too_many) == [BAD, 7 + 2 * 65]


def test_open_refuses_unknown_agent_and_a_taken_id(lua: Lua) -> None:
    before = lua.snapshot()
    assert lua.run("task_open", *open_args(lua=lua)) == [NOT_FOUND]
    assert lua.snapshot() == before
    lua.create()
    open_task(lua)
    before = lua.snapshot()
    assert lua.run("task_open", *open_args(T1, 5, lua=lua)) == [BAD, 2]
    assert lua.snapshot() == before


# ---- charges against a task -----------------------------------------------------------------

def test_charge_counts_in_the_task_and_the_ledger_names_it(lua: Lua) -> None:
    lua.create()
    open_task(lua, T1, 100_000)
    assert charge(lua, 30_000, cat="web")[:2] == [0, 970_000]
    assert charge(lua, 20_000, cat="llm")[0] == 0
    assert charge(lua, 5_000, cat="web")[0] == 0
    t = task(lua)
    assert (t["spent"], t["held"], t["calls"]) == ("55000", "0", "3")
    assert (t["st:v_web"], t["st:v_llm"], t["sc:web"], t["sc:llm"]) == (
        "35000", "20000", "35000", "20000")
    assert (t["nt:v_web"], t["nc:web"], t["nt:v_llm"], t["nc:llm"]) == ("2", "2", "1", "1")
    assert lua.events()[-1]["task"] == T1
    assert lua.bal() == 945_000  # the balance pays


def test_charge_without_task_writes_no_task_field(lua: Lua) -> None:
    lua.create()
    assert charge(lua, 1_000, task="")[0] == 0
    assert "task" not in lua.events()[-1]
    assert lua.r.keys("*task*") == []


def test_budget_is_exact(lua: Lua) -> None:
    lua.create()
    open_task(lua, T1, 100_000)
    assert hold(lua, 30_000)[0] == 0
    assert charge(lua, 60_000)[0] == 0
    before = lua.snapshot()
    assert charge(lua, 10_001) == [TASK_BUDGET, 100_000, 90_000]
    assert hold(lua, 10_001, "hold2") == [TASK_BUDGET, 100_000, 90_000]
    assert lua.snapshot() == before
    assert charge(lua, 10_000)[0] == 0  # spent + held + cost == budget fits
    assert charge(lua, 1) == [TASK_BUDGET, 100_000, 100_000]
    assert charge(lua, 0)[0] == 0  # a free call takes nothing of the budget


def test_max_calls_per_tool_and_per_category(lua: Lua) -> None:
    lua.create()
    open_task(lua, T1, 1_000_000, "v_web", "2", "llm", "1")
    assert charge(lua, 1, cat="web")[0] == 0
    assert charge(lua, 0, cat="web")[0] == 0  # free calls count
    before = lua.snapshot()
    assert charge(lua, 1, cat="web") == [TASK_CALLS, "v_web", 2]
    assert lua.snapshot() == before
    assert hold(lua, 10, "hold1", cat="llm")[0] == 0
    assert charge(lua, 1, cat="llm") == [TASK_CALLS, "llm", 1]
    assert hold(lua, 10, "hold2", cat="llm") == [TASK_CALLS, "llm", 1]
    assert charge(lua, 1, cat="tool")[0] == 0  # neither capped


def test_a_name_both_tool_and_category_caps_each(lua: Lua) -> None:
    lua.create()
    lua.r.hset(lua.k().tools, "web", "1 10 web variable")  # tool "web" in category "web"
    open_task(lua, T1, 1_000_000, "web", "1")
    assert charge(lua, 1, tool="web")[0] == 0
    assert charge(lua, 1, tool="web") == [TASK_CALLS, "web", 1]
    assert charge(lua, 1, cat="web") == [TASK_CALLS, "web", 1]  # v_web: category web


def test_unknown_and_other_agents_tasks_are_not_found(lua: Lua) -> None:
    lua.create()
    lua.create("b2")
    open_task(lua, T2, 100_000, agent="b2")
    before = lua.snapshot()
    assert charge(lua, 1, task=T1) == [TASK_NOT_FOUND]
    assert charge(lua, 1, task=T2) == [TASK_NOT_FOUND]  # b2's task: another key
    assert hold(lua, 1, task=T2) == [TASK_NOT_FOUND]
    assert charge(lua, 0, task=T2) == [TASK_NOT_FOUND]
    assert lua.snapshot() == before


@pytest.mark.parametrize("bad", ["a b", "x" * 65, "é"])
def test_bad_task_ids_are_bad_arguments(lua: Lua, bad: str) -> None:
    lua.create()
    before = lua.snapshot()
    assert charge(lua, 1, task=bad) == [BAD, 9]
    assert hold(lua, 1, task=bad) == [BAD, 12]
    assert lua.snapshot() == before


def test_calls_without_the_task_argument_still_work(lua: Lua) -> None:
    """Callers written before tasks pass no ARGV[9] / ARGV[12]: no task."""
    lua.create()
    assert lua.charge(1_000)[0] == 0
    assert lua.hold(1_000)[0] == 0
    assert "task" not in lua.hash(lua.k().hold("hold1"))


def test_closed_task_refuses_every_call(lua: Lua) -> None:
    lua.create()
    open_task(lua)
    assert close(lua) == [0, 0]
    before = lua.snapshot()
    assert charge(lua, 1) == [TASK_CLOSED, "closed"]
    assert charge(lua, 0) == [TASK_CLOSED, "closed"]
    assert hold(lua, 1) == [TASK_CLOSED, "closed"]
    assert lua.snapshot() == before


def test_expired_task_refuses_from_its_expiry(clocked_lua: Lua) -> None:
    lua = clocked_lua
    lua.create()
    _, created, expires = open_task(lua, ttl_ms=60_000)
    lua.shift_to(expires - 1_000)
    assert charge(lua, 1)[0] == 0
    lua.shift_to(expires)
    before = lua.snapshot()
    assert charge(lua, 1) == [TASK_CLOSED, "expired"]
    assert hold(lua, 1) == [TASK_CLOSED, "expired"]
    assert lua.snapshot() == before
    assert created < expires


def test_require_task(lua: Lua) -> None:
    lua.create()
    lua.set_limits("rt", "1")
    assert lua.agent()["rt"] == "1"
    assert lua.events()[-1]["l.rt"] == "1"
    assert "x" not in lua.agent()  # not a wall: no walls reads
    before = lua.snapshot()
    assert charge(lua, 1, task="") == [TASK_REQUIRED]
    assert hold(lua, 1, task="") == [TASK_REQUIRED]
    assert lua.snapshot() == before
    assert charge(lua, 0, task="")[0] == 0  # free calls need no task
    open_task(lua)
    assert charge(lua, 1)[0] == 0
    assert hold(lua, 1)[0] == 0
    lua.set_limits("rt", "")
    assert "rt" not in lua.agent()
    assert charge(lua, 1, task="")[0] == 0


@pytest.mark.parametrize("value", ["0", "true", "2", " 1"])
def test_require_task_takes_only_1(lua: Lua, value: str) -> None:
    lua.create()
    before = lua.snapshot()
    assert lua.run("set_limits", *lua.limits_args("rt", value)) == [BAD, 5]
    assert lua.snapshot() == before


def test_task_checks_come_after_the_balance_walls_and_before_the_balance(lua: Lua) -> None:
    lua.create(grant=50_000)
    open_task(lua, T1, 100_000)
    lua.set_limits("pc", "40000")
    assert charge(lua, 45_000)[0] == 13  # per-call first
    lua.set_limits("pc", "")
    assert charge(lua, 60_000)[0] == 17  # fits the task, not the balance
    assert charge(lua, 100_001)[0] == TASK_BUDGET


def test_replay_of_a_task_charge_counts_once(lua: Lua) -> None:
    lua.create()
    open_task(lua, T1, 100_000)
    first = charge(lua, 40_000, idem="k1")
    again = charge(lua, 40_000, idem="k1")
    assert again[0] == 1 and again[3] == first[3]
    assert task(lua)["spent"] == "40000"
    assert task(lua)["calls"] == "1"


# ---- holds under a task ---------------------------------------------------------------------

def test_hold_counts_held_and_records_itself(lua: Lua) -> None:
    lua.create()
    open_task(lua, T1, 100_000)
    assert hold(lua, 70_000, "hold1")[0] == 0
    t = task(lua)
    assert (t["held"], t["spent"], t["calls"], t["o:hold1"]) == ("70000", "0", "1", "70000")
    assert (t["nt:v_llm"], t["nc:llm"]) == ("1", "1")
    assert lua.hash(lua.k().hold("hold1"))["task"] == T1
    assert lua.events()[-1]["task"] == T1


def test_capture_moves_held_to_spent(lua: Lua) -> None:
    lua.create()
    open_task(lua, T1, 100_000)
    assert hold(lua, 70_000, "hold1")[0] == 0
    assert lua.capture(25_000, "hold1")[0] == 0
    t = task(lua)
    assert (t["held"], t["spent"], t["calls"]) == ("0", "25000", "1")
    assert (t["st:v_llm"], t["sc:llm"]) == ("25000", "25000")
    assert "o:hold1" not in t
    assert lua.events()[-1]["kind"] == "capture"
    assert lua.events()[-1]["task"] == T1
    assert charge(lua, 75_000)[0] == 0
    assert charge(lua, 1)[0] == TASK_BUDGET


def test_capture_of_zero_spends_nothing(lua: Lua) -> None:
    lua.create()
    open_task(lua, T1, 100_000)
    assert hold(lua, 70_000, "hold1")[0] == 0
    assert lua.capture(0, "hold1")[0] == 0
    t = task(lua)
    assert (t["held"], t["spent"]) == ("0", "0")
    assert "st:v_llm" not in t


def test_release_and_expiry_give_the_budget_back(clocked_lua: Lua) -> None:
    lua = clocked_lua
    lua.create()
    open_task(lua, T1, 100_000, ttl_ms=600_000)
    assert hold(lua, 60_000, "hold1")[0] == 0
    assert hold(lua, 40_000, "hold2", ttl_ms=1_000)[0] == 0
    assert charge(lua, 1)[0] == TASK_BUDGET
    assert lua.release("hold1")[0] == 0
    assert lua.events()[-1]["task"] == T1
    assert task(lua)["held"] == "40000"
    lua.shift_to(lua.now_ms() + 2_000)
    assert lua.expire()[:2] == [0, 1]
    assert lua.events()[-1]["kind"] == "expire"
    assert lua.events()[-1]["task"] == T1
    t = task(lua)
    assert (t["held"], t["spent"]) == ("0", "0")
    assert not any(f.startswith("o:") for f in t)
    assert charge(lua, 100_000)[0] == 0


def test_hold_of_a_gone_task_closes_alone(lua: Lua) -> None:
    lua.create()
    open_task(lua, T1, 100_000)
    assert hold(lua, 10_000, "hold1")[0] == 0
    lua.r.delete(lua.k().task(T1))  # the task's hash expired (kept a day past the task)
    assert lua.capture(5_000, "hold1")[0] == 0
    assert not lua.r.exists(lua.k().task(T1))


def test_capture_after_the_task_expired_still_counts(clocked_lua: Lua) -> None:
    lua = clocked_lua
    lua.create()
    _, _, expires = open_task(lua, T1, 100_000, ttl_ms=5_000)
    assert hold(lua, 10_000, "hold1", ttl_ms=60_000)[0] == 0
    lua.shift_to(expires + 1_000)
    assert lua.capture(7_000, "hold1")[0] == 0
    assert (task(lua)["spent"], task(lua)["held"]) == ("7000", "0")


# ---- task_close -----------------------------------------------------------------------------

def test_close_releases_open_holds_and_marks_closed(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    open_task(lua, T1, 500_000)
    assert charge(lua, 50_000)[0] == 0
    assert hold(lua, 100_000, "hold1")[0] == 0
    assert hold(lua, 20_000, "hold2", cat="web")[0] == 0
    assert hold(lua, 30_000, "hold3")[0] == 0
    assert lua.capture(10_000, "hold3")[0] == 0
    assert lua.hold(5_000, "plain")[0] == 0  # not under the task: stays open
    assert lua.bal() == 1_000_000 - 50_000 - 100_000 - 20_000 - 10_000 - 5_000
    assert close(lua, ids=2) == [0, 2]
    assert lua.bal() == 1_000_000 - 50_000 - 10_000 - 5_000
    assert lua.agent()["held"] == "5000"
    t = task(lua)
    assert (t["state"], t["held"], t["spent"], t["calls"]) == ("closed", "0", "60000", "4")
    assert abs(int(t["closed"]) - lua.now_ms()) < 5_000
    assert not any(f.startswith("o:") for f in t)
    assert 0 < lua.r.pttl(lua.k().task(T1)) <= DAY_MS
    releases = [e for e in lua.events() if e["kind"] == "release"]
    assert sorted((e["hold_id"], e["amount"], e["task"]) for e in releases) == [
        ("hold1", "100000", T1), ("hold2", "20000", T1)]
    assert {e["id"] for e in releases} <= {f"e{n:04d}" for n in range(1, lua.n + 1)}
    assert lua.hash(lua.k().hold("hold1"))["state"] == "released"
    assert lua.hash(lua.k().hold("plain"))["state"] == "open"
    assert lua.r.zrange(lua.k().holds, 0, -1) == ["plain"]
    assert lua.window()["h"] == "5000"
    assert lua.capture(1, "hold1")[:2] == [19, "released"]


def test_close_gives_the_walls_back_what_its_holds_held(lua: Lua) -> None:
    """A hold under a task counts in the rolling hour while open; closing the task releases
    it, and the hour's cap has the room again (the walls hash, not another key, is given
    back)."""
    lua.create(grant=1_000_000)
    lua.set_limits("hr", "100000")
    open_task(lua, T1, 500_000)
    assert hold(lua, 80_000, "hold1")[0] == 0
    assert lua.charge(30_000)[0] != 0  # 80,000 held + 30,000 > the hour's 100,000
    assert close(lua, ids=1) == [0, 1]
    assert lua.charge(100_000)[0] == 0
    assert lua.charge(1)[0] != 0


def test_close_needs_an_entry_id_per_open_hold(lua: Lua) -> None:
    lua.create()
    open_task(lua, T1, 500_000)
    for n in range(3):
        assert hold(lua, 1_000, f"hold{n}")[0] == 0
    before = lua.snapshot()
    assert close(lua, ids=2) == [IDS_SHORT, 3]
    assert close(lua, ids=0) == [IDS_SHORT, 3]
    assert lua.snapshot() == before
    assert close(lua, ids=3) == [0, 3]


def test_close_is_idempotent_and_unknown_is_not_found(lua: Lua) -> None:
    lua.create()
    lua.create("b2")
    open_task(lua, T2, 100, agent="b2")
    before = lua.snapshot()
    assert close(lua, T1) == [TASK_NOT_FOUND]
    assert close(lua, T2) == [TASK_NOT_FOUND]  # b2's task, closed as a1's: another key
    assert lua.snapshot() == before
    open_task(lua)
    assert close(lua) == [0, 0]
    before = lua.snapshot()
    assert close(lua) == [0, 0]
    assert lua.snapshot() == before


@pytest.mark.parametrize("index,value", [(1, "Bad"), (2, "a b"), (2, "t" * 65), (3, ""),
                                         (4, "x y"), (4, "e" * 65)])
def test_close_refuses_bad_arguments(lua: Lua, index: int, value: str) -> None:
    lua.create()
    open_task(lua)
    keys, args = close_args(lua, ids=2)
    args[index - 1] = value
    before = lua.snapshot()
    assert lua.run("task_close", keys, args) == [BAD, index]
    assert lua.snapshot() == before


def test_close_skips_a_hold_no_longer_open(lua: Lua) -> None:
    """A hold recorded open in the task but closed in its own hash (never by the scripts:
    hold_close always leaves the task) is dropped from the task, not released twice."""
    lua.create()
    open_task(lua)
    assert hold(lua, 1_000, "hold1")[0] == 0
    lua.r.hset(lua.k().hold("hold1"), "state", "captured")
    bal = lua.bal()
    assert close(lua) == [0, 0]
    assert lua.bal() == bal
    assert "o:hold1" not in task(lua)


def test_close_releases_an_expired_task_and_low_balance_rearms(clocked_lua: Lua) -> None:
    lua = clocked_lua
    lua.create(grant=100_000, low=50_000)
    _, _, expires = open_task(lua, T1, 100_000, ttl_ms=5_000)
    assert hold(lua, 60_000, "hold1", ttl_ms=60_000)[0] == 0
    assert lua.agent()["lowf"] == "1"
    lua.shift_to(expires + 1)
    assert close(lua) == [0, 1]
    assert lua.agent()["lowf"] == "0"
    assert lua.bal() == 100_000


# ---- refunds give back to the task -----------------------------------------------------------

def refund_task(lua: Lua, cost: int, amount: int, task_id: str, cat: str = "tool",
                charge_id: str = "c1") -> list[Any]:
    from tests.test_script_refund import refund_args

    return lua.run("refund", *refund_args(lua, cost, amount, charge_id=charge_id, cat=cat,
                                          task=task_id))


def test_refund_gives_back_to_an_open_task(lua: Lua) -> None:
    lua.create()
    open_task(lua, T1, 100_000)
    assert charge(lua, 60_000, cat="web")[0] == 0
    assert charge(lua, 40_000, cat="web")[0] == 0
    assert charge(lua, 1, cat="web")[0] == TASK_BUDGET
    assert refund_task(lua, 60_000, 25_000, T1, cat="web")[0] == 0
    t = task(lua)
    assert (t["spent"], t["st:v_web"], t["sc:web"], t["calls"]) == ("75000", "75000", "75000",
                                                                     "2")
    assert lua.events()[-1]["task"] == T1
    assert charge(lua, 25_000, cat="web")[0] == 0
    assert charge(lua, 1, cat="web")[0] == TASK_BUDGET


def test_refund_of_a_closed_task_leaves_its_summary(lua: Lua) -> None:
    lua.create()
    open_task(lua, T1, 100_000)
    assert charge(lua, 60_000)[0] == 0
    assert close(lua) == [0, 0]
    before = task(lua)
    assert refund_task(lua, 60_000, 60_000, T1)[0] == 0
    assert task(lua) == before
    assert lua.events()[-1]["task"] == T1


def test_refund_without_task_or_of_a_gone_task(lua: Lua) -> None:
    lua.create()
    assert charge(lua, 60_000, task="")[0] == 0
    assert refund_task(lua, 60_000, 10_000, "")[0] == 0
    assert "task" not in lua.events()[-1]
    assert refund_task(lua, 60_000, 10_000, T2, charge_id="c2")[0] == 0  # expired: gone
    assert not lua.r.exists(lua.k().task(T2))
    assert lua.run("refund", *_bad_task_refund(lua)) == [BAD, 15]


def _bad_task_refund(lua: Lua) -> tuple[list[str], list[str]]:
    from tests.test_script_refund import refund_args

    return refund_args(lua, 60_000, 1, charge_id="c3", task="a b")


def test_tool_and_category_counters_are_apart(lua: Lua) -> None:
    """A tool's max_calls counts that tool's calls only, not its category's."""
    lua.create()
    open_task(lua, T1, 1_000_000, "fx_tool", "1", "tool", "3")
    assert charge(lua, 10, cat="tool")[0] == 0  # v_tool, category tool
    assert charge(lua, 10, cat="tool")[0] == 0
    assert charge(lua, None, tool="fx_tool")[0] == 0  # fx_tool's first call
    assert charge(lua, 10, cat="tool") == [TASK_CALLS, "tool", 3]
    assert charge(lua, None, tool="fx_tool") == [TASK_CALLS, "fx_tool", 1]
    t = task(lua)
    assert (t["nt:v_tool"], t["nt:fx_tool"], t["nc:tool"]) == ("2", "1", "3")
    assert (t["st:v_tool"], t["st:fx_tool"], t["sc:tool"]) == ("20", "50000", "50020")


def test_one_micro_counts_everywhere(lua: Lua) -> None:
    lua.create()
    open_task(lua, T1, 100)
    assert charge(lua, 1)[0] == 0
    assert hold(lua, 1, "hold1")[0] == 0
    assert hold(lua, 2, "hold2")[0] == 0
    t = task(lua)
    assert (t["spent"], t["st:v_tool"], t["sc:tool"], t["held"], t["o:hold1"]) == (
        "1", "1", "1", "3", "1")
    assert lua.capture(1, "hold2")[0] == 0
    t = task(lua)
    assert (t["spent"], t["st:v_llm"], t["sc:llm"], t["held"]) == ("2", "1", "1", "1")
    assert "o:hold2" not in t
