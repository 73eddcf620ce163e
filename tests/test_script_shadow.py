"""Script-level proofs of shadow limits (lua/_lib.lua shadow_*): a shadow limit fires on
exactly the call the same limit enforced would refuse, with that refusal's `limit` name, and
never changes an answer, a balance or a counter."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.script_helpers import Lua
from tests.walls_helpers import records

LIMIT_NAMES = {13: "per_call", 14: "category_per_call", 15: "daily", 16: "category_daily",
               33: "tool_per_call", 44: "task_required"}
# The shadow name sits last in an OK reply: charge {0, bal, flags, id, cost, cat, shadow},
# hold {0, bal, flags, hold_id, expires, amount, fixed, shadow}.


def at(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> int:
    return int(dt.datetime(y, m, d, hh, mm, ss, tzinfo=dt.UTC).timestamp() * 1000)


def refused_limit(reply: list[Any]) -> str | None:
    """The `limit` name of an enforced refusal (None for a success)."""
    if reply[0] == 0:
        return None
    if reply[0] in (31, 32):
        return str(reply[1])
    return LIMIT_NAMES[reply[0]]


def shadowed(*pairs: str) -> tuple[str, ...]:
    """The same limits as shadow fields."""
    return tuple(("s." + v) if i % 2 == 0 else v for i, v in enumerate(pairs))


class Op:
    """One call on one agent: a charge of `cost` (None: the fixed-price tool) or a hold."""

    def __init__(self, lua: Lua, kind: str) -> None:
        self.lua, self.kind, self.n = lua, kind, 0

    def __call__(self, agent: str, cost: int | None, cat: str = "tool", tool: str = ""
                 ) -> list[Any]:
        if self.kind == "charge":
            return self.lua.charge(cost, agent=agent, cat=cat, tool=tool)
        self.n += 1
        return self.lua.hold(cost, hold_id=f"h{self.n}", agent=agent, cat=cat, tool=tool)


CASES = [  # (limits, costs of successive calls on v_tool (None: fixed-price fx_tool))
    (("pc", "100"), [50, 100, 150]),
    (("c:tool:pc", "100"), [100, 101]),
    (("dl", "250"), [100, 100, 100]),
    (("c:tool:dl", "250"), [200, 50, 1]),
    (("hr", "250"), [100, 100, 100]),
    (("wk", "250"), [250, 1]),
    (("mo", "250"), [249, 2]),
    (("c:tool:hr", "250"), [100, 151]),
    (("c:tool:wk", "250"), [100, 151]),
    (("c:tool:mo", "250"), [100, 151]),
    (("t:v_tool:pc", "100"), [100, 101]),
    (("nm", "2"), [1, 1, 1]),
    (("nh", "2"), [1, 1, 1]),
    (("nd", "1"), [1, 1]),
    (("c:tool:nd", "2"), [1, 1, 1]),
    (("t:v_tool:nh", "2"), [1, 1, 1]),
    (("rt", "1"), [1]),
    (("pc", "100", "nd", "2", "dl", "1000"), [50, 50, 50]),
    (("pc", "100", "nd", "5", "dl", "120"), [50, 50, 50]),
]


@pytest.mark.parametrize("kind", ["charge", "hold"])
@pytest.mark.parametrize("limits,costs", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_shadow_limit_fires_on_the_call_the_enforced_one_refuses(
        clocked_lua: Lua, kind: str, limits: tuple[str, ...], costs: list[int]) -> None:
    lua = clocked_lua
    lua.shift_to(at(2026, 11, 30, 12, 0, 1))  # a Monday, well inside its minute, hour, day
    for agent in ("en", "sh", "no"):
        lua.create(agent, grant=10_000_000)
    lua.set_limits(*limits, agent="en")
    lua.set_limits(*shadowed(*limits), agent="sh")
    op = Op(lua, kind)
    fired = []
    for cost in costs:
        enforced = op("en", cost)
        seen, plain = op("sh", cost), op("no", cost)
        assert seen[0] == plain[0] == 0, (seen, plain)
        assert seen[1:-1] != [] and _same(seen, plain, kind)
        expected = refused_limit(enforced)
        fired.append(seen[-1] or None)
        assert fired[-1] == expected, (limits, cost, enforced, seen)
        if expected is not None:
            break
    assert fired[-1] is not None, "the enforced limit never refused: the case proves nothing"
    assert lua.bal("sh") == lua.bal("no")
    assert lua.window("sh") == lua.window("no")


def _same(seen: list[Any], plain: list[Any], kind: str) -> bool:
    """The replies of two agents' calls agree but for ids and the shadow name."""
    if kind == "charge":  # {0, bal, flags, entry_id, cost, category, shadow}
        return seen[1:3] == plain[1:3] and seen[4:6] == plain[4:6] and plain[6] == ""
    # {0, bal, flags, hold_id, expires_at, amount, fixed, shadow}
    return seen[1:3] == plain[1:3] and seen[5:7] == plain[5:7] and plain[7] == ""


def test_shadow_sums_and_event(lua: Lua) -> None:
    lua.create(grant=10_000_000)
    lua.set_limits("s.pc", "100")
    assert lua.charge(150)[-1] == "per_call"
    assert lua.charge(50)[-1] == ""
    assert lua.hold(300, hold_id="h1", cat="tool")[-1] == "per_call"
    a = lua.agent()
    assert (a["sn:per_call"], a["sa:per_call"]) == ("2", "450")
    events = [e for e in lua.events() if e["kind"] in ("charge", "hold")]
    assert [e.get("shadow") for e in events] == ["per_call", None, "per_call"]


