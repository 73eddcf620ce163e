"""What each script writes, field by field: its reply, the records it leaves, their expiries,
and the ledger event (the ledger rebuilds balances from these events alone, so a missing or
wrong field is lost money). Script level, on the session's Redis."""

from __future__ import annotations

from gateway.store import keys
from tests.script_helpers import AMAX, DAY_MS, Lua, key_hash

T = 1_000_000
HOLD_TTL_CLOSED_MS = 86_400_000
IDEM_TTL_MS = 86_400_000
WINDOW_TTL_MS = 2 * DAY_MS


def last_event(lua: Lua, before_ms: int, stream: str | None = None) -> dict[str, str]:
    """The newest event of the stream, its 'at' checked against the clock and removed."""
    event = lua.events(stream)[-1]
    at = int(event.pop("at"))
    assert before_ms <= at <= lua.now_ms()
    return event


def assert_ttl(lua: Lua, key: str, max_ms: int) -> None:
    ttl = lua.r.pttl(key)
    assert max_ms - 5_000 < ttl <= max_ms, (key, ttl)


def test_create_agent_writes(lua: Lua) -> None:
    before = lua.now_ms()
    keys_, args = lua.create_args("a1", grant=250_000, low=300_000, n=1)
    reply = lua.run("create_agent", keys_, args)
    assert reply[:2] == [0, 250_000]
    assert before <= reply[2] <= lua.now_ms()
    assert lua.agent() == {"bal": "250000", "held": "0", "frozen": "0",
                           "created": str(reply[2]), "low": "300000", "lowf": "1"}
    k = lua.k()
    assert lua.r.hgetall(k.keys) == {"key1": key_hash(1)}
    assert lua.r.hgetall(k.api_key_lookup(key_hash(1))) == {
        "agent": "a1", "key_id": "key1", "created": str(reply[2])}  # the key's creation
    assert lua.r.zrange(k.agents_index, 0, -1, withscores=True) == [("a1", 0.0)]
    agent_event, grant_event = lua.events()
    assert int(agent_event.pop("at")) == int(grant_event.pop("at")) == reply[2]
    assert agent_event == {"id": args[1], "kind": "agent", "agent": "a1", "low": "300000",
                           "key_id": "key1", "key_hash": key_hash(1)}
    assert grant_event == {"id": args[2], "kind": "grant", "agent": "a1", "amount": "250000",
                           "balance_after": "250000", "idem": "", "meta": ""}
    for pttl in (lua.r.pttl(k.agent_hash), lua.r.pttl(k.keys)):
        assert pttl == -1


def test_create_agent_low_flag_edges(lua: Lua) -> None:
    for grant, low, lowf in ((300_000, 300_000, "0"), (299_999, 300_000, "1"),
                             (0, 0, "0"), (5, 0, "0"), (1, 1, "0"), (0, 1, "1")):
        lua.reset()
        lua.run("create_agent", *lua.create_args("a1", grant=grant, low=low))
        agent = lua.agent()
        assert agent["lowf"] == lowf, (grant, low)
        assert agent.get("low") == (str(low) if low else None)


def test_charge_writes(lua: Lua) -> None:
    lua.create(grant=T)
    before = lua.now_ms()
    keys_, args = lua.charge_args(50_000, idem="k1", ih="hash1", meta='{"m":1}')
    assert lua.run("charge", keys_, args) == [0, T - 50_000, 0, args[1], 50_000, "tool",
                                                ""]
    assert lua.agent()["bal"] == str(T - 50_000)
    assert last_event(lua, before) == {
        "id": args[1], "kind": "charge", "agent": "a1", "tool": "v_tool",
        "category": "tool", "amount": "50000", "balance_after": str(T - 50_000),
        "idem": "k1", "ih": "hash1", "meta": '{"m":1}'}
    assert lua.r.get(keys_[2]) == f"hash1 {T - 50_000} 0 {args[1]} 50000"
    assert_ttl(lua, keys_[2], IDEM_TTL_MS)
    assert lua.window() == {"day": str(lua.today()), "s": "50000", "s:tool": "50000"}
    assert_ttl(lua, lua.k().window, WINDOW_TTL_MS)


