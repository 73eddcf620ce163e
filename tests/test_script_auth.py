"""auth_fail.lua called straight: failed authentications counted per window for everyone,
per client and per credential, the scope of the first limit passed, and its wait."""

from __future__ import annotations

from typing import Any

import pytest

from tests.script_helpers import Lua

ALL, CLIENT, CRED = "iou:{auth}:fail:all", "iou:{auth}:fail:client:c1", "iou:{auth}:fail:cred:x"
WINDOW_MS = 60_000


def fail(lua: Lua, limits: tuple[int, int, int] = (5, 3, 2), window_ms: int = WINDOW_MS,
         cred: bool = True) -> list[Any]:
    keys_ = [ALL, CLIENT, CRED] if cred else [ALL, CLIENT]
    return lua.run("auth_fail", keys_, [str(window_ms), *(str(n) for n in limits)])


def counters(lua: Lua) -> list[str | None]:
    return [lua.r.get(k) for k in (ALL, CLIENT, CRED)]  # type: ignore[misc]


def assert_wait(reply: list[Any], scope: int, max_ms: int = WINDOW_MS) -> None:
    assert reply[:2] == [0, scope]
    assert max_ms - 5_000 < reply[2] <= max_ms


@pytest.mark.parametrize(("index", "value", "bad"), [
    (1, "0", True), (1, "86400001", True), (1, "", True), (1, "x", True),
    (1, "86400000", False), (1, "1", False),
    *((i, v, True) for i in (2, 3, 4) for v in ("100000001", "", "-1")),
    *((i, v, False) for i in (2, 3, 4) for v in ("100000000", "0")),
])
def test_auth_fail_arguments(lua: Lua, index: int, value: str, bad: bool) -> None:
    args = [str(WINDOW_MS), "5", "3", "2"]
    args[index - 1] = value
    before = lua.snapshot()
    reply = lua.run("auth_fail", [ALL, CLIENT, CRED], args)
    if bad:
        assert reply == [30, index]
        assert lua.snapshot() == before
    else:
        assert reply[0] == 0


def test_auth_fail_counts_and_scopes(lua: Lua) -> None:
    assert fail(lua) == [0, 0, 0]
    assert counters(lua) == ["1", "1", "1"]
    for key in (ALL, CLIENT, CRED):
        assert WINDOW_MS - 5_000 < lua.r.pttl(key) <= WINDOW_MS
    assert fail(lua) == [0, 0, 0]  # 2 failures of the credential: at its limit, not over
    assert_wait(fail(lua), 3)  # the credential's limit is passed first
    assert_wait(fail(lua), 2)  # then the client's (checked before the credential's)
    assert counters(lua) == ["4", "4", "4"]
    assert_wait(fail(lua), 2)
    assert_wait(fail(lua), 1)  # the 6th failure of everyone: over 5
    assert counters(lua) == ["6", "5", "5"]  # past everyone's limit nothing else counts


def test_auth_fail_without_a_credential(lua: Lua) -> None:
    for _ in range(3):
        assert fail(lua, (10, 3, 0), cred=False) == [0, 0, 0]
    assert counters(lua) == ["3", "3", None]
    assert_wait(fail(lua, (10, 3, 0), cred=False), 2)


def test_auth_fail_windows(lua: Lua) -> None:
    lua.r.set(ALL, "9")  # a counter that lost its expiry starts a window when over
    assert_wait(fail(lua, (9, 3, 2)), 1)
    assert WINDOW_MS - 5_000 < lua.r.pttl(ALL) <= WINDOW_MS
    lua.r.delete(ALL)
    lua.r.set(CLIENT, "1", px=10_000)  # a running window is not extended
    assert fail(lua) == [0, 0, 0]
    assert 5_000 < lua.r.pttl(CLIENT) <= 10_000
    lua.r.set(CLIENT, "3", px=10_000)
    assert_wait(fail(lua), 2, 10_000)
    lua.r.set(CRED, "7", px=20_000)
    lua.r.set(CLIENT, "0", px=20_000)
    assert_wait(fail(lua), 3, 20_000)
