"""Script-level tests of the loop breaker that its mutation run (scripts/mutate_lua.py
--lines over lua/_lib.lua's loop section and the lines of charge.lua and hold.lua that call
it) found missing: a hold's freeze, field by field, with a webhook."""

from __future__ import annotations

from tests.script_helpers import Lua
from tests.test_script_loops import LOOP, hold, looping


def test_hold_freeze_writes_its_event_and_webhook_field_by_field(lua: Lua) -> None:
    looping(lua, "1/60/f", "wh", "http://127.0.0.1:9/hook")
    assert hold(lua, "hold1")[0] == 0
    bal = lua.bal()
    args = lua.hold_args(5000, "hold2", loop="d1")
    entry_id = args[1][1]
    reply = lua.run("hold", *args)
    assert reply[0] == LOOP and reply[5] == 1
    assert lua.agent()["frozen"] == "1"
    assert lua.bal() == bal
    event = lua.events()[-1]
    assert event == {"id": entry_id, "at": event["at"], "kind": "freeze", "agent": "a1",
                     "tool": "v_llm", "reason": "loop_detected", "repeats": "1",
                     "window_s": "60"}
    assert lua.events(lua.k().webhooks) == [
        {"event_id": entry_id + ":agent.loop_detected", "event": "agent.loop_detected",
         "agent": "a1", "balance": str(bal), "at": event["at"], "tool": "v_llm",
         "repeats": "1", "window_s": "60", "url": "http://127.0.0.1:9/hook"}]
    assert not lua.r.exists(lua.k().hold("hold2"))