def test_free_charge_writes_only_the_event(lua: Lua) -> None:
    lua.create(grant=0)
    keys_, args = lua.charge_args(None, tool="free")
    before_state = lua.snapshot()
    before = lua.now_ms()
    assert lua.run("charge", keys_, args) == [0, 0, 0, args[1], 0, "tool", ""]
    assert last_event(lua, before)["amount"] == "0"
    after = lua.snapshot()
    stream = lua.k().events
    assert {k: v for k, v in after.items() if k != stream} == {
        k: v for k, v in before_state.items() if k != stream}


def test_hold_writes(lua: Lua) -> None:
    lua.create(grant=T)
    before = lua.now_ms()
    keys_, args = lua.hold_args(300_000, "hold1", ttl_ms=60_000, idem="k1", ih="hash1",
                                meta='{"m":2}')
    reply = lua.run("hold", keys_, args)
    expires = reply[4]
    assert reply[:4] + reply[5:] == [0, T - 300_000, 0, "hold1", 300_000, 0, ""]
    assert before + 60_000 <= expires <= lua.now_ms() + 60_000
    assert (lua.agent()["bal"], lua.agent()["held"]) == (str(T - 300_000), "300000")
    k = lua.k()
    assert lua.r.hgetall(k.hold("hold1")) == {
        "agent": "a1", "tool": "v_llm", "category": "llm", "amount": "300000",
        "day": str((expires - 60_000) // DAY_MS), "exp": str(expires), "state": "open",
        "fx": "0"}
    assert lua.r.pttl(k.hold("hold1")) == -1
    assert lua.r.zrange(k.holds, 0, -1, withscores=True) == [("hold1", float(expires))]
    assert last_event(lua, before) == {
        "id": args[1], "kind": "hold", "agent": "a1", "tool": "v_llm",
        "category": "llm", "amount": "300000", "balance_after": str(T - 300_000),
        "hold_id": "hold1", "expires_at": str(expires), "idem": "k1", "ih": "hash1",
        "meta": '{"m":2}'}
    assert lua.r.get(keys_[4]) == f"hash1 {T - 300_000} 0 hold1 {expires}"
    assert_ttl(lua, keys_[4], IDEM_TTL_MS)
    assert lua.window() == {"day": str(lua.today()), "h": "300000", "h:llm": "300000"}
    assert_ttl(lua, k.window, WINDOW_TTL_MS)


def closed_hold(lua: Lua, hold_id: str = "hold1") -> dict[str, str]:
    k = lua.k()
    assert lua.r.zscore(k.holds, hold_id) is None
    assert_ttl(lua, k.hold(hold_id), HOLD_TTL_CLOSED_MS)
    return lua.hash(k.hold(hold_id))


def test_capture_writes(lua: Lua) -> None:
    lua.create(grant=T)
    assert lua.hold(300_000)[0] == 0
    before = lua.now_ms()
    keys_, args = lua.capture_args(80_000, idem="k2", ih="hash2", meta='{"m":3}')
    assert lua.run("capture", keys_, args) == [0, T - 80_000, 0, args[1], 220_000, 80_000]
    assert (lua.agent()["bal"], lua.agent()["held"]) == (str(T - 80_000), "0")
    hold = closed_hold(lua)
    assert (hold["state"], hold["captured"], hold["amount"]) == ("captured", "80000", "300000")
    assert last_event(lua, before) == {
        "id": args[1], "kind": "capture", "agent": "a1", "tool": "v_llm",
        "category": "llm", "amount": "80000", "held": "300000",
        "balance_after": str(T - 80_000), "hold_id": "hold1", "idem": "k2", "ih": "hash2",
        "meta": '{"m":3}'}
    assert lua.r.get(keys_[4]) == f"hash2 {T - 80_000} 0 {args[1]} 220000"
    assert_ttl(lua, keys_[4], IDEM_TTL_MS)
    assert lua.window() == {"day": str(lua.today()), "h": "0", "h:llm": "0", "s": "80000",
                            "s:llm": "80000"}


def test_capture_of_the_whole_hold_and_of_nothing(lua: Lua) -> None:
    lua.create(grant=T)
    assert lua.hold(300_000, "h1")[0] == 0
    assert lua.hold(200_000, "h2")[0] == 0
    assert lua.capture(300_001, "h1") == [20, 300_000, 300_001]
    assert lua.capture(300_000, "h1")[::2] == [0, 0, 0]  # code, flags, released
    assert lua.capture(0, "h2")[4] == 200_000
    assert lua.agent()["bal"] == str(T - 300_000)
    assert lua.agent()["held"] == "0"
    assert lua.window()["s"] == "300000"
    assert lua.events()[-1]["amount"] == "0"


def test_release_writes(lua: Lua) -> None:
    lua.create(grant=T)
    assert lua.hold(300_000)[0] == 0
    before = lua.now_ms()
    keys_, args = lua.release_args(idem="k3", ih="hash3")
    assert lua.run("release", keys_, args) == [0, T, 0, args[1], 300_000]
    assert (lua.agent()["bal"], lua.agent()["held"]) == (str(T), "0")
    assert closed_hold(lua)["state"] == "released"
    assert last_event(lua, before) == {
        "id": args[1], "kind": "release", "agent": "a1", "tool": "v_llm",
        "category": "llm", "amount": "300000", "balance_after": str(T), "hold_id": "hold1",
        "idem": "k3", "ih": "hash3", "meta": ""}
    assert lua.r.get(keys_[4]) == f"hash3 {T} 0 {args[1]} 300000"
    assert_ttl(lua, keys_[4], IDEM_TTL_MS)


def make_due(lua: Lua, hold_id: str, agent: str = "a1") -> None:
    """Move an open hold's expiry into the past (the test's stand-in for waiting)."""
    k = lua.k(agent)
    lua.r.hset(k.hold(hold_id), "exp", "1")
    lua.r.zadd(k.holds, {hold_id: 1})


def test_expire_writes(lua: Lua) -> None:
    lua.create(grant=T)
    assert lua.hold(300_000)[0] == 0
    assert lua.hold(100_000, "later")[0] == 0
    make_due(lua, "hold1")
    before = lua.now_ms()
    keys_, args = lua.expire_args(3)
    assert lua.run("expire_holds", keys_, args) == [0, 1]
    assert (lua.agent()["bal"], lua.agent()["held"]) == (str(T - 100_000), "100000")
    assert closed_hold(lua)["state"] == "expired"
    assert lua.r.zrange(lua.k().holds, 0, -1) == ["later"]
    assert last_event(lua, before) == {
        "id": args[1], "kind": "expire", "agent": "a1", "tool": "v_llm",
        "category": "llm", "amount": "300000", "balance_after": str(T - 100_000),
        "hold_id": "hold1", "idem": "", "meta": ""}
    assert lua.window() == {"day": str(lua.today()), "h": "100000", "h:llm": "100000"}


def test_expire_takes_each_due_hold_once_in_batches(lua: Lua) -> None:
    lua.create(grant=T)
    lua.create("b2", grant=T)
    for i in range(3):
        assert lua.hold(10_000, f"h{i}")[0] == 0
        make_due(lua, f"h{i}")
    assert lua.hold(10_000, "hb", agent="b2")[0] == 0
    if lua.k("b2").partition == lua.k().partition:
        make_due(lua, "hb", "b2")
    keys_, args = lua.expire_args(2)
    assert lua.run("expire_holds", keys_, args) == [0, 2]
    events = lua.events()[-2:]
    assert [e["id"] for e in events] == args[1:]
    assert [e["hold_id"] for e in events] == ["h0", "h1"]
    assert lua.expire(1) == [0, 1]
    assert lua.agent()["bal"] == str(T)
    # A closed hold still in the index (a crash between steps) is dropped, not credited.
    assert lua.hold(10_000, "h9")[0] == 0
    assert lua.release("h9")[0] == 0
    lua.r.zadd(lua.k().holds, {"h9": 1, "gone": 1})
    before = lua.snapshot()
    assert lua.expire(4) == [0, 0]
    assert lua.r.zrange(lua.k().holds, 0, -1) == []
    after = lua.snapshot()
    assert after[lua.k().agent_hash] == before[lua.k().agent_hash]


def test_fund_writes(lua: Lua) -> None:
    lua.create(grant=T)
    for kind in ("fund", "grant"):
        before = lua.now_ms()
        keys_, args = lua.fund_args(70_000, kind=kind, idem="k" + kind, ih="h" + kind,
                                    meta='{"m":4}')
        bal = lua.bal()
        assert lua.run("fund", keys_, args) == [0, bal + 70_000, 0, args[1]]
        assert last_event(lua, before) == {
            "id": args[1], "kind": kind, "agent": "a1", "amount": "70000",
            "balance_after": str(bal + 70_000), "idem": "k" + kind, "ih": "h" + kind,
            "meta": '{"m":4}'}
        assert lua.r.get(keys_[1]) == f"h{kind} {bal + 70_000} 0 {args[1]} 70000"
        assert_ttl(lua, keys_[1], IDEM_TTL_MS)
    assert lua.bal() == T + 140_000


def test_fund_of_the_largest_amount(lua: Lua) -> None:
    lua.create(grant=0)
    assert lua.fund(AMAX)[:2] == [0, AMAX]
    assert lua.bal() == AMAX


def test_set_limits_writes(lua: Lua) -> None:
    lua.create(grant=T)
    before = lua.now_ms()
    keys_, args = lua.limits_args("pc", "5000", "dl", "9000", "c:llm:pc", "100",
                                  "wh", "http://127.0.0.1:9/h")
    args[3] = '{"patch":1}'
    assert lua.run("set_limits", keys_, args) == [0]
    event = last_event(lua, before)
    assert event == {"id": args[1], "kind": "limits", "agent": "a1", "patch": '{"patch":1}',
                     "l.pc": "5000", "l.dl": "9000", "l.c:llm:pc": "100",
                     "l.wh": "http://127.0.0.1:9/h"}
    lua.set_limits("pc", "", "c:llm:pc", "", "low", "10")
    event = lua.events()[-1]
    assert {k: v for k, v in event.items() if k.startswith("l.")} == {
        "l.dl": "9000", "l.wh": "http://127.0.0.1:9/h", "l.low": "10"}
    agent = lua.agent()
    assert "pc" not in agent and "c:llm:pc" not in agent and agent["dl"] == "9000"


def test_set_limits_arms_the_low_flag_quietly(lua: Lua) -> None:
    lua.create(grant=100_000)
    for low, lowf in (("100000", "0"), ("100001", "1"), ("", "0"), ("99999", "0"),
                      ("200000", "1"), ("0", "0")):
        lua.set_limits("low", low)
        assert lua.agent()["lowf"] == lowf, low


def test_freeze_writes(lua: Lua) -> None:
    lua.create(grant=T)
    for flag, kind in (("1", "freeze"), ("0", "unfreeze")):
        before = lua.now_ms()
        keys_, args = lua.freeze_args(flag)
        assert lua.run("freeze", keys_, args) == [0, int(flag)]
        assert lua.agent()["frozen"] == flag
        assert last_event(lua, before) == {"id": args[1], "kind": kind, "agent": "a1"}
    assert lua.run("freeze", *lua.freeze_args("1", agent="ghost")) == [10]


def test_key_add_and_revoke_write(lua: Lua) -> None:
    lua.create(grant=T)
    k = lua.k()
    before = lua.now_ms()
    keys_, args = lua.key_add_args(2)
    assert lua.run("key_add", keys_, args) == [0]
    assert lua.r.hget(k.keys, "key2") == key_hash(2)
    lookup = lua.r.hgetall(k.api_key_lookup(key_hash(2)))
    created = int(lookup.pop("created"))
    assert lookup == {"agent": "a1", "key_id": "key2"}
    assert int(lua.events()[-1]["at"]) == created  # the key's creation, on the script clock
    assert last_event(lua, before) == {"id": args[1], "kind": "key_add", "agent": "a1",
                                       "key_id": "key2", "key_hash": key_hash(2)}
    keys_, args = lua.key_revoke_args(2)
    assert lua.run("key_revoke", keys_, args) == [0]
    assert lua.r.hget(k.keys, "key2") is None
    assert lua.r.exists(k.api_key_lookup(key_hash(2))) == 0
    assert last_event(lua, before) == {"id": args[1], "kind": "key_revoke", "agent": "a1",
                                       "key_id": "key2", "key_hash": key_hash(2)}
    before_state = lua.snapshot()
    assert lua.run("key_revoke", *lua.key_revoke_args(2)) == [23]
    keys_, args = lua.key_revoke_args(1)
    args[3] = key_hash(7)  # the hash read for this key id changed meanwhile
    assert lua.run("key_revoke", keys_, args) == [23]
    assert lua.run("key_revoke", *lua.key_revoke_args(1, agent="ghost")) == [10]
    assert lua.snapshot() == before_state


def test_tool_set_and_delete_write(lua: Lua) -> None:
    before = lua.now_ms()
    keys_, args = lua.tool_set_args("web_search", 50_000, "tool", "variable",
                                    "http://127.0.0.1:9", '{"h":"v"}')
    reply = lua.run("tool_set", keys_, args)
    first = reply[1]
    # Catalog versions never fall below the clock in µs (a lost version key cannot reuse one).
    assert reply[0] == 0 and before * 1000 <= first <= lua.now_ms() * 1000
    stored = lua.hash(keys.tool("web_search"))
    assert before <= int(stored.pop("updated")) <= lua.now_ms()
    assert stored == {"price": "50000", "category": "tool", "pricing": "variable",
                      "upstream": "http://127.0.0.1:9", "headers": '{"h":"v"}',
                      "version": str(first)}
    assert lua.r.smembers(keys.TOOL_NAMES) == {"web_search"}
    assert lua.r.get(keys.TOOLS_VERSION) == str(first)
    assert last_event(lua, before, keys.TOOL_EVENTS) == {
        "id": args[1], "kind": "tool", "tool": "web_search", "price": "50000",
        "category": "tool", "pricing": "variable", "upstream": "http://127.0.0.1:9",
        "headers": '{"h":"v"}'}
    # A replacement drops the old fields (a stale upstream would leak secrets).
    lua.r.set(keys.TOOLS_VERSION, str(4 * 10**15))  # ahead of the clock: plain increments
    assert lua.run("tool_set", *lua.tool_set_args("web_search", 60_000)) == [0, 4 * 10**15 + 1]
    assert lua.r.hget(keys.tool("web_search"), "upstream") == ""
    assert lua.r.hget(keys.tool("web_search"), "headers") == ""
    lua.r.hset(keys.tool("web_search"), "stale", "x")
    assert lua.run("tool_set", *lua.tool_set_args("web_search", 60_000)) == [0, 4 * 10**15 + 2]
    assert "stale" not in lua.hash(keys.tool("web_search"))
    keys_, args = lua.tool_delete_args("web_search")
    assert lua.run("tool_delete", keys_, args) == [0, 4 * 10**15 + 3]
    assert lua.r.exists(keys.tool("web_search")) == 0
    assert lua.r.smembers(keys.TOOL_NAMES) == set()
    assert last_event(lua, before, keys.TOOL_EVENTS) == {
        "id": args[1], "kind": "tool_delete", "tool": "web_search"}
    before_state = lua.snapshot()
    assert lua.run("tool_delete", *lua.tool_delete_args("web_search")) == [10]
    assert lua.snapshot() == before_state
    lua.r.set(keys.TOOLS_VERSION, "5")  # a version key restored from an old copy
    assert lua.run("tool_set", *lua.tool_set_args("calc", 0))[0] == 0
    restarted = int(lua.r.get(keys.TOOLS_VERSION) or 0)
    assert before * 1000 <= restarted <= lua.now_ms() * 1000


def test_crossing_queues_both_webhooks(lua: Lua) -> None:
    lua.create(grant=200_000)
    lua.set_limits("low", "100000", "wh", "http://127.0.0.1:9/hook")
    outbox = lua.k().webhooks
    assert lua.charge(100_000)[2] == 0  # 100000 left: not below
    assert lua.r.xlen(outbox) == 0
    before = lua.now_ms()
    keys_, args = lua.charge_args(1)
    assert lua.run("charge", keys_, args)[2] == 1 + 4
    entries = lua.events(outbox)
    for entry in entries:
        assert before <= int(entry.pop("at")) <= lua.now_ms()
    assert entries == [
        {"event_id": f"{args[1]}:{event}", "event": event, "agent": "a1",
         "balance": "99999", "threshold": "100000", "url": "http://127.0.0.1:9/hook"}
        for event in ("balance.low", "refill.requested")]
    assert lua.charge(1)[2] == 1
    assert lua.r.xlen(outbox) == 2


def test_hold_crossing_queues_webhooks_and_no_url_queues_nothing(lua: Lua) -> None:
    lua.create(grant=200_000)
    lua.set_limits("low", "100000", "wh", "http://127.0.0.1:9/hook")
    keys_, args = lua.hold_args(100_001)
    assert lua.run("hold", keys_, args)[2] == 5
    entries = lua.events(lua.k().webhooks)
    assert [(e["event_id"], e["balance"], e["threshold"]) for e in entries] == [
        (f"{args[1]}:{event}", "99999", "100000") for event in ("balance.low",
                                                                 "refill.requested")]
    lua.create("b2", grant=200_000)
    lua.set_limits("low", "100000", agent="b2")  # no webhook URL
    queued = lua.r.xlen(lua.k("b2").webhooks)
    assert lua.charge(100_001, agent="b2")[2] == 5
    assert lua.r.xlen(lua.k("b2").webhooks) == queued
