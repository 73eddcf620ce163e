"""``iou replay``: the ledger's history run again under proposed limits.

Every money row of the ledger is replayed, partition stream by partition stream in stream
order (an agent's rows are all in one stream, so each agent sees its own history exactly in
order), through the production Lua scripts on a scratch server started for the run and
deleted after it; the live Redis is never opened. The scripts' clock reads the time each row
recorded (gateway/store/replay.py), so every window (daily, hourly, weekly, monthly, call
caps, loop breaker) sees the call's original time.

What is replayed, and how (docs/design.md, "Replay", says why):
- charges (batch items are charges) and holds go through charge.lua and hold.lua, under the
  proposed limits; a refusal is counted (the charge's cost, the hold's amount) and leaves the
  balance and windows as the live store would have had them;
- every tool is priced ``variable`` in the scratch catalog and each call passes the cost the
  ledger recorded, so a price change in history is replayed as it was charged;
- captures go through capture.lua (a capture refused by a window it lands in is counted and
  its hold released, as invoke does); releases and expiries through release.lua; a capture,
  release or expiry of a hold the replay refused is skipped;
- money in and out that no limit refuses (grants, funds, refunds, debits, transfers) moves
  the balance through fund.lua, refund.lua and debit.lua; a refund of a charge the replay
  refused is skipped (it gave back money never taken);
- tasks are opened in the scratch store as unbounded envelopes at their first use, so a
  proposed ``require_task`` sees which calls named one; the task's own budget and max_calls
  were the caller's, not the limits', and are not replayed.
With ``--since``, rows from a warm-up start (the start of the ISO week or month holding
``since``, whichever is earlier, less a day) up to ``since`` are replayed with no limits at all
(they all happened), so the windows at ``since`` hold what was really spent; rows before the
warm-up are folded into each agent's starting balance. Only rows from ``since`` on count.
"""

from __future__ import annotations

import asyncio
import calendar
import collections
import datetime
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from gateway.config import Settings
from gateway.ledger import schema
from gateway.ledger.factory import open_store
from gateway.ledger.store import LedgerStore
from gateway.metering import ids
from gateway.metering.errors import GatewayError
from gateway.metering.inputs import loop_digest
from gateway.metering.limits import CALLS_MAX, LOOP_REPEATS_MAX, limit_pair
from gateway.metering.models import LoopLimit
from gateway.metering.money import format_amount
from gateway.metering.refusals import refusal
from gateway.store.calls import (
    CaptureReply,
    ChargeRef,
    ChargeReply,
    HoldReply,
    Refused,
)
from gateway.store.codes import Code
from gateway.store.embedded import start_scratch
from gateway.store.replay import ReplayCalls
from gateway.store.resp import RedisConnection, parse_redis_url

Changes = Mapping[str, int | str | LoopLimit | None]

DAY_MS = 86_400_000
MICROS_MAX = 2**53 - 1  # the scripts' own bound; the ledger's amounts were checked live
# A cap no history reaches (the warm-up's): below the scripts' bound with room for sums.
AMOUNT_LOOSE_MICROS = 2**52
TASK_TTL_MS = 7 * DAY_MS  # the longest task a live call could name (POST /v1/tasks)
PAGE_ROWS = 5_000  # ledger rows read per query
BATCH_CALLS_MAX = 4_000  # calls in flight per round trip to the scratch server
PARTITIONS = 16  # of the scratch store; any count works (agents are replayed alone)
# The codes that are refusals of a call (counted), as opposed to a replay's own mistakes.
REFUSAL_CODES = frozenset({
    Code.LIMIT_PER_CALL, Code.LIMIT_CATEGORY_PER_CALL, Code.LIMIT_DAILY,
    Code.LIMIT_CATEGORY_DAILY, Code.LIMIT_WINDOW, Code.LIMIT_CALLS, Code.LIMIT_TOOL_PER_CALL,
    Code.LIMIT_TASK_REQUIRED, Code.LIMIT_TASK_BUDGET, Code.LIMIT_TASK_CALLS,
    Code.LOOP_DETECTED, Code.FROZEN, Code.BALANCE_INSUFFICIENT,
})
ROW_COLUMNS = ("entry_id, stream_ms, stream_seq, at_ms, kind, agent, tool, category, amount, "
               "held, hold_id, expires_at_ms, metadata, ref, reason, task")
