"""Script-level tests of child_create.lua and reclaim.lua: the amount moves in one step, the
child's hash and key, the ledger events, and every refusal writes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.metering.children import partition_name
from gateway.store import keys
from tests.script_helpers import AGENT, AMAX, MICROS_MAX, Lua, P, key_hash

OK, REPLAY, NOT_FOUND, FROZEN, CONFLICT = 0, 1, 10, 11, 12
INSUFFICIENT, EXISTS, OVERFLOW, BAD, NOT_A_CHILD = 17, 21, 22, 30, 61


def kid(n: int = 1, parent: str = AGENT) -> str:
    """A child name in the parent's partition."""
    found = partition_name(f"kid{n}", keys.partition_of(parent, P), P)
    assert found is not None
    return found


def create_args(  # noqa: PLR0913 - one argument per script input
        lua: Lua, amount: int, child: str | None = None, *, parent: str = AGENT,
        low: int = 0, pairs: tuple[str, ...] = (), limits: str = "", n: int = 500
        ) -> tuple[list[str], list[str]]:
    child = child or kid()
    p, c = lua.k(parent), lua.k(child)
    kh = key_hash(n)
    return ([p.agent_hash, c.agent_hash, c.keys, c.api_key_lookup(kh), p.events,
             p.agents_index, p.webhooks, p.children()],
            [parent, child, lua.eid(), lua.eid(), lua.eid(), lua.eid(), str(amount), str(AMAX),
             str(low), f"key{n}", kh, limits, *pairs])


def create(lua: Lua, amount: int, child: str | None = None, **kw: Any) -> list[Any]:
    return lua.run("child_create", *create_args(lua, amount, child, **kw))


def reclaim_args(  # noqa: PLR0913 - one argument per script input
        lua: Lua, child: str, amount: int | None = None, *, parent: str = AGENT,
        idem: str = "", ih: str = "", balance_max: int = MICROS_MAX
        ) -> tuple[list[str], list[str]]:
    c, p = lua.k(child), lua.k(parent)
    return ([c.agent_hash, p.agent_hash, c.events, lua.idem_key(child, idem)],
            [child, parent, lua.eid(), lua.eid(), "" if amount is None else str(amount),
             str(AMAX), str(balance_max), ih, idem])


def reclaim(lua: Lua, child: str, amount: int | None = None, **kw: Any) -> list[Any]:
    return lua.run("reclaim", *reclaim_args(lua, child, amount, **kw))


# ---- child_create.lua ------------------------------------------------------------------

