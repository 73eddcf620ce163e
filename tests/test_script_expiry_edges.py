"""The very millisecond of an expiry: a hold and a task are closed from their expiry on
(``ms >= exp``), not a millisecond later. Each call here runs right behind a one-line script
that sets the test clock's offset from Redis's own TIME so that the clock reads the expiry,
both in one pipeline (Redis runs them back to back, microseconds apart): the call reads the
expiry itself on nearly every attempt, and ATTEMPTS of them make a miss on all negligible
(the mutation runner's ``>=`` -> ``>`` mutants of these checks need one call at the expiry)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.store.keys import TEST_CLOCK_KEY
from tests.script_helpers import AGENT, Lua
from tests.test_script_tasks import TASK_CLOSED, open_task

ATTEMPTS = 10
HOLD_CLOSED = 19
SET_CLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], string.format('%.0f', tonumber(ARGV[1]) - now))
"""


def run_at(lua: Lua, at_ms: int, name: str, keys: Sequence[str], args: Sequence[str]
           ) -> list[Any]:
    """Run script `name` with the scripts' clock set to read `at_ms` just before it."""
    sha = lua.r.script_load(lua.sources[name])
    pipe = lua.r.pipeline(transaction=False)
    pipe.eval(SET_CLOCK, 1, TEST_CLOCK_KEY, str(at_ms))
    pipe.evalsha(sha, len(keys), *keys, *args)
    reply: list[Any] = pipe.execute()[1]
    return reply


def test_capture_at_the_holds_expiry_is_refused(clocked_lua: Lua) -> None:
    lua = clocked_lua
    lua.create(grant=100_000_000)
    for n in range(ATTEMPTS):
        reply = lua.hold(1_000, f"h{n}", ttl_ms=1_000)
        assert reply[0] == 0, reply
        before = lua.snapshot()
        assert run_at(lua, reply[4], "capture", *lua.capture_args(500, f"h{n}")) == [
            HOLD_CLOSED, "expired"], n
        assert lua.snapshot() == before


def test_task_call_at_the_tasks_expiry_is_refused(clocked_lua: Lua) -> None:
    lua = clocked_lua
    lua.create(grant=100_000_000)
    for n in range(ATTEMPTS):
        task = f"task_{n:032d}"
        _, _, expires = open_task(lua, task, ttl_ms=1_000)
        keys, args = lua.charge_args(1)
        assert run_at(lua, expires, "charge", [*keys, lua.k(AGENT).task(task)],
                      [*args, task]) == [TASK_CLOSED, "expired"], n
        keys, args = lua.hold_args(1, f"h{n}")
        assert run_at(lua, expires, "hold", [*keys, lua.k(AGENT).task(task)],
                      [*args, task]) == [TASK_CLOSED, "expired"], n


def test_refund_at_the_tasks_expiry_gives_nothing_back_to_it(clocked_lua: Lua) -> None:
    """From its expiry on a task is over: a refund then gives back to the balance only."""
    from tests.test_script_refund import refund_args

    lua = clocked_lua
    lua.create(grant=100_000_000)
    for n in range(ATTEMPTS):
        task_id = f"t{n}"
        exp_ms = lua.now_ms() + 60_000
        task: dict[Any, Any] = {
            "state": "open", "exp": str(exp_ms), "budget": "500000", "spent": "100000",
            "st:v_tool": "100000", "sc:tool": "100000", "calls": "1"}
        lua.r.hset(lua.k().task(task_id), mapping=task)
        keys, args = refund_args(lua, 100_000, 1, task=task_id, charge_id=f"c{n}")
        assert run_at(lua, exp_ms, "refund", keys, args)[0] == 0, n
        assert lua.hash(lua.k().task(task_id)) == task, n