REPLAYED_KINDS = ("'grant', 'fund', 'charge', 'hold', 'capture', 'release', 'expire', "
                  "'refund', 'debit', 'transfer_out', 'transfer_in'")
CREDIT_KINDS = frozenset({"grant", "fund", "transfer_in"})
DEBIT_KINDS = frozenset({"debit", "transfer_out"})


class ReplayError(Exception):
    """The replay could not run (a bad argument, or a ledger the scripts cannot replay)."""


class Row(NamedTuple):
    entry_id: str
    stream_ms: int
    stream_seq: int
    at_ms: int
    kind: str
    agent: str
    tool: str | None
    category: str | None
    amount: int
    held: int | None
    hold_id: str | None
    expires_at_ms: int | None
    metadata: str | None
    ref: str | None
    reason: str | None
    task: str | None


@dataclass(frozen=True)
class Proposed:
    """The proposed limits: ``default`` for every agent, ``agents`` merged over it (a
    ``None`` there removes a default limit), both as the engine's flat limit changes."""

    default: Changes
    agents: Mapping[str, Changes] = field(default_factory=dict)

    def for_agent(self, agent: str) -> dict[str, int | str | LoopLimit | None]:
        return {**self.default, **self.agents.get(agent, {})}


@dataclass
class Tally:
    count: int = 0
    amount_micros: int = 0

    def add(self, amount_micros: int) -> None:
        self.count += 1
        self.amount_micros += amount_micros

    def as_json(self) -> dict[str, Any]:
        return {"count": self.count, "amount": format_amount(self.amount_micros)}


@dataclass
class AgentReport:
    agent: str
    refused: Tally = field(default_factory=Tally)
    by_limit: dict[str, Tally] = field(default_factory=dict)

    def add(self, limit: str, amount_micros: int) -> None:
        self.refused.add(amount_micros)
        self.by_limit.setdefault(limit, Tally()).add(amount_micros)

    def as_json(self) -> dict[str, Any]:
        return {"agent": self.agent, "refused": self.refused.as_json(),
                "by_limit": {k: v.as_json() for k, v in sorted(self.by_limit.items())}}


@dataclass
class ReplayResult:
    agents: list[AgentReport]
    rows: int
    seconds: float
    scratch_cpu_s: float = 0.0  # the scratch server's CPU (not in the JSON: benchmarks)

    def as_json(self) -> dict[str, Any]:
        return {"agents": [a.as_json() for a in self.agents], "rows": self.rows,
                "seconds": round(self.seconds, 3)}


# ---- time ------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d{1,9})([smhdw])")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": DAY_MS, "w": 7 * DAY_MS}


def parse_since(text: str, now_ms: int) -> int:
    """``--since``: a duration back from now (``90s``, ``30m``, ``12h``, ``7d``, ``2w``) or
    an ISO 8601 date or time (UTC when it names no zone); Unix ms."""
    if match := _DURATION.fullmatch(text.strip()):
        return now_ms - int(match[1]) * _UNIT_MS[match[2]]
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReplayError(f"--since {text!r} is neither a duration (7d, 12h, 30m) nor an "
                          "ISO 8601 date") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp() * 1000)


def warm_start_ms(since_ms: int) -> int:
    """Where the warm-up before ``since`` starts: a day before the start of its ISO week or
    its calendar month (UTC), whichever is earlier, so that every window that is open at
    ``since`` (the longest: a month) holds what was spent in it."""
    day = since_ms // DAY_MS
    week_start = (day - datetime.date.fromordinal(day + 719_163).weekday()) * DAY_MS
    date = datetime.datetime.fromtimestamp(since_ms / 1000, datetime.UTC)
    month_start = calendar.timegm((date.year, date.month, 1, 0, 0, 0)) * 1000
    return min(week_start, month_start) - DAY_MS


# ---- reading the ledger ----------------------------------------------------------------

async def _streams(store: LedgerStore, agent: str | None) -> list[str]:
    if agent is not None:
        rows = await store.query("SELECT DISTINCT stream FROM ledger_entries WHERE agent = ?",
                                 [agent])
    else:
        rows = await store.query("SELECT DISTINCT stream FROM ledger_entries", [])
    return sorted(str(r[0]) for r in rows if r[0] != "tools")


