"""lua/restore.lua called straight: each mode writes exactly the record the other scripts
write (formats, expiries, warning bits), and refuses each bad argument with its index,
writing nothing."""

from __future__ import annotations

import pytest

from gateway.store import keys
from tests.script_helpers import AGENT, DAY_MS, MICROS_MAX, Lua
from tests.test_script_args import name_cases, token_cases, uint_cases

IDEM_TTL_MS = 86_400_000
WINDOW_TTL_MS = 172_800_000
HASH = "h" * 48


def agent_call(lua: Lua, bal: str = "900", limits: tuple[str, ...] = ()
               ) -> tuple[list[str], list[str]]:
    k = lua.k()
    return ([k.agent_hash, k.agents_index],
            ["agent", AGENT, bal, "100", "0", "1700000000000", *limits])


def hold_call(lua: Lua, at_ms: int = 5 * DAY_MS) -> tuple[list[str], list[str]]:
    k = lua.k()
    return ([k.hold("hold_x"), k.holds],
            ["hold", "hold_x", AGENT, "v_tool", "tool", "250", str(at_ms), "1800000000000"])


def window_call(lua: Lua, *pairs: str) -> tuple[list[str], list[str]]:
    return [lua.k().window], ["window", str(5 * DAY_MS + 1), *pairs]


def idem_call(lua: Lua, bal: str = "99") -> tuple[list[str], list[str]]:
    return ([lua.idem_key(idem="k1"), lua.k().agent_hash],
            ["idem", HASH, bal, "e-first", "50000"])


def tool_call(upstream: str = "", headers: str = "", name: str = "calc"
              ) -> tuple[list[str], list[str]]:
    return ([keys.tool(name), keys.TOOL_NAMES, keys.TOOLS_VERSION],
            ["tool", name, "70000", "tool", "fixed", upstream, headers])


def test_agent_is_written_as_create_and_set_limits_write_it(lua: Lua) -> None:
    lua.r.hset(lua.k().agent_hash, "stale", "1")
    # Only 'low' sets the crossing flag: a larger cap (pc) or a URL (wh) does not.
    limits = ("pc", "5000", "wh", "https://hook.example", "c:llm:dl", "7")
    assert lua.run("restore", *agent_call(lua, limits=limits)) == [0, 2]
    agent = lua.agent()
    assert agent == {"stale": "1", "bal": "900", "held": "100", "frozen": "0",
                     "created": "1700000000000", "lowf": "0", "pc": "5000",
                     "wh": "https://hook.example", "c:llm:dl": "7"}
    assert lua.r.zrange(lua.k().agents_index, 0, -1, withscores=True) == [(AGENT, 0.0)]
    assert lua.r.pttl(lua.k().agent_hash) == -1


@pytest.mark.parametrize(("bal", "lowf"), [("899", "1"), ("900", "0"), ("901", "0")])
def test_agent_below_its_low_balance_has_crossed_already(lua: Lua, bal: str,
                                                         lowf: str) -> None:
    assert lua.run("restore", *agent_call(lua, bal, ("low", "900")))[0] == 0
    assert lua.agent()["lowf"] == lowf
    assert lua.agent()["low"] == "900"


def test_hold_is_written_as_hold_writes_it(lua: Lua) -> None:
    assert lua.run("restore", *hold_call(lua, 5 * DAY_MS - 1)) == [0, 2]
    assert lua.hash(lua.k().hold("hold_x")) == {
        "agent": AGENT, "tool": "v_tool", "category": "tool", "amount": "250", "day": "4",
        "exp": "1800000000000", "state": "open"}
    assert lua.r.zrange(lua.k().holds, 0, -1, withscores=True) == [("hold_x", 1.8e12)]
    assert lua.run("restore", *hold_call(lua, 5 * DAY_MS))[0] == 0
    assert lua.hash(lua.k().hold("hold_x"))["day"] == "5"


def test_window_replaces_the_stored_one_and_expires_as_windows_do(lua: Lua) -> None:
    lua.r.hset(lua.k().window, mapping={"day": "1", "s:old": "5"})
    assert lua.run("restore", *window_call(lua, "s", "30", "s:web", "30", "h", "7",
                                           "h:llm", "7")) == [0, 1]
    assert lua.window() == {"day": "5", "s": "30", "s:web": "30", "h": "7", "h:llm": "7"}
    assert WINDOW_TTL_MS - 10_000 < lua.r.pttl(lua.k().window) <= WINDOW_TTL_MS


@pytest.mark.parametrize(("low", "bal", "flags"),
                         [("100", "99", "1"), ("100", "100", "0"), (None, "99", "0")])
