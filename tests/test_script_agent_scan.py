"""agent_scan.lua called directly: one page of a partition's agents, exact fields, the cursor,
today's spending only, and every bad argument refused (the summary table is built on it)."""

from __future__ import annotations

from gateway.store import keys
from tests.script_helpers import Lua


def _same_partition() -> tuple[str, str, str]:
    """Three names, in name order, that share s1's partition (so one scan sees them all)."""
    prefix = keys.agent_keys("s1", 16).prefix
    names = [n for n in (f"s{i}" for i in range(2, 400))
             if keys.agent_keys(n, 16).prefix == prefix]
    second, third = sorted(names[:2])  # "s1" sorts first: it is a prefix of, or below, each
    return "s1", second, third


S1, S2, S3 = _same_partition()


def scan(lua: Lua, after: str = "", page: int = 10, today: int | None = None,
         prefix: str | None = None, index: str | None = None) -> list[object]:
    day = lua.today() if today is None else today
    k = lua.k(S1)
    return lua.run("agent_scan", [index or k.agents_index],
                   [prefix or k.prefix, after, str(page), str(day)])


def three_agents(lua: Lua) -> None:
    lua.seed_tools()
    lua.create(S1, grant=5_000_000)
    lua.create(S2, grant=2_000_000)
    lua.create(S3, grant=3_000_000)
    lua.set_limits("low", "100", "dl", "900000", agent=S1)
    assert lua.charge(70_000, agent=S1)[0] == 0
    assert lua.hold(20_000, agent=S1)[0] == 0
    assert lua.run("freeze", *lua.freeze_args("1", agent=S2))[0] == 0


def test_a_page_has_every_field_in_name_order(lua: Lua) -> None:
    three_agents(lua)
    assert scan(lua) == [0, S1, 4_910_000, 20_000, 0, 100, 900_000, 70_000,
                         S2, 2_000_000, 0, 1, 0, 0, 0,
                         S3, 3_000_000, 0, 0, 0, 0, 0]


def test_the_cursor_starts_after_its_name_and_the_page_bounds_the_count(lua: Lua) -> None:
    three_agents(lua)
    assert scan(lua, page=1)[1::7] == [S1]
    assert scan(lua, after=S1, page=1)[1::7] == [S2]
    assert scan(lua, after=S2)[1::7] == [S3]
    assert scan(lua, after=S3) == [0]


def test_only_todays_window_counts_as_spent_today(lua: Lua) -> None:
    three_agents(lua)
    assert scan(lua, page=1)[7] == 70_000
    assert scan(lua, page=1, today=lua.today() + 1)[7] == 0


def test_bad_arguments_are_refused_with_their_index(lua: Lua) -> None:
    three_agents(lua)
    before = lua.snapshot()
    other = lua.k("elsewhere").prefix
    assert other != lua.k(S1).prefix
    assert scan(lua, prefix="iou:{px}:") == [30, 1]
    assert scan(lua, prefix="iou:") == [30, 1]  # a start of the index's name, not a partition
    assert scan(lua, prefix=other) == [30, 1]  # the index of another partition
    assert scan(lua, after="Not A Name") == [30, 2]
    assert scan(lua, page=0) == [30, 3]
    assert scan(lua, page=5001) == [30, 3]
    k = lua.k(S1)
    assert lua.run("agent_scan", [k.agents_index], [k.prefix, "", "10", "x"]) == [30, 4]
    assert lua.snapshot() == before