async def _rows(store: LedgerStore, stream: str, agent: str | None, from_ms: int | None
                ) -> AsyncIterator[list[Row]]:
    """The stream's money rows (of ``agent``, at or after ``from_ms``) in stream order, a page
    at a time (keyset pagination on the stream's position index)."""
    after = (-1, -1)
    while True:
        where = ["stream = ?", f"kind IN ({REPLAYED_KINDS})", "agent IS NOT NULL",
                 # The first term lets the index seek; the second skips what was read.
                 "stream_ms >= ?", "(stream_ms > ? OR stream_seq > ?)"]
        params: list[object] = [stream, after[0], after[0], after[1]]
        if agent is not None:
            where.append("agent = ?")
            params.append(agent)
        if from_ms is not None:
            where.append("at_ms >= ?")
            params.append(from_ms)
        page = await store.query(
            f"SELECT {ROW_COLUMNS} FROM ledger_entries WHERE {' AND '.join(where)} "
            f"ORDER BY stream_ms, stream_seq LIMIT {PAGE_ROWS}", params)
        yield [Row(*r) for r in page]
        if len(page) < PAGE_ROWS:
            return
        after = (int(page[-1][1]), int(page[-1][2]))


async def _folded_balances(store: LedgerStore, agent: str | None, before_ms: int
                           ) -> dict[str, int]:
    """Each agent's balance from the rows before ``before_ms`` (the warm-up's start)."""
    sql = (f"SELECT agent, SUM({schema.DELTA_SQL}) FROM ledger_entries "
           "WHERE agent IS NOT NULL AND at_ms < ?")
    params: list[object] = [before_ms]
    if agent is not None:
        sql += " AND agent = ?"
        params.append(agent)
    rows = await store.query(sql + " GROUP BY agent", params)
    return {str(r[0]): int(r[1] or 0) for r in rows}


# ---- the replay ------------------------------------------------------------------------

Handler = Callable[[Any], None]