def test_idempotency_record_carries_the_low_balance_bit(lua: Lua, low: str | None, bal: str,
                                                        flags: str) -> None:
    lua.r.hset(lua.k().agent_hash, mapping={"bal": "1"} if low is None else
               {"bal": "1", "low": low})
    assert lua.run("restore", *idem_call(lua, bal)) == [0, 1]
    record = lua.idem_key(idem="k1")
    assert lua.r.get(record) == f"{HASH} {bal} {flags} e-first 50000"
    assert IDEM_TTL_MS - 10_000 < lua.r.pttl(record) <= IDEM_TTL_MS


def test_tool_gets_the_next_catalog_version(lua: Lua) -> None:
    lua.r.hset(keys.tool("calc"), "stale", "1")
    assert lua.run("restore", *tool_call("https://up.example", "sealed")) == [0, 1]
    first = lua.hash(keys.tool("calc"))
    version = int(first.pop("version"))
    assert version >= (lua.now_ms() - 10_000) * 1000  # next_catalog_version's floor
    assert first == {"price": "70000", "category": "tool", "pricing": "fixed",
                     "upstream": "https://up.example", "headers": "sealed", "updated": "0"}
    assert lua.r.smembers(keys.TOOL_NAMES) == {"calc"}
    assert lua.run("restore", *tool_call(name="buy"))[0] == 0
    later = int(lua.hash(keys.tool("buy"))["version"])
    assert later > version and int(lua.r.get(keys.TOOLS_VERSION) or 0) == later
    assert lua.r.smembers(keys.TOOL_NAMES) == {"calc", "buy"}


def _refused(lua: Lua, call: tuple[list[str], list[str]], index: int, value: str) -> None:
    key_names, args = call
    args = list(args)
    args[index - 1] = value
    before = lua.snapshot()
    assert lua.run("restore", key_names, args) == [30, index], (index, value)
    assert lua.snapshot() == before


def _accepted(lua: Lua, call: tuple[list[str], list[str]], index: int, value: str) -> None:
    key_names, args = call
    args = list(args)
    args[index - 1] = value
    assert lua.run("restore", key_names, args)[0] == 0, (index, value)


def _check(lua: Lua, call: tuple[list[str], list[str]], index: int,
           cases: list[tuple[str, bool]]) -> None:
    for value, bad in cases:
        lua.reset()
        lua.r.hset(lua.k().agent_hash, "bal", "1")
        (_refused if bad else _accepted)(lua, call, index, value)


def test_every_argument_of_every_mode_is_checked(lua: Lua) -> None:
    amounts = [(v, bad) for v, bad in uint_cases(MICROS_MAX)]
    _check(lua, agent_call(lua), 1, [("x", True), ("", True), ("agent", False)])
    for index, cases in {2: name_cases(), 3: amounts, 4: amounts, 6: amounts,
                         5: [("2", True), ("", True), ("1", False), ("0", False)]}.items():
        _check(lua, agent_call(lua), index, cases)
    for index, cases in {2: token_cases(), 3: name_cases(), 4: name_cases(), 5: name_cases(),
                         6: amounts, 7: amounts, 8: amounts}.items():
        _check(lua, hold_call(lua), index, cases)
    _check(lua, window_call(lua), 2, amounts)
    fields = [("x", True), ("sh", True), ("s:", True), ("s:A", True), ("s", False),
              ("h", False), ("s:web", False), ("h:l.l-m_1", False)]
    _check(lua, window_call(lua, "s", "1"), 3, fields)
    _check(lua, window_call(lua, "s", "1", "h", "1"), 5, fields)
    _check(lua, window_call(lua, "s", "1"), 4, amounts)
    for index, cases in {2: token_cases(), 3: amounts, 4: token_cases(), 5: amounts}.items():
        _check(lua, idem_call(lua), index, cases)
    for index, cases in {2: name_cases(), 3: amounts, 4: name_cases(),
                         5: [("x", True), ("", True), ("fixed", False), ("variable", False)],
                         6: [("ftp://x", True), ("http://a b", True),
                             ("https://" + "a" * 2041, True), ("", False),
                             ("https://" + "a" * 2040, False)],
                         7: [("x" * 8193, True), ("x" * 8192, False), ("", False)]}.items():
        _check(lua, tool_call(), index, cases)


def test_limit_fields_are_tokens_and_low_an_amount(lua: Lua) -> None:
    for field, bad in [("f" * 80, False), ("f" * 81, True), ("a b", True), ("", True)]:
        lua.reset()
        call = agent_call(lua, limits=("pc", "1", field, "2"))
        (_refused if bad else _accepted)(lua, call, 9, field)
    for value, bad in [("x", True), ("", True), ("-1", True), ("0", False), ("5", False)]:
        lua.reset()
        call = agent_call(lua, limits=("dl", "1", "low", value))
        (_refused if bad else _accepted)(lua, call, 10, value)


