"""Every argument check of every script, at its edges, called straight (no Python in front).

Each case changes one argument of an otherwise valid call. A bad value must be refused
with exactly ``{BAD_ARGUMENT, its index}`` and change nothing; an edge value that is valid
(the longest name, the largest amount, the empty optional token) must not be refused as a
bad argument. Edges are where the mutants live: ``#s > 64`` against ``#s >= 64``, ``n > hi``
against ``n >= hi``, the 16-digit limit, every argument index returned.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.script_helpers import AMAX, MICROS_MAX, TTL_MAX_MS, Lua, key_hash

Call = tuple[list[str], list[str]]
Builder = Callable[[Lua], Call]

NAME_BAD = ["", "A", "a" * 65]
NAME_GOOD = ["x", "a" * 64]
TOKEN_BAD = ["", "a b", "x" * 65]
TOKEN_GOOD = ["x", "~" * 64]
OPT_TOKEN_BAD = ["a b", "x" * 65]
OPT_TOKEN_GOOD = ["", "y" * 64]
NUMBER_BAD = ["nan", "-1", "1.5", " 5", "0x10", "",
              "0" * 16 + "1"]  # 17 characters: longer than any exact integer


def uint_cases(hi: int, zero_ok: bool = True) -> list[tuple[str, bool]]:
    """(value, bad) for an amount argument of maximum ``hi``."""
    cases = [(v, True) for v in NUMBER_BAD]
    cases += [(str(hi + 1), True), (str(hi), False), ("0" * 15 + "1", False),
              ("0", not zero_ok)]
    return cases


def opt_uint_cases(hi: int, zero_ok: bool = True) -> list[tuple[str, bool]]:
    """(value, bad) for an amount that may be left out ('')."""
    return [(v, b) for v, b in uint_cases(hi, zero_ok) if v != ""] + [("", False)]


def max_cases(hi: int) -> list[tuple[str, bool]]:
    """(value, bad) for a maximum passed by the gateway (amount max, ttl max, balance max)."""
    return [("nan", True), ("-1", True), ("", True), (str(hi + 1), True), (str(hi), False)]


def name_cases() -> list[tuple[str, bool]]:
    return [(v, True) for v in NAME_BAD] + [(v, False) for v in NAME_GOOD]


def token_cases() -> list[tuple[str, bool]]:
    return [(v, True) for v in TOKEN_BAD] + [(v, False) for v in TOKEN_GOOD]


def opt_token_cases() -> list[tuple[str, bool]]:
    return [(v, True) for v in OPT_TOKEN_BAD] + [(v, False) for v in OPT_TOKEN_GOOD]


def ready(lua: Lua) -> None:
    lua.create(grant=10_000_000)
    assert lua.hold(100_000, "hold1")[0] == 0


SCRIPTS: dict[str, tuple[Builder, dict[int, list[tuple[str, bool]]]]] = {
    "charge": (lambda lua: lua.charge_args(50_000), {
        1: name_cases(), 2: token_cases(), 3: name_cases(), 4: opt_uint_cases(AMAX),
        5: max_cases(MICROS_MAX), 6: opt_token_cases()}),
    "hold": (lambda lua: lua.hold_args(100_000, "hold2"), {
        1: name_cases(), 2: token_cases(), 3: token_cases(), 4: name_cases(),
        5: opt_uint_cases(AMAX, zero_ok=False), 6: max_cases(MICROS_MAX),
        7: uint_cases(TTL_MAX_MS, zero_ok=False), 8: max_cases(MICROS_MAX),
        9: opt_token_cases()}),
    "capture": (lambda lua: lua.capture_args(50_000), {
        1: name_cases(), 2: token_cases(), 3: token_cases(), 4: opt_uint_cases(AMAX),
        5: max_cases(MICROS_MAX), 6: opt_token_cases()}),
    "tool_copy": (lambda lua: lua.tool_copy_args("v_tool", 2, 90_000, "tool", "variable"), {
        1: name_cases(), 2: max_cases(MICROS_MAX), 3: opt_uint_cases(MICROS_MAX),
        4: [("", True), ("A", True), ("a" * 65, True), ("a" * 64, False)],
        5: [("x", True), ("", True), ("fixed", False), ("variable", False)],
        6: [("2", True), ("", True), ("0", False), ("1", False)]}),
    "release": (lambda lua: lua.release_args(), {
        1: name_cases(), 2: token_cases(), 3: token_cases(), 4: opt_token_cases()}),
    "fund": (lambda lua: lua.fund_args(1_000), {
        1: name_cases(), 2: token_cases(), 3: uint_cases(AMAX, zero_ok=False),
        4: max_cases(MICROS_MAX), 5: max_cases(MICROS_MAX),
        6: [("x", True), ("", True), ("fund", False), ("grant", False)],
        7: opt_token_cases()}),
    "create_agent": (lambda lua: lua.create_args("a2", n=2), {
        1: name_cases(), 2: token_cases(), 3: token_cases(), 4: uint_cases(AMAX),
        5: max_cases(MICROS_MAX), 6: uint_cases(AMAX), 7: token_cases(),
        8: [("f" * 63, True), ("f" * 65, True), ("F" * 64, True), ("g" * 64, True),
            ("0123456789abcdef" * 4, False)]}),
    "freeze": (lambda lua: lua.freeze_args("1"), {
        1: name_cases(), 2: token_cases(),
        3: [("2", True), ("", True), ("0", False), ("1", False)]}),
    "key_add": (lambda lua: lua.key_add_args(3), {
        1: name_cases(), 2: token_cases(), 3: token_cases(),
        4: [("f" * 63, True), ("f" * 65, True), ("F" * 64, True),
            ("0123456789abcdef" * 4, False)],
        5: [("nan", True), ("", True), ("1001", True), ("1000", False), ("16", False)]}),
    "key_revoke": (lambda lua: lua.key_revoke_args(9), {
        1: name_cases(), 2: token_cases(), 3: token_cases()}),
    "tool_set": (lambda lua: lua.tool_set_args(), {
        1: name_cases(), 2: token_cases(), 3: uint_cases(AMAX), 4: max_cases(MICROS_MAX),
        5: name_cases(),
        6: [("x", True), ("", True), ("fixed", False), ("variable", False)],
        7: [("ftp://x", True), ("http://a b", True), ("https://" + "a" * 2041, True),
            ("", False), ("https://" + "a" * 2040, False)],
        8: [("x" * 8193, True), ("x" * 8192, False), ("", False)]}),
    "tool_delete": (lambda lua: lua.tool_delete_args("calc"), {
        1: name_cases(), 2: token_cases()}),
}

CASES = [(script, index) for script, (_builder, table) in SCRIPTS.items() for index in table]


def _setup(lua: Lua, script: str) -> None:
    lua.reset()
    ready(lua)
    if script in ("tool_set", "tool_delete"):
        assert lua.run("tool_set", *lua.tool_set_args("calc", 0))[0] == 0
    if script == "key_revoke":
        assert lua.run("key_add", *lua.key_add_args(9))[0] == 0


@pytest.mark.parametrize(("script", "index"), CASES, ids=[f"{s}-{i}" for s, i in CASES])
def test_argument(lua: Lua, script: str, index: int) -> None:
    builder, table = SCRIPTS[script]
    for value, bad in table[index]:
        _setup(lua, script)
        keys_, args = builder(lua)
        args[index - 1] = value
        before = lua.snapshot() if bad else None
        reply = lua.run(script, keys_, args)
        if bad:
            assert reply == [30, index], value
            assert lua.snapshot() == before, value
        else:
            assert reply[0] != 30, (value, reply)


def test_every_valid_call_succeeds(lua: Lua) -> None:
    """The builders above are valid calls: each one succeeds unchanged."""
    for script, (builder, _table) in SCRIPTS.items():
        lua.reset()
        _setup(lua, script)
        assert lua.run(script, *builder(lua))[0] == 0, script


# ---- set_limits: the patch pairs ----------------------------------------------------------

LIMIT_PAIRS_BAD = [
    ("pc", "0"), ("dl", "0"), ("pc", str(AMAX + 1)), ("dl", "-1"), ("low", str(AMAX + 1)),
    ("low", "x"), ("wh", "ftp://x"), ("wh", "http://a b"), ("wh", "http://" + "a" * 2042),
    ("c:" + "a" * 65 + ":pc", "1"), ("c:X:pc", "1"), ("c:x:ab", "1"), ("c::pc", "1"),
    ("nonsense", "1"), ("nonsense", ""), ("c:x", ""), ("pc", "1.5"), ("c:x:dl", "0"),
    ("c:x:pl", "1"), ("c:x:dc", "1"), ("c:x:pl", ""), ("c:x:dc", ""),
]
LIMIT_PAIRS_GOOD = [
    ("pc", "1"), ("dl", str(AMAX)), ("low", "0"), ("low", str(AMAX)), ("wh", "http://x"),
    ("wh", "https://" + "a" * 2040), ("c:" + "a" * 64 + ":pc", "1"), ("c:x:dl", "5"),
    ("pc", ""), ("dl", ""), ("low", ""), ("wh", ""), ("c:x:pc", ""), ("c:x:dl", ""),
]


@pytest.mark.parametrize(("field", "value"), LIMIT_PAIRS_BAD,
                         ids=[f"{f[:12]}-{len(v)}" for f, v in LIMIT_PAIRS_BAD])
def test_limit_pair_refused(lua: Lua, field: str, value: str) -> None:
    ready(lua)
    before = lua.snapshot()
    assert lua.run("set_limits", *lua.limits_args(field, value)) == [30, 5]
    assert lua.run("set_limits", *lua.limits_args("pc", "5", field, value)) == [30, 7]
    assert lua.snapshot() == before


@pytest.mark.parametrize(("field", "value"), LIMIT_PAIRS_GOOD,
                         ids=[f"{f[:12]}-{len(v)}" for f, v in LIMIT_PAIRS_GOOD])
def test_limit_pair_accepted(lua: Lua, field: str, value: str) -> None:
    ready(lua)
    assert lua.run("set_limits", *lua.limits_args("pc", "5", field, value)) == [0]
    stored = lua.agent().get(field)
    assert stored == (value or None)


def test_limit_pair_count(lua: Lua) -> None:
    ready(lua)
    # 4 + 256 arguments: the enforced limits and as many shadow ones
    pairs = [item for i in range(128) for item in (f"c:c{i}:pc", "1")]
    assert lua.run("set_limits", *lua.limits_args(*pairs)) == [0]
    assert lua.run("set_limits", *lua.limits_args(*pairs, "pc", "1")) == [30, 262]
    assert lua.run("set_limits", *lua.limits_args("pc")) == [30, 5]
    assert lua.run("set_limits", *lua.limits_args("pc", "1", "dl")) == [30, 7]
    assert lua.run("set_limits", *lua.limits_args()) == [0]
    keys_, args = lua.limits_args("pc", "1")
    args[2] = str(MICROS_MAX + 1)
    assert lua.run("set_limits", keys_, args) == [30, 3]
    args[2] = "999"
    assert lua.run("set_limits", keys_, [*args[:4], "pc", "1000"]) == [30, 5]
    assert lua.run("set_limits", keys_, [*args[:4], "pc", "999"]) == [0]
    assert lua.run("set_limits", keys_, [*args[:4], "low", "1000"]) == [30, 5]
    assert lua.run("set_limits", keys_, [*args[:4], "low", "999"]) == [0]
    for i, value in ((1, "A B"), (1, "a" * 65), (2, "a b"), (2, "x" * 65), (2, "")):
        bad = list(args)
        bad[i - 1] = value
        assert lua.run("set_limits", keys_, bad) == [30, i]
    assert lua.run("set_limits", keys_, ["a" * 64, "x" * 64, *args[2:]]) == [0]


# ---- expire_holds: the partition prefix and the entry ids -----------------------------------

def test_expire_holds_arguments(lua: Lua) -> None:
    ready(lua)
    keys_, args = lua.expire_args(2)
    before = lua.snapshot()
    other = "iou:{p99}:" if "{p99}" not in args[0] else "iou:{p98}:"
    for prefix in ("", "iou:{p1}", "iou:{px}:", "x", other, args[0] + "x"):
        assert lua.run("expire_holds", keys_, [prefix, *args[1:]]) == [30, 1], prefix
    for i in (2, 3):
        for value in ("a b", "x" * 65, ""):
            bad = list(args)
            bad[i - 1] = value
            assert lua.run("expire_holds", keys_, bad) == [30, i]
    assert lua.snapshot() == before
    assert lua.run("expire_holds", keys_, [args[0], "x" * 64, "~"]) == [0, 0]
    assert lua.run("expire_holds", keys_, args[:1]) == [0, 0]
    assert lua.run("expire_holds", keys_, args[:2]) == [0, 0]


# ---- create_agent and key_add: taken keys -----------------------------------------------------

def test_create_agent_refuses_a_taken_name_or_key(lua: Lua) -> None:
    ready(lua)
    before = lua.snapshot()
    assert lua.run("create_agent", *lua.create_args("a1", n=5)) == [21]
    keys_, args = lua.create_args("a2", n=6)
    keys_[2] = lua.k("a1").api_key_lookup(key_hash(abs(hash("a1")) % 10**6))
    assert lua.run("create_agent", keys_, args) == [30, 8]
    assert lua.snapshot() == before


def test_key_add_refuses_taken_keys_and_a_full_agent(lua: Lua) -> None:
    ready(lua)
    assert lua.run("key_add", *lua.key_add_args(2, keys_max=3)) == [0]
    before = lua.snapshot()
    assert lua.run("key_add", *lua.key_add_args(2, keys_max=3)) == [30, 3]
    keys_, args = lua.key_add_args(3, keys_max=3)
    args[2] = "key2"  # a new key under an existing id
    assert lua.run("key_add", keys_, args) == [30, 3]
    assert lua.run("key_add", *lua.key_add_args(3, keys_max=2)) == [24, 2]
    assert lua.run("key_add", *lua.key_add_args(3, agent="ghost")) == [10]
    assert lua.snapshot() == before
    assert lua.run("key_add", *lua.key_add_args(3, keys_max=3)) == [0]
    assert lua.run("key_add", *lua.key_add_args(4, keys_max=3)) == [24, 3]
