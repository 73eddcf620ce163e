"""Script-level tests of refund.lua and debit.lua: the running refunded total, the windows a
refund gives back to, idempotency, and that every refusal writes nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.script_helpers import AGENT, AMAX, DAY_MS, MICROS_MAX, Lua
from tests.walls_helpers import minutes, records

OK, REPLAY, NOT_FOUND, CONFLICT = 0, 1, 10, 12
INSUFFICIENT, OVERFLOW, BAD, EXCEEDS = 17, 22, 30, 60
MIN_MS = 60_000
REFUND_TTL_MS = 30 * DAY_MS


def at(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> int:
    return int(dt.datetime(y, m, d, hh, mm, tzinfo=dt.UTC).timestamp() * 1000)


def refund_args(  # noqa: PLR0913 - one argument per script input
        lua: Lua, cost: int, amount: int | None = None, *, charge_id: str = "c1",
        ledger: int = 0, at_ms: int | None = None, cat: str = "tool", idem: str = "",
        ih: str = "", reason: str = "", balance_max: int = MICROS_MAX, agent: str = AGENT,
        task: str = "") -> tuple[list[str], list[str]]:
    k = lua.k(agent)
    when = lua.now_ms() if at_ms is None else at_ms
    return ([k.agent_hash, k.window, lua.idem_key(agent, idem), k.events,
             k.refunded(charge_id), k.walls, k.task(task or "none")],
            [agent, lua.eid(), charge_id, str(cost), str(ledger),
             "" if amount is None else str(amount), str(AMAX), str(balance_max), str(when),
             f"v_{cat}", cat, ih, idem, reason, task])


def refund(lua: Lua, cost: int, amount: int | None = None, **kw: Any) -> list[Any]:
    return lua.run("refund", *refund_args(lua, cost, amount, **kw))


def debit_args(lua: Lua, amount: int, *, idem: str = "", ih: str = "", reason: str = "oops",
               agent: str = AGENT) -> tuple[list[str], list[str]]:
    k = lua.k(agent)
    return ([k.agent_hash, lua.idem_key(agent, idem), k.events, k.webhooks],
            [agent, lua.eid(), str(amount), str(AMAX), ih, idem, reason])


def debit(lua: Lua, amount: int, **kw: Any) -> list[Any]:
    return lua.run("debit", *debit_args(lua, amount, **kw))


def charged(lua: Lua, cost: int, cat: str = "tool") -> str:
    reply = lua.charge(cost, cat=cat)
    assert reply[0] == OK, reply
    return str(reply[3])


# ---- refund.lua --------------------------------------------------------------------------

def test_partial_refunds_never_add_up_to_more_than_the_charge(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    cid = charged(lua, 100_000)
    assert lua.bal() == 900_000
    first = refund(lua, 100_000, 30_000, charge_id=cid, reason="bad answer")
    assert first[0] == OK and first[1] == 930_000 and first[4] == 30_000
    assert lua.r.get(lua.k().refunded(cid)) == "30000"
    before = lua.snapshot()
    assert refund(lua, 100_000, 70_001, charge_id=cid) == [EXCEEDS, 70_000]
    assert lua.snapshot() == before
    rest = refund(lua, 100_000, charge_id=cid)  # no amount: what is left
    assert rest[0] == OK and rest[4] == 70_000 and rest[1] == 1_000_000
    assert refund(lua, 100_000, charge_id=cid) == [EXCEEDS, 0]
    assert refund(lua, 100_000, 1, charge_id=cid) == [EXCEEDS, 0]
    assert lua.bal() == 1_000_000
    event = lua.events()[-1]
    assert {k: event[k] for k in ("kind", "agent", "tool", "category", "amount",
                                  "balance_after", "ref", "reason", "id")} == {
        "kind": "refund", "agent": AGENT, "tool": "v_tool", "category": "tool",
        "amount": "70000", "balance_after": "1000000", "ref": cid, "reason": "",
        "id": rest[3]}
    assert lua.events()[-2]["reason"] == "bad answer"


def test_without_its_record_the_ledgers_total_is_the_start(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    assert refund(lua, 100_000, 40_001, ledger=60_000) == [EXCEEDS, 40_000]
    reply = refund(lua, 100_000, ledger=60_000)
    assert reply[0] == OK and reply[4] == 40_000
    assert lua.r.get(lua.k().refunded("c1")) == "100000"
    # Once the record exists it is the truth: a stale ledger total does not reopen it.
    assert refund(lua, 100_000, 1, ledger=0) == [EXCEEDS, 0]
    ttl = lua.r.pttl(lua.k().refunded("c1"))
    assert REFUND_TTL_MS - 60_000 < ttl <= REFUND_TTL_MS


def test_an_unreadable_record_counts_as_all_refunded(lua: Lua) -> None:
    lua.create()
    lua.r.set(lua.k().refunded("c1"), "nan")
    assert refund(lua, 100_000, 1) == [EXCEEDS, 0]


def test_a_record_above_the_cost_leaves_nothing(lua: Lua) -> None:
    lua.create()
    lua.r.set(lua.k().refunded("c1"), "150000")
    assert refund(lua, 100_000) == [EXCEEDS, 0]


def test_refund_gives_back_to_todays_window(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    charged(lua, 50_000, "llm")
    cid = charged(lua, 100_000, "tool")
    assert lua.window()["s"] == "150000" and lua.window()["s:tool"] == "100000"
    assert refund(lua, 100_000, 40_000, charge_id=cid)[0] == OK
    w = lua.window()
    assert (w["s"], w["s:tool"], w["s:llm"]) == ("110000", "60000", "50000")


def test_refund_never_takes_a_window_below_zero(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    charged(lua, 30_000, "tool")
    assert refund(lua, 100_000, 80_000)[0] == OK
    w = lua.window()
    assert (w["s"], w["s:tool"]) == ("0", "0")
    assert "s:llm" not in w


def test_a_charge_of_yesterday_leaves_todays_window(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    charged(lua, 100_000)
    reply = refund(lua, 100_000, 40_000, at_ms=lua.now_ms() - DAY_MS)
    assert reply[0] == OK and reply[1] == 940_000
    assert lua.window()["s"] == "100000"


def test_a_stale_window_is_left_alone(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    lua.r.hset(lua.k().window, mapping={"day": str(lua.today() - 1), "s": "500"})
    assert refund(lua, 100_000, 400)[0] == OK
    assert lua.window() == {"day": str(lua.today() - 1), "s": "500"}


def test_refund_gives_back_to_the_walls_while_current(clocked_lua: Lua) -> None:
    lua = clocked_lua
    now = at(2026, 11, 25, 12, 30)  # a Wednesday
    lua.shift_to(now)
    lua.create(grant=10_000_000)
    lua.set_limits("hr", "9000000", "wk", "9000000", "mo", "9000000")
    cid = charged(lua, 100_000, "llm")

    def spent() -> list[tuple[int, int, int]]:
        recs = records(lua)
        return [(recs[s]["H"], recs[s]["W"], recs[s]["M"]) for s in ("", ":llm")]

    assert spent() == [(100_000, 100_000, 100_000)] * 2
    assert refund(lua, 100_000, 30_000, charge_id=cid, at_ms=now, cat="llm")[0] == OK
    assert spent() == [(70_000, 70_000, 70_000)] * 2
    assert records(lua)[""]["D"] == 1  # the call happened: call counts stay
    # 59 minutes later the charge's minute is still in the rolling hour; 60 minutes later it
    # has left it (the hour is the last 60 minutes, its own included): only the week and
    # month get a refund then.
    lua.shift_to(now + 59 * MIN_MS)
    assert refund(lua, 100_000, 10_000, charge_id=cid, at_ms=now, cat="llm")[0] == OK
    assert spent() == [(60_000, 60_000, 60_000)] * 2
    lua.shift_to(now + 60 * MIN_MS)
    assert refund(lua, 100_000, 10_000, charge_id=cid, at_ms=now, cat="llm")[0] == OK
    assert spent() == [(60_000, 50_000, 50_000)] * 2
    lua.shift_to(now + 61 * MIN_MS)
    assert refund(lua, 100_000, 20_000, charge_id=cid, at_ms=now, cat="llm")[0] == OK
    assert spent() == [(60_000, 30_000, 30_000)] * 2


def test_refund_gives_back_to_a_minute_of_its_own(clocked_lua: Lua) -> None:
    """A charge whose minute has passed (a later call moved it to its own field) gets its
    refund there and in the hour's sum R; a minute refunded to zero is deleted."""
    lua = clocked_lua
    now = at(2026, 11, 25, 12, 30)
    lua.shift_to(now)
    lua.create(grant=10_000_000)
    lua.set_limits("hr", "100001")
    cid = charged(lua, 100_000, "llm")
    lua.shift_to(now + MIN_MS)
    assert lua.charge(1, cat="llm")[0] == OK
    minute = now // MIN_MS
    assert minutes(lua) == {f"H{minute}": 100_000, f"H{minute}:llm": 100_000}
    assert refund(lua, 100_000, 30_000, charge_id=cid, at_ms=now, cat="llm")[0] == OK
    assert minutes(lua) == {f"H{minute}": 70_000, f"H{minute}:llm": 70_000}
    recs = records(lua)
    assert [(recs[s]["H"], recs[s]["R"]) for s in ("", ":llm")] == [(1, 70_000)] * 2
    assert refund(lua, 100_000, 70_000, charge_id=cid, at_ms=now, cat="llm")[0] == OK
    assert minutes(lua) == {}
    recs = records(lua)
    assert [(recs[s]["H"], recs[s]["R"]) for s in ("", ":llm")] == [(1, 0)] * 2
    assert lua.charge(100_000, cat="llm")[0] == OK  # 1 + 100000: the cap exactly
    assert lua.charge(1, cat="llm")[0] == 31


