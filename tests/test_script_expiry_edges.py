"""The very millisecond of an expiry: a hold and a task are closed from their expiry on
(``ms >= exp``), not a millisecond later. The scripts' clock runs on between ``shift_to``
and the call, by less than a millisecond on many calls: a call read in that same
millisecond is exactly at the expiry, and some of ATTEMPTS calls are (the mutation runner's
``>=`` -> ``>`` mutants of these checks need one such call to be caught)."""

from __future__ import annotations

from tests.script_helpers import Lua
from tests.test_script_tasks import TASK_CLOSED, charge, hold, open_task

ATTEMPTS = 30
HOLD_CLOSED = 19


def test_capture_at_the_holds_expiry_is_refused(clocked_lua: Lua) -> None:
    lua = clocked_lua
    lua.create(grant=100_000_000)
    for n in range(ATTEMPTS):
        reply = lua.hold(1_000, f"h{n}", ttl_ms=1_000)
        assert reply[0] == 0, reply
        lua.shift_to(reply[4])
        before = lua.snapshot()
        assert lua.capture(500, f"h{n}") == [HOLD_CLOSED, "expired"], n
        assert lua.snapshot() == before


def test_task_call_at_the_tasks_expiry_is_refused(clocked_lua: Lua) -> None:
    lua = clocked_lua
    lua.create(grant=100_000_000)
    for n in range(ATTEMPTS):
        task = f"task_{n:032d}"
        _, _, expires = open_task(lua, task, ttl_ms=1_000)
        lua.shift_to(expires)
        assert charge(lua, 1, task) == [TASK_CLOSED, "expired"], n
        lua.shift_to(expires)
        assert hold(lua, 1, f"h{n}", task) == [TASK_CLOSED, "expired"], n