def test_a_free_call_adds_a_count_and_no_amount(lua: Lua) -> None:
    lua.create()
    lua.set_limits("s.nd", "1")
    assert lua.charge(None, tool="free")[-1] == ""
    assert lua.charge(None, tool="free")[-1] == "calls_per_day"
    a = lua.agent()
    assert a["sn:calls_per_day"] == "1" and "sa:calls_per_day" not in a


def test_an_enforced_refusal_stays_and_writes_nothing(lua: Lua) -> None:
    lua.create(grant=10_000_000)
    lua.set_limits("pc", "100", "s.pc", "10", "s.dl", "5")
    before = lua.snapshot()
    assert lua.charge(150)[:3] == [13, 100, 150]
    assert lua.hold(150, cat="tool")[:3] == [13, 100, 150]
    assert lua.snapshot() == before


def test_balance_refusal_stays_with_shadow(lua: Lua) -> None:
    lua.create(grant=100)
    lua.set_limits("s.pc", "10")
    before = lua.snapshot()
    assert lua.charge(150) == [17, 100, 150]
    assert lua.snapshot() == before


def test_a_replay_is_no_new_shadow_refusal(lua: Lua) -> None:
    lua.create(grant=10_000_000)
    lua.set_limits("s.pc", "10")
    first = lua.charge(150, idem="k1")
    again = lua.charge(150, idem="k1")
    assert first[0] == 0 and first[-1] == "per_call"
    assert again[0] == 1 and [str(v) for v in again[1:6]] == [str(v) for v in first[1:6]]
    assert again[-1] == ""
    assert lua.agent()["sn:per_call"] == "1"


def test_set_limits_keeps_the_shadow_flag_and_the_walls_flag(lua: Lua) -> None:
    lua.create()
    lua.set_limits("s.pc", "5")
    assert lua.agent()["sx"] == "1" and "x" not in lua.agent()
    assert lua.events()[-1]["l.s.pc"] == "5"
    lua.set_limits("s.nd", "5")
    assert lua.agent()["x"] == "1"  # a shadow call cap needs its counters kept
    lua.set_limits("s.pc", "", "s.nd", "")
    assert "sx" not in lua.agent() and "x" not in lua.agent()
    lua.set_limits("s.rt", "1")
    assert lua.agent()["sx"] == "1"


def test_a_shadow_category_call_cap_a_minute_fires(clocked_lua: Lua) -> None:
    lua = clocked_lua
    lua.shift_to((lua.now_ms() // 60_000 + 1) * 60_000 + 10_000)  # both calls in one minute
    lua.create()
    lua.set_limits("s.c:tool:nm", "1", "s.c:tool:nh", "5")
    assert lua.charge(1)[-1] == ""
    assert lua.charge(1)[-1] == "calls_per_minute"


def test_a_shadow_wall_keeps_its_counters_without_an_enforced_one(lua: Lua) -> None:
    lua.create()
    lua.set_limits("s.t:v_tool:nd", "1")
    assert lua.charge(1)[-1] == ""
    assert lua.charge(1)[-1] == "calls_per_day"
    assert records(lua)["/v_tool"]["D"] == 2


@pytest.mark.parametrize("field,value", [
    ("s.low", "5"), ("s.wh", "https://x.example"), ("s.lp", "3/60/r"), ("s.x", "1"),
    ("s.sx", "1"), ("s.s.pc", "5"), ("s.pc", "0"), ("s.t:web:dl", "5"), ("s.rt", "2"),
    ("sn:per_call", "1"), ("s.nd", "1000000001"), ("xxpc", "5"), ("q.rt", "1"),
    ("S.pc", "5")])
def test_set_limits_refuses_what_is_not_a_shadow_limit(lua: Lua, field: str, value: str
                                                       ) -> None:
    lua.create()
    before = lua.snapshot()
    assert lua.run("set_limits", *lua.limits_args(field, value)) == [30, 5]
    assert lua.snapshot() == before


def test_no_shadow_no_shadow_read(lua: Lua) -> None:
    """An agent without shadow limits: its replies name none and its hash gains nothing."""
    lua.create(grant=10_000_000)
    lua.set_limits("pc", "100")
    assert lua.charge(50)[-1] == ""
    assert not [f for f in lua.agent() if f.startswith(("s", "sn:", "sa:"))]


def test_a_free_call_meets_no_spend_cap_and_no_require_task(lua: Lua) -> None:
    """As enforced: a free call is never over a per-call or daily cap (even once the day is
    past the cap) and needs no task; only call caps count it."""
    for agent in ("sh", "en"):
        lua.create(agent, grant=10_000_000)
    lua.set_limits("dl", "100", agent="en")
    lua.set_limits("s.dl", "100", "s.rt", "1", agent="sh")
    assert lua.charge(150, agent="sh")[-1] == "daily"
    assert lua.charge(101, agent="en")[0] == 15  # enforced: over the daily cap
    assert lua.charge(None, agent="en", tool="free")[0] == 0  # but a free call passes
    assert lua.charge(None, agent="sh", tool="free")[-1] == ""
    assert lua.agent("sh")["sn:daily"] == "1" and "sn:task_required" not in lua.agent("sh")


def test_a_one_micro_call_adds_its_micro(lua: Lua) -> None:
    lua.create()
    lua.set_limits("s.nd", "1")
    assert lua.charge(1)[-1] == ""
    assert lua.charge(1)[-1] == "calls_per_day"
    assert (lua.agent()["sn:calls_per_day"], lua.agent()["sa:calls_per_day"]) == ("1", "1")