def test_a_child_is_created_with_money_moved_from_its_parent(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    child = kid()
    k, args = create_args(lua, 300_000, child, pairs=("pc", "50000", "x", "1"),
                          limits='{"p":1}')
    reply = lua.run("child_create", k, args)
    assert reply[:3] == [OK, 700_000, 300_000]
    assert lua.bal() == 700_000 and lua.bal(child) == 300_000
    a = lua.agent(child)
    assert {k: a[k] for k in ("bal", "held", "frozen", "parent", "pc", "x", "lowf")} == {
        "bal": "300000", "held": "0", "frozen": "0", "parent": AGENT, "pc": "50000",
        "x": "1", "lowf": "0"}
    assert a["created"] == str(reply[3]) and "low" not in a
    assert lua.r.hget(lua.k(child).keys, "key500") == key_hash(500)
    assert lua.hash(lua.k(child).api_key_lookup(key_hash(500)))["agent"] == child
    assert lua.r.zscore(lua.k().agents_index, child) == 0
    assert lua.r.smembers(lua.k().children()) == {child}
    events = lua.events()[-4:]
    assert [e["kind"] for e in events] == ["agent", "limits", "transfer_out", "transfer_in"]
    assert events[0]["parent"] == AGENT and events[0]["agent"] == child
    assert events[1]["l.pc"] == "50000" and "l.x" not in events[1]
    assert events[1]["patch"] == '{"p":1}'
    assert {k: events[2][k] for k in ("agent", "amount", "balance_after", "ref")} == {
        "agent": AGENT, "amount": "300000", "balance_after": "700000", "ref": child}
    assert {k: events[3][k] for k in ("agent", "amount", "balance_after", "ref")} == {
        "agent": child, "amount": "300000", "balance_after": "300000", "ref": AGENT}
    # Each event carries its own entry id (agent, limits, transfer_out, transfer_in).
    assert [e["id"] for e in events] == [args[2], args[5], args[3], args[4]]
    assert events[1]["agent"] == child and "l.low" not in events[1]
    assert (events[0]["key_id"], events[0]["key_hash"]) == ("key500", key_hash(500))
    assert lua.hash(lua.k(child).api_key_lookup(key_hash(500)))["key_id"] == "key500"


def test_a_child_without_limits_writes_no_limits_event(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    assert create(lua, 1)[0] == OK
    assert [e["kind"] for e in lua.events()[-3:]] == ["agent", "transfer_out", "transfer_in"]


def test_the_childs_low_balance(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    assert create(lua, 100_000, kid(1), low=200_000)[0] == OK
    a = lua.agent(kid(1))
    assert (a["low"], a["lowf"]) == ("200000", "1")
    assert lua.events()[-3]["low"] == "200000"  # on the agent event: no limits event
    assert create(lua, 100_000, kid(3), low=200_000, pairs=("pc", "9"), n=502)[0] == OK
    assert lua.events()[-3]["l.low"] == "200000"  # a limits event carries it too
    assert create(lua, 200_000, kid(2), low=200_000, n=501)[0] == OK
    assert lua.agent(kid(2))["lowf"] == "0"
    # The smallest threshold, one micro, is a threshold like any other.
    assert create(lua, 5, kid(4), low=1, pairs=("pc", "9"), n=503)[0] == OK
    assert lua.agent(kid(4))["low"] == "1"
    assert lua.events()[-3]["l.low"] == "1"


def test_the_whole_balance_may_move_and_not_a_micro_more(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    before = lua.snapshot()
    assert create(lua, 1_000_001) == [INSUFFICIENT, 1_000_000, 1_000_001]
    assert lua.snapshot() == before
    assert create(lua, 1_000_000)[:3] == [OK, 0, 1_000_000]


def test_held_money_does_not_move(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    assert lua.hold(400_000)[0] == OK
    assert create(lua, 600_001)[0] == INSUFFICIENT
    assert create(lua, 600_000)[0] == OK


def test_the_parents_low_balance_crossing_queues_its_webhook(lua: Lua) -> None:
    lua.create(grant=1_000_000, low=500_000)
    lua.set_limits("wh", "http://127.0.0.1:9/hook")
    assert create(lua, 600_000)[0] == OK
    assert lua.agent()["lowf"] == "1"
    raw: Any = lua.r.xrange(lua.k().webhooks)
    assert [dict(f)["event"] for _, f in raw] == ["balance.low", "refill.requested"]
    out_id = next(e["id"] for e in lua.events() if e["kind"] == "transfer_out")
    assert [dict(f)["event_id"] for _, f in raw] == [
        f"{out_id}:balance.low", f"{out_id}:refill.requested"]
    # Already low: a second child crosses nothing, and queues nothing.
    assert create(lua, 1, kid(2), n=501)[0] == OK
    assert lua.r.xlen(lua.k().webhooks) == 2


def test_refusals_write_nothing(lua: Lua) -> None:
    before = lua.snapshot()
    assert create(lua, 1) == [NOT_FOUND]
    assert lua.snapshot() == before
    lua.create(grant=1_000_000)
    lua.create(kid(9), grant=5)
    lua.run("freeze", *lua.freeze_args("1"))
    before = lua.snapshot()
    assert create(lua, 1) == [FROZEN]
    assert lua.snapshot() == before
    lua.run("freeze", *lua.freeze_args("0"))
    before = lua.snapshot()
    assert create(lua, 1, kid(9)) == [EXISTS]
    lua.r.delete(lua.k(kid(9)).keys)  # an agent whose keys were all revoked still exists
    assert create(lua, 1, kid(9)) == [EXISTS]
    assert lua.snapshot() == {k: v for k, v in before.items()
                              if k != lua.k(kid(9)).keys}
    args = create_args(lua, 1, kid(3))
    lua.r.hset(args[0][3], "agent", "someone")  # the key lookup record is taken
    before = lua.snapshot()
    assert lua.run("child_create", *args) == [BAD, 11]
    assert lua.snapshot() == before


@pytest.mark.parametrize("index,value", [
    (1, "Bad"), (2, "Bad"), (2, AGENT), (3, ""), (4, ""), (5, "a b"), (6, ""), (7, "0"),
    (7, "-1"), (7, str(AMAX + 1)), (8, "x"), (9, "-1"), (9, str(AMAX + 1)), (10, ""),
    (11, "ab"), (11, "G" * 64), (13, "Pc"), (13, "p" * 81), (13, "1pc"), (14, ""),
    (14, "a b"), (3, "e" * 65), (6, "e" * 65), (10, "k" * 65), (14, "v" * 2049)])
def test_child_create_bad_arguments(lua: Lua, index: int, value: str) -> None:
    lua.create(grant=1_000_000)
    k, args = create_args(lua, 10, pairs=("pc", "5"))
    args[index - 1] = value
    before = lua.snapshot()
    assert lua.run("child_create", k, args) == [BAD, index]
    assert lua.snapshot() == before


def test_the_longest_ids_and_values(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    k, args = create_args(lua, 10, kid(2), pairs=("p" * 80, "v" * 2048))
    for i in (2, 3, 4, 5, 9):
        args[i] = f"{i}" * 64
    assert lua.run("child_create", k, args)[0] == OK
    assert lua.agent(kid(2))["p" * 80] == "v" * 2048
    child = kid(2)
    k, args = reclaim_args(lua, child, 1, idem="k1", ih="h" * 64)
    args[2], args[3] = "a" * 64, "b" * 64
    assert lua.run("reclaim", k, args)[0] == OK


def test_child_create_counts_its_pairs(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    k, args = create_args(lua, 10, pairs=("pc",))
    assert lua.run("child_create", k, args) == [BAD, 13]
    many = tuple(x for i in range(65) for x in (f"c:c{i}:pc", "5"))
    k, args = create_args(lua, 10, pairs=many)
    assert lua.run("child_create", k, args) == [BAD, 12 + 130]
    k, args = create_args(lua, 10, pairs=many[:128])
    assert lua.run("child_create", k, args)[0] == OK


# ---- reclaim.lua -----------------------------------------------------------------------

def test_reclaim_moves_what_is_left_back(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    child = kid()
    create(lua, 400_000, child)
    reply = reclaim(lua, child, 150_000)
    assert reply[0] == OK and reply[1] == 250_000 and reply[4] == 150_000
    assert lua.bal() == 750_000 and lua.bal(child) == 250_000
    events = lua.events()[-2:]
    assert [(e["kind"], e["agent"], e["amount"], e["balance_after"], e["ref"]) for e in events] == [
        ("transfer_out", child, "150000", "250000", AGENT),
        ("transfer_in", AGENT, "150000", "750000", child)]
    assert events[0]["id"] == reply[3]
    rest = reclaim(lua, child)
    assert rest[0] == OK and rest[1] == 0 and rest[4] == 250_000
    assert lua.bal() == 1_000_000 and lua.bal(child) == 0
    count = len(lua.events())
    assert reclaim(lua, child) == [OK, 0, 0, "", 0]  # nothing left: nothing written
    assert len(lua.events()) == count


def test_reclaim_leaves_held_money_with_the_child(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    child = kid()
    create(lua, 400_000, child)
    assert lua.hold(100_000, agent=child)[0] == OK
    assert reclaim(lua, child, 300_001) == [INSUFFICIENT, 300_000, 300_001]
    assert reclaim(lua, child)[4] == 300_000
    assert lua.agent(child)["held"] == "100000"


def test_reclaim_events_carry_their_ids(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    child = kid()
    create(lua, 400_000, child)
    k, args = reclaim_args(lua, child, 1)
    assert lua.run("reclaim", k, args)[0] == OK
    assert [e["id"] for e in lua.events()[-2:]] == [args[2], args[3]]


def test_reclaim_flags_of_an_agent_already_low(lua: Lua) -> None:
    lua.create(grant=1_000_000, low=2_000_000)  # the parent stays below its threshold
    child = kid()
    create(lua, 400_000, child, low=500_000)  # the child starts below its own
    assert lua.agent(child)["lowf"] == "1" and lua.agent()["lowf"] == "1"
    reply = reclaim(lua, child, 100_000)
    assert reply[2] == 1  # still low, no new crossing
    assert lua.agent()["lowf"] == "1"  # the parent is still below its threshold


def test_reclaim_rearms_and_sets_low_flags(lua: Lua) -> None:
    lua.create(grant=1_000_000, low=800_000)
    child = kid()
    create(lua, 400_000, child, low=300_000)
    assert lua.agent()["lowf"] == "1"
    reply = reclaim(lua, child, 200_000)
    assert reply[2] == 1 + 4 and lua.agent(child)["lowf"] == "1"  # the child crossed
    assert lua.agent()["lowf"] == "0"  # the parent is back above its threshold


def test_reclaim_is_idempotent(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    child = kid()
    create(lua, 400_000, child)
    first = reclaim(lua, child, 100_000, idem="r1", ih="h1")
    assert reclaim(lua, child, 100_000, idem="r1", ih="h1") == [
        REPLAY, "300000", "0", first[3], "100000"]
    assert lua.bal(child) == 300_000
    assert reclaim(lua, child, 5, idem="r1", ih="h2") == [CONFLICT]
    assert lua.events()[-2]["ih"] == "h1" and lua.events()[-2]["idem"] == "r1"


def test_reclaim_refusals_write_nothing(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    lua.create("other", grant=1_000_000)
    child = kid()
    create(lua, 400_000, child)
    before = lua.snapshot()
    assert reclaim(lua, kid(7)) == [NOT_FOUND]
    assert reclaim(lua, child, parent="other") == [NOT_A_CHILD]
    assert reclaim(lua, AGENT, parent="other") == [NOT_A_CHILD]  # a top-level agent
    lua.r.delete(lua.k().agent_hash)
    assert reclaim(lua, child) == [NOT_FOUND]
    lua.r.delete(lua.k().agent_hash)
    assert reclaim(lua, child, 1, balance_max=600_000) == [NOT_FOUND]
    assert lua.snapshot() != before  # the parent hash is gone; restore it
    lua.reset()
    lua.create(grant=1_000_000)
    create(lua, 400_000, child)
    assert lua.hold(100_000)[0] == OK
    before = lua.snapshot()
    assert reclaim(lua, child, 1, balance_max=600_000) == [OVERFLOW, 500_000, 600_000]
    assert lua.snapshot() == before
    assert reclaim(lua, child, 1, balance_max=600_001)[0] == OK


@pytest.mark.parametrize("index,value", [
    (1, "Bad"), (2, "Bad"), (3, ""), (4, "a b"), (5, "0"), (5, "x"), (5, str(AMAX + 1)),
    (6, "-1"), (7, "x"), (8, "a b"), (3, "e" * 65), (4, "e" * 65), (8, "h" * 65)])
def test_reclaim_bad_arguments(lua: Lua, index: int, value: str) -> None:
    lua.create(grant=1_000_000)
    child = kid()
    create(lua, 400_000, child)
    k, args = reclaim_args(lua, child, 10, idem="k1", ih="h1")
    args[index - 1] = value
    before = lua.snapshot()
    assert lua.run("reclaim", k, args) == [BAD, index]
    assert lua.snapshot() == before


def test_reclaim_checks_the_body_hash_without_a_key(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    child = kid()
    create(lua, 400_000, child)
    k, args = reclaim_args(lua, child, 10, ih="a b")
    assert lua.run("reclaim", k, args) == [BAD, 8]