def test_a_charge_of_last_week_and_month_gives_back_to_neither(clocked_lua: Lua) -> None:
    lua = clocked_lua
    then = at(2026, 11, 30, 23, 50)  # Monday, the month's last day
    lua.shift_to(then)
    lua.create(grant=10_000_000)
    lua.set_limits("wk", "9000000", "mo", "9000000")
    cid = charged(lua, 100_000)
    lua.shift_to(at(2026, 12, 1, 0, 5))  # same week, next month
    assert refund(lua, 100_000, 10_000, charge_id=cid, at_ms=then)[0] == OK
    rec = records(lua)[""]
    assert (rec["T"], rec["W"], rec["M"]) == (then // MIN_MS, 90_000, 100_000)
    lua.shift_to(at(2026, 12, 7, 0, 5))  # next week
    assert refund(lua, 100_000, 10_000, charge_id=cid, at_ms=then)[0] == OK
    rec = records(lua)[""]
    assert (rec["W"], rec["M"]) == (90_000, 100_000)
    # 15 minutes after the charge it was still in the rolling hour; a week later it is not.
    assert rec["H"] == 90_000


def test_refund_creates_no_wall_counter(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    charged(lua, 100_000)
    assert refund(lua, 100_000, 10_000)[0] == OK
    assert lua.hash(lua.k().walls) == {}


def test_refund_gives_back_to_an_open_task(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    k = lua.k()
    task: dict[Any, Any] = {"state": "open", "exp": str(lua.now_ms() + 60_000), "budget": "500000",
            "spent": "100000", "st:v_tool": "100000", "sc:tool": "100000", "calls": "1"}
    lua.r.hset(k.task("t1"), mapping=task)
    lua.r.hset(k.task("t2"), mapping={**task, "state": "closed"})
    lua.r.hset(k.task("t3"), mapping={**task, "exp": str(lua.now_ms() - 1)})
    assert refund(lua, 100_000, 30_000, task="t1")[0] == OK
    assert lua.hash(k.task("t1")) == {**task, "spent": "70000", "st:v_tool": "70000",
                                      "sc:tool": "70000"}
    for other in ("t2", "t3"):
        before = lua.hash(k.task(other))
        assert refund(lua, 100_000, 1, task=other, charge_id=other)[0] == OK
        assert lua.hash(k.task(other)) == before, other
    assert refund(lua, 100_000, 1, task="gone", charge_id="c9")[0] == OK
    assert lua.hash(k.task("gone")) == {}
    # The task's own key only: another task of the agent is left alone.
    assert refund(lua, 100_000, 5, charge_id="c8")[0] == OK
    assert lua.hash(k.task("t1"))["spent"] == "70000"


def test_refund_rearms_the_low_balance_flag(lua: Lua) -> None:
    lua.create(grant=200_000, low=150_000)
    cid = charged(lua, 100_000)
    assert lua.agent()["lowf"] == "1"
    reply = refund(lua, 100_000, 10_000, charge_id=cid)
    assert reply[0] == OK and reply[2] == 1  # still low
    assert lua.agent()["lowf"] == "1"
    reply = refund(lua, 100_000, 90_000, charge_id=cid)
    assert reply[0] == OK and reply[2] == 0
    assert lua.agent()["lowf"] == "0"


def test_refund_is_idempotent(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    cid = charged(lua, 100_000)
    first = refund(lua, 100_000, 30_000, charge_id=cid, idem="k1", ih="h1")
    assert first[0] == OK
    events = len(lua.events())
    again = refund(lua, 100_000, 30_000, charge_id=cid, idem="k1", ih="h1")
    assert again == [REPLAY, "930000", "0", first[3], "30000"]
    assert lua.bal() == 930_000 and len(lua.events()) == events
    assert lua.r.get(lua.k().refunded(cid)) == "30000"
    before = lua.snapshot()
    assert refund(lua, 100_000, 20_000, charge_id=cid, idem="k1", ih="h2") == [CONFLICT]
    assert lua.snapshot() == before
    assert lua.events()[-1]["idem"] == "k1" and lua.events()[-1]["ih"] == "h1"


def test_refund_refusals_write_nothing(lua: Lua) -> None:
    assert refund(lua, 100_000) == [NOT_FOUND]
    lua.create(grant=1_000_000)
    charged(lua, 100_000)
    before = lua.snapshot()
    assert refund(lua, 100_000, 50_000, balance_max=949_999) == [OVERFLOW, 900_000, 949_999]
    assert refund(lua, 100_000, 100_001) == [EXCEEDS, 100_000]
    assert lua.snapshot() == before
    assert lua.hold(50_000)[0] == OK  # held money counts as funded
    assert refund(lua, 100_000, 50_000, balance_max=949_999)[0] == OVERFLOW
    assert refund(lua, 100_000, 50_000, balance_max=950_000)[0] == OK


@pytest.mark.parametrize("index,value", [
    (1, "Bad"), (2, ""), (3, ""), (3, "a b"), (4, "0"), (4, "-1"), (4, "nan"),
    (4, str(AMAX + 1)), (5, "100001"), (5, "x"), (6, "0"), (6, "1.5"), (6, str(AMAX + 1)),
    (7, "x"), (8, "1e9"), (9, ""), (9, "-5"), (10, "Tool"), (11, ""), (12, "a b"),
    (14, "r" * 1025), (15, "a b"), (2, "e" * 65), (3, "c" * 65), (12, "h" * 65),
    (15, "t" * 65)])
def test_refund_bad_arguments(lua: Lua, index: int, value: str) -> None:
    lua.create(grant=1_000_000)
    k, args = refund_args(lua, 100_000, 10_000, idem="k1", ih="h1", task="t1")
    args[index - 1] = value
    before = lua.snapshot()
    assert lua.run("refund", k, args) == [BAD, index]
    assert lua.snapshot() == before


def test_refund_takes_the_longest_ids(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    k, args = refund_args(lua, 100_000, 10_000, charge_id="c" * 64, idem="k1", ih="h" * 64,
                          task="t" * 64)
    args[1] = "e" * 64
    assert lua.run("refund", k, args)[0] == OK


def test_refund_takes_the_longest_reason(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    assert refund(lua, 100_000, 1, reason="\u00e9" * 512)[0] == OK  # 1024 bytes
    assert lua.events()[-1]["reason"] == "\u00e9" * 512
    assert debit(lua, 1, reason="r" * 1024)[0] == OK


# ---- debit.lua ---------------------------------------------------------------------------

def test_debit_takes_back_up_to_the_balance(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    reply = debit(lua, 400_000, reason="duplicate grant")
    assert reply[0] == OK and reply[1] == 600_000
    event = lua.events()[-1]
    assert {k: event[k] for k in ("kind", "agent", "amount", "balance_after", "reason",
                                  "id")} == {
        "kind": "debit", "agent": AGENT, "amount": "400000", "balance_after": "600000",
        "reason": "duplicate grant", "id": reply[3]}
    before = lua.snapshot()
    assert debit(lua, 600_001) == [INSUFFICIENT, 600_000, 600_001]
    assert lua.snapshot() == before
    assert debit(lua, 600_000)[1] == 0
    assert lua.bal() == 0


def test_debit_leaves_held_money_alone(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    assert lua.hold(300_000)[0] == OK
    assert debit(lua, 700_001) == [INSUFFICIENT, 700_000, 700_001]
    assert debit(lua, 700_000)[0] == OK
    assert lua.agent()["held"] == "300000"


def test_debit_of_a_frozen_agent(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    lua.run("freeze", *lua.freeze_args("1"))
    assert debit(lua, 1)[0] == OK


def test_debit_crossing_low_balance_queues_the_webhook(lua: Lua) -> None:
    lua.create(grant=1_000_000, low=500_000)
    lua.set_limits("wh", "http://127.0.0.1:9/hook")
    reply = debit(lua, 400_000)
    assert reply[0] == OK and reply[2] == 0
    assert lua.r.xlen(lua.k().webhooks) == 0
    reply = debit(lua, 200_000)
    assert reply[2] == 1 + 4  # LOW_BALANCE + LOW_CROSSED
    raw: Any = lua.r.xrange(lua.k().webhooks)
    events = [dict(f)["event"] for _, f in raw]
    assert events == ["balance.low", "refill.requested"]
    # Each webhook is named after the debit's entry id (the receiver's deduplication key).
    assert [dict(f)["event_id"] for _, f in raw] == [
        f"{reply[3]}:balance.low", f"{reply[3]}:refill.requested"]
    assert debit(lua, 1)[2] == 1
    assert lua.r.xlen(lua.k().webhooks) == 2


def test_debit_is_idempotent(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    first = debit(lua, 100_000, idem="d1", ih="h1")
    event = lua.events()[-1]
    assert (event["idem"], event["ih"]) == ("d1", "h1")  # the ledger keeps the key as given
    again = debit(lua, 100_000, idem="d1", ih="h1")
    assert again == [REPLAY, "900000", "0", first[3], "100000"]
    assert lua.bal() == 900_000
    assert debit(lua, 5, idem="d1", ih="h2") == [CONFLICT]
    assert lua.bal() == 900_000


def test_debit_takes_the_longest_ids(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    k, args = debit_args(lua, 10, idem="k1", ih="h" * 64)
    args[1] = "e" * 64
    assert lua.run("debit", k, args)[0] == OK


def test_debit_of_an_unknown_agent(lua: Lua) -> None:
    before = lua.snapshot()
    assert debit(lua, 1) == [NOT_FOUND]
    assert lua.snapshot() == before


@pytest.mark.parametrize("index,value", [
    (1, "A"), (2, ""), (3, "0"), (3, "x"), (3, str(AMAX + 1)), (4, "-1"), (5, "a b"),
    (7, ""), (7, "r" * 1025), (2, "e" * 65), (5, "h" * 65)])
def test_debit_bad_arguments(lua: Lua, index: int, value: str) -> None:
    lua.create(grant=1_000_000)
    k, args = debit_args(lua, 10, idem="k1", ih="h1")
    args[index - 1] = value
    before = lua.snapshot()
    assert lua.run("debit", k, args) == [BAD, index]
    assert lua.snapshot() == before


def test_the_body_hash_is_checked_without_a_key(lua: Lua) -> None:
    lua.create(grant=1_000_000)
    k, args = refund_args(lua, 100_000, 10, ih="a b")
    assert lua.run("refund", k, args) == [BAD, 12]
    k, args = debit_args(lua, 10, ih="a b")
    assert lua.run("debit", k, args) == [BAD, 5]