def test_pairs_must_be_whole(lua: Lua) -> None:
    key_names, args = agent_call(lua, limits=("pc", "1"))
    before = lua.snapshot()
    assert lua.run("restore", key_names, [*args, "dl"]) == [30, 9]
    key_names, args = window_call(lua, "s", "1")
    assert lua.run("restore", key_names, [*args, "h"]) == [30, 5]
    assert lua.run("restore", [lua.k().agent_hash], ["nothing", AGENT]) == [30, 1]
    assert lua.snapshot() == before


def walls_call(lua: Lua, *pairs: str) -> tuple[list[str], list[str]]:
    return [lua.k().walls], ["walls", *pairs]


def test_a_hold_counted_in_the_walls_is_marked_as_hold_marks_it(lua: Lua) -> None:
    key_names, args = hold_call(lua)
    assert lua.run("restore", key_names, [*args, "2968", "24322"]) == [0, 2]
    hold = lua.hash(lua.k().hold("hold_x"))
    assert (hold["xw"], hold["wk"], hold["mo"]) == ("1", "2968", "24322")
    for index, value in ((9, "x"), (9, ""), (10, "-1"), (10, str(MICROS_MAX + 1))):
        lua.reset()
        call = (key_names, [*args, "2968", "24322"])
        _refused(lua, call, index, value)
    lua.reset()
    before = lua.snapshot()
    assert lua.run("restore", key_names, [*args, "2968"]) == [30, 9]
    assert lua.snapshot() == before


REC = "29916630 2 2 2 20000 5000 7 25007 7 25007 7"  # T N O D H R h W w M m


def test_walls_replace_the_stored_hash_and_expire_as_walls_do(lua: Lua) -> None:
    lua.r.hset(lua.k().walls, mapping={"H1": "5"})
    fields = ("@", REC, "@:tool", REC, "@/web_browse", "29916630 2 2 2", "H29916629", "5000",
              "H29916629:tool", "5000")
    assert lua.run("restore", *walls_call(lua, *fields)) == [0, 1]
    assert lua.hash(lua.k().walls) == dict(zip(fields[::2], fields[1::2], strict=True))
    assert 35 * DAY_MS - 10_000 < lua.r.pttl(lua.k().walls) <= 35 * DAY_MS
    bad_names = [("x", True), ("@x", True), ("@:", True), ("@/", True), ("@:A", True),
                 ("@-web", True), ("@@", True), ("H", True), ("Hx", True), ("H1:", True),
                 ("H1:A", True), ("H1-web", True), ("h", True), ("W1", True), ("1", True),
                 ("@:Allm", True), ("H1:Allm", True), ("@/Aweb", True)]
    _check(lua, walls_call(lua, "@", REC), 2,
           [*bad_names, ("@", False), ("@:l.l-m_1", False)])
    _check(lua, walls_call(lua, "@/t", "1 2 3 4"), 2,
           [("@/web_browse", False), ("@/A", True), ("@/", True)])
    _check(lua, walls_call(lua, "H1", "5"), 2,
           [("H1:llm", False), ("H1", False), ("H1/web", True), ("H1:", True)])
    # A valid name with the other kind's number of values: the value is refused.
    _check(lua, walls_call(lua, "@/web", REC), 3, [(REC, True), ("1 2 3 4", False)])
    _check(lua, walls_call(lua, "H1", REC), 3, [(REC, True), ("1", False)])
    ten = " ".join(str(n) for n in range(1, 11))
    _check(lua, walls_call(lua, "@", REC), 3,
           [(ten, True), (ten + " 11 12", True), (" " + ten + " 11", True),
            (ten + " 11 ", True), (ten.replace(" ", "  ", 1) + " 11", True),
            (ten + " -1", True), (ten + " x", True), (ten + " 1.5", True), ("", True),
            (ten + " " + str(MICROS_MAX + 1), True), (ten + " " + str(MICROS_MAX), False)])
    _check(lua, walls_call(lua, "@/t", "1 2 3 4"), 3,
           [("1 2 3", True), ("1 2 3 4 5", True), ("1 2 3 4", False), (REC, True)])
    _check(lua, walls_call(lua, "H1", "1"), 3, [(v, bad) for v, bad in uint_cases(MICROS_MAX)])
    _check(lua, walls_call(lua, "H1", "1", "@", REC), 4, [("@", False), ("@q", True)])
    before = lua.snapshot()
    assert lua.run("restore", *walls_call(lua)) == [30, 1]
    assert lua.run("restore", *walls_call(lua, "H1", "1", "@")) == [30, 4]
    assert lua.snapshot() == before