class _Started:
    """A script call run up to its first wait, which is for Redis's answer: its command is
    queued on the connection when this returns, in the order calls were started. This is
    what a Task does, without a Task, a Future callback and three loop turns per call
    (they were most of a replay's CPU): the calls of a batch are started in a row and their
    answers read in order once they arrive."""

    __slots__ = ("_coro", "_done", "_value", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro
        self._waiting: Any = None
        self._done = False
        self._value: Any = None
        self._step()

    def _step(self) -> None:
        try:
            self._waiting = self._coro.send(None)
        except StopIteration as stop:
            self._done, self._value = True, stop.value

    async def result(self) -> Any:
        """The call's value (or its exception), once Redis answered."""
        while not self._done:
            waiting = self._waiting
            if not waiting.done():
                # Waiting only; the call itself reads the answer (or raises it) below.
                await asyncio.wait([waiting])
            self._step()
        return self._value


class _Replayer:
    """Turns rows into script calls, pipelines them, and tallies the refusals."""

    def __init__(self, calls: ReplayCalls, store: LedgerStore, proposed: Proposed,
                 since_ms: int | None, folded: Mapping[str, int]) -> None:
        self.calls, self.store, self.proposed = calls, store, proposed
        self.since_ms, self.folded = since_ms, folded
        self.created: set[str] = set()
        self.reports: dict[str, AgentReport] = {}
        self.tools: dict[tuple[int, str], str] = {}  # (partition, tool) -> category copied
        self.tool_version = 0
        self.tasks: set[tuple[str, str]] = set()
        self.holds: set[str] = set()  # holds taken in the replayed range
        self.refused_holds: set[str] = set()
        self.refused_charges: set[str] = set()
        self.refunded: dict[str, int] = {}
        self.looped: set[str] = set()  # agents with a proposed loop breaker
        self.pending: list[tuple[Coroutine[Any, Any, Any], Handler | None]] = []
        self.pending_charges: set[str] = set()
        self.inflight: collections.deque[tuple[
            list[_Started], list[tuple[Coroutine[Any, Any, Any], Handler | None]], set[str]]
        ] = collections.deque()
        self.partitions: set[int] = set()
        self.clock_ms: int | None = None
        self.rows = 0

    # -- plumbing

    def _send(self, call: Coroutine[Any, Any, Any], handler: Handler | None = None) -> None:
        self.pending.append((call, handler))

    async def flush(self, settle: bool = False) -> None:
        """Send every queued call in one go (they leave in order, on one connection), and
        read the answers of the batch sent before it, in order: one batch is in flight
        while the next is built, so Redis and Python work at the same time. ``settle``:
        read every answer (a refund must know whether its charge was refused)."""
        if self.pending:
            pending, self.pending = self.pending, []
            charges, self.pending_charges = self.pending_charges, set()
            partitions, self.partitions = self.partitions, set()
            sent = [_Started(call) for call, _ in pending]
            sent.append(_Started(self.calls.drop_outputs(partitions)))
            self.inflight.append((sent, pending, charges))
        while self.inflight and (settle or len(self.inflight) > 1):
            sent, pending, _ = self.inflight[0]
            replies = [await call.result() for call in sent]
            self.inflight.popleft()
            for (_, handler), reply in zip(pending, replies, strict=False):
                if handler is not None:
                    handler(reply)

    def _unsettled(self, charge_id: str) -> bool:
        """Whether the answer to this charge (or capture) is not read yet."""
        return charge_id in self.pending_charges or any(
            charge_id in charges for _, _, charges in self.inflight)

    def _clock(self, at_ms: int) -> None:
        if at_ms != self.clock_ms:
            self.clock_ms = at_ms
            self._send(self.calls.set_clock(at_ms))

    def _expect_ok(self, what: str) -> Handler:
        def check(reply: Any) -> None:
            if isinstance(reply, Refused):
                raise ReplayError(f"{what}: the script refused it ({reply.code.name})")
        return check

    # -- agents, tools and tasks in the scratch store

    def _agent(self, row: Row) -> None:
        agent = row.agent
        if agent not in self.created:
            self.created.add(agent)
            if self.proposed.for_agent(agent).get("loop") is not None:
                self.looped.add(agent)
            self._send(self.calls.restore_agent(agent, self.folded.get(agent, 0), 0, False,
                                                row.at_ms, {}),
                       self._expect_ok(f"agent {agent}"))
            if self.since_ms is not None and row.at_ms < self.since_ms:
                self._limits(agent, loosened(self.proposed.for_agent(agent)))
        if agent not in self.reports and (self.since_ms is None or row.at_ms >= self.since_ms):
            self.reports[agent] = AgentReport(agent)
            self._limits(agent, self.proposed.for_agent(agent))
        self.partitions.add(self.calls.agent_keys(agent).partition)

    def _limits(self, agent: str, changes: Changes) -> None:
        pairs = [item for name, value in changes.items() for item in limit_pair(name, value)]
        self._send(self.calls.set_limits(agent, ids.uuid7(), MICROS_MAX,
                                         orjson.dumps(dict(changes)).decode(), pairs),
                   self._expect_ok(f"limits of {agent}"))

    def _tool(self, row: Row) -> str:
        """The row's tool in the agent's partition copy of the scratch catalog, priced
        variable under the row's category (re-copied when a later row names another)."""
        tool, category = row.tool or "", row.category or ""
        where = (self.calls.agent_keys(row.agent).partition, tool)
        if self.tools.get(where) != category:
            self.tools[where] = category
            self.tool_version += 1
            self._send(self.calls.tool_copy(where[0], tool, self.tool_version,
                                            (0, category, "variable"), True),
                       self._expect_ok(f"tool {tool}"))
        return tool

    def _task(self, row: Row) -> str | None:
        if row.task is None:
            return None
        if (row.agent, row.task) not in self.tasks:
            self.tasks.add((row.agent, row.task))
            self._send(self.calls.task_open(row.agent, row.task, MICROS_MAX // 2, MICROS_MAX,
                                            TASK_TTL_MS, TASK_TTL_MS, "", {}),
                       self._expect_ok(f"task {row.task}"))
        return row.task

    # -- rows

    def _refused(self, row: Row, reply: Refused, amount_micros: int) -> None:
        if reply.code not in REFUSAL_CODES:
            raise ReplayError(f"entry {row.entry_id} ({row.kind}): the script answered "
                              f"{reply.code.name}")
        error: GatewayError = refusal(reply, agent=row.agent, tool=row.tool or "",
                                      category=row.category or "")
        limit = str(error.details.get("limit") or error.code)
        report = self.reports.get(row.agent)
        if report is None:  # a refusal in the warm-up: its rows ran with no limit
            raise ReplayError(f"entry {row.entry_id}: refused before --since ({limit})")
        report.add(limit, amount_micros)

    async def row(self, row: Row) -> None:
        self.rows += 1
        if row.kind == "refund" and self._unsettled(row.ref or ""):
            await self.flush(settle=True)  # was the refunded charge refused? it decides
        self._clock(row.at_ms)
        self._agent(row)
        handle = _ROW_HANDLERS[row.kind]
        await handle(self, row)
        if len(self.pending) >= BATCH_CALLS_MAX:
            await self.flush()

    async def _charge(self, row: Row) -> None:
        tool, task = self._tool(row), self._task(row)
        self.pending_charges.add(row.entry_id)

        def done(reply: ChargeReply | Refused) -> None:
            if isinstance(reply, Refused):
                self.refused_charges.add(row.entry_id)
                self._refused(row, reply, row.amount)

        self._send(self.calls.charge(row.agent, row.entry_id, tool, row.amount, MICROS_MAX,
                                     None, row.metadata or "", task, self._digest(row)), done)

    def _digest(self, row: Row) -> str:
        """Only an agent with a loop breaker reads it (hashing costs every row otherwise;
        the warm-up's loop breaker is the proposed one, loosened)."""
        return _digest(row) if row.agent in self.looped else ""

    async def _hold(self, row: Row) -> None:
        tool, task = self._tool(row), self._task(row)
        hold_id = row.hold_id or ""
        self.holds.add(hold_id)
        ttl_ms = max((row.expires_at_ms or row.at_ms) - row.at_ms, 1)

        def done(reply: HoldReply | Refused) -> None:
            if isinstance(reply, Refused):
                self.refused_holds.add(hold_id)
                self._refused(row, reply, row.amount)

        self._send(self.calls.hold(row.agent, row.entry_id, hold_id, tool, row.amount,
                                   MICROS_MAX, ttl_ms, ttl_ms, None, row.metadata or "", task,
                                   self._digest(row)), done)

    async def _capture(self, row: Row) -> None:
        hold_id = row.hold_id or ""
        if hold_id not in self.holds:  # taken before the warm-up: its balance is folded
            self._credit(row, (row.held or 0) - row.amount)
            return
        self.pending_charges.add(row.entry_id)
        self._tool(row)

        def done(reply: CaptureReply | Refused) -> None:
            if not isinstance(reply, Refused) or self._skipped_hold(row, reply):
                return
            self.refused_charges.add(row.entry_id)
            self._refused(row, reply, row.amount)

        self._send(self.calls.capture(row.agent, row.entry_id, hold_id, row.amount,
                                      MICROS_MAX, None, row.metadata or ""), done)
        # A refused capture leaves the hold open: release it, as invoke does on a failure
        # (after a capture that succeeded this finds the hold closed and writes nothing).
        self._send(self.calls.release(row.agent, ids.uuid7(), hold_id, None),
                   lambda reply: None)

    async def _release(self, row: Row) -> None:
        hold_id = row.hold_id or ""
        if hold_id not in self.holds:
            self._credit(row, row.amount)
            return

        def done(reply: Any) -> None:
            if isinstance(reply, Refused) and not self._skipped_hold(row, reply):
                raise ReplayError(f"entry {row.entry_id} ({row.kind}): the script answered "
                                  f"{reply.code.name}")

        self._send(self.calls.release(row.agent, row.entry_id, hold_id, None), done)

    def _skipped_hold(self, row: Row, reply: Refused) -> bool:
        """A hold the replay refused is not there to settle; one a refused capture released
        is closed already."""
        hold_id = row.hold_id or ""
        return (reply.code == Code.HOLD_NOT_FOUND and hold_id in self.refused_holds) or (
            reply.code == Code.HOLD_CLOSED)

    def _credit(self, row: Row, amount_micros: int) -> None:
        if amount_micros > 0:
            kind = "grant" if row.kind == "grant" else "fund"
            self._send(self.calls.fund(row.agent, row.entry_id, amount_micros, MICROS_MAX,
                                       MICROS_MAX, kind, None, ""),
                       self._expect_ok(f"entry {row.entry_id} ({row.kind})"))

    async def _money_in(self, row: Row) -> None:
        self._credit(row, row.amount)

    async def _money_out(self, row: Row) -> None:
        if row.amount > 0:
            self._send(self.calls.debit(row.agent, row.entry_id, row.amount, MICROS_MAX, None,
                                        row.reason or row.kind),
                       self._expect_ok(f"entry {row.entry_id} ({row.kind})"))

    async def _refund(self, row: Row) -> None:
        ref = row.ref or ""
        if ref in self.refused_charges:
            return  # the replay never took the money this refund gave back
        charge = await self.store.entry(ref)
        if charge is None or charge.amount is None:
            self._credit(row, row.amount)
            return
        done = self.refunded.get(ref, 0)
        self.refunded[ref] = done + row.amount
        charge_ref = ChargeRef(ref, row.agent, charge.tool or "", charge.category or "",
                               charge.amount, charge.at_ms, done, charge.task)
        self._send(self.calls.refund(charge_ref, row.entry_id, row.amount, MICROS_MAX,
                                     MICROS_MAX, None, row.reason or ""),
                   self._expect_ok(f"entry {row.entry_id} (refund)"))


def loosened(changes: Changes) -> dict[str, int | str | LoopLimit | None]:
    """The warm-up's limits: the proposed ones with every cap out of reach. The scripts count
    the walls beyond the balance (call caps, hourly, weekly and monthly windows, the loop
    breaker's list) only for an agent that sets them, so the warm-up sets the same walls,
    none of which can refuse, and the windows at ``since`` hold what was really spent."""
    out: dict[str, int | str | LoopLimit | None] = {}
    for name, value in changes.items():
        if value is None or name in ("webhook_url", "low_balance"):
            out[name] = value
        elif isinstance(value, LoopLimit):
            out[name] = LoopLimit(LOOP_REPEATS_MAX, value.window_s, "refuse")
        elif name == "require_task":
            out[name] = None
        elif ".calls." in f".{name}":
            out[name] = CALLS_MAX
        else:
            out[name] = AMOUNT_LOOSE_MICROS
    return out


def _digest(row: Row) -> str:
    """The loop breaker's digest of the call: its tool and metadata, as the live call
    computed it when it gave no ``fingerprint`` (the ledger does not keep one)."""
    if row.metadata is None:
        return loop_digest(row.tool or "", None, None)
    try:
        meta = orjson.loads(row.metadata) if row.metadata else None
    except orjson.JSONDecodeError:
        meta = None
    return loop_digest(row.tool or "", None, meta if isinstance(meta, dict) else None)


_ROW_HANDLERS: dict[str, Callable[[_Replayer, Row], Awaitable[None]]] = {
    "charge": _Replayer._charge, "hold": _Replayer._hold, "capture": _Replayer._capture,
    "release": _Replayer._release, "expire": _Replayer._release,
    "refund": _Replayer._refund, **dict.fromkeys(CREDIT_KINDS, _Replayer._money_in),
    **dict.fromkeys(DEBIT_KINDS, _Replayer._money_out),
}


async def replay(store: LedgerStore, proposed: Proposed, agent: str | None = None,
                 since_ms: int | None = None, scratch_dir: Path | None = None
                 ) -> ReplayResult:
    """Replay the ledger under ``proposed`` on a scratch server started in a temporary folder
    (under ``scratch_dir`` when given) and removed after; per agent, what was refused."""
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="iou-replay-", dir=scratch_dir))
    server = start_scratch(folder)
    conn = RedisConnection(parse_redis_url(server.url))
    try:
        calls = ReplayCalls(conn, PARTITIONS)
        await calls.scripts.preload()
        warm_ms = None if since_ms is None else warm_start_ms(since_ms)
        folded = {} if warm_ms is None else await _folded_balances(store, agent, warm_ms)
        replayer = _Replayer(calls, store, proposed, since_ms, folded)
        for stream in await _streams(store, agent):
            async for page in _rows(store, stream, agent, warm_ms):
                for row in page:
                    await replayer.row(row)
        await replayer.flush(settle=True)
        scratch_cpu_s = await calls.server_cpu_s()
    finally:
        conn.close()
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    reports = sorted(replayer.reports.values(), key=lambda r: r.agent)
    return ReplayResult(reports, replayer.rows, time.monotonic() - started, scratch_cpu_s)


async def run_replay(settings: Settings, proposed: Proposed, agent: str | None,
                     since_ms: int | None) -> ReplayResult:
    """``iou replay``: the configured ledger, read only; the scratch server in the data dir
    (a unix socket path there stays short)."""
    store = open_store(settings)
    try:
        return await replay(store, proposed, agent, since_ms)
    finally:
        await store.close()
