"""iou recover's rebuild of the walls beyond the balance: lua/_lib.lua's walls hash for the
periods current at recovery, from the ledger: one record per scope (gateway/metering/walls.py),
each of the minute of the recovery, and the earlier minutes of the rolling hour.

- spending (agent and category): the current minute's ``H``, the earlier minutes of the
  rolling hour (fields ``H<minute>`` and their sum ``R``), the ISO week's ``W`` and the calendar
  month's ``M``: charges and captures, less the refunds of those same calls (refund.lua gives
  back to the period its charge was in);
- the call counts ``N``, ``O``, ``D`` of the current minute, hour and day (agent, category,
  tool): charges (free ones too) and holds, each counted once, when it was taken;
- the held counters ``h``, ``w``, ``m`` of the open holds taken while the walls were on, which
  are restored marked as counted (xw) so that closing one gives back.

The scripts count only while the agent's walls are on (its x flag), so only the calls after
the limits event that last turned them on count: an agent whose walls were set this morning
meets them with this morning's calls only, as before the wipe. (Walls turned off and on again
within a period lose the counts of before the break: the ledger has them, the scripts kept
them, but the rebuild starts at the last limits event that turned them on.)"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import orjson

from gateway.ledger.store import LedgerStore, OpenHold
from gateway.metering.limits import keeps_walls
from gateway.metering.walls import HOUR_MINUTES, MINUTE_MS, Periods, periods, record_text

MINUTES_A_DAY = 1440

# Each agent's limits events in stream order (each carries the whole state, ``l.<field>``).
LIMITS_EVENTS = """SELECT agent, at_ms, stream_ms, stream_seq, data FROM ledger_entries
    WHERE kind = 'limits' ORDER BY agent, stream_ms, stream_seq"""
# One agent's calls since a time and after a stream position, by kind, tool, category and
# minute (the coarsest grain every period boundary falls on).
WALL_ROWS = """SELECT kind, tool, category, at_ms / 60000, COUNT(*), SUM(amount)
    FROM ledger_entries
    WHERE agent = ? AND kind IN ('charge', 'capture', 'hold') AND at_ms >= ?
        AND (stream_ms > ? OR (stream_ms = ? AND stream_seq > ?))
    GROUP BY kind, tool, category, at_ms / 60000"""
# The refunds of those calls, by the category and minute of the refunded call.
WALL_REFUNDS = """SELECT c.category, c.at_ms / 60000, SUM(r.amount)
    FROM ledger_entries r JOIN ledger_entries c ON c.entry_id = r.ref
    WHERE r.kind = 'refund' AND r.agent = ? AND r.at_ms >= ? AND c.at_ms >= ?
        AND c.kind IN ('charge', 'capture')
        AND (c.stream_ms > ? OR (c.stream_ms = ? AND c.stream_seq > ?))
    GROUP BY c.category, c.at_ms / 60000"""


@dataclass(frozen=True)
class WallsOn:
    """The limits event that last turned an agent's walls on: its time and stream position."""

    at_ms: int
    stream_ms: int
    stream_seq: int


def _record() -> dict[str, int]:
    return defaultdict(int)


@dataclass
class Walls:
    """One agent's rebuilt walls: the records by scope and the earlier minutes of the hour
    while they are built, then ``counters``, the hash's fields; and the open holds counted."""

    records: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(_record))
    minutes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    counters: dict[str, str] = field(default_factory=dict)
    holds: dict[str, tuple[int, int]] = field(default_factory=dict)  # hold id -> week, month


async def walls_since(store: LedgerStore) -> dict[str, WallsOn]:
    """Each agent whose walls are on at the end of its limits events, with the event that
    turned them on (an event without walls turns them off: each carries the whole state)."""
    out: dict[str, WallsOn] = {}
    for agent, at_ms, stream_ms, stream_seq, raw in await store.query(LIMITS_EVENTS, []):
        data = orjson.loads(raw) if raw else {}
        if not any(k.startswith("l.") and keeps_walls(k[2:]) for k in data):
            out.pop(agent, None)
        elif agent not in out:
            out[agent] = WallsOn(int(at_ms), int(stream_ms), int(stream_seq))
    return out


async def rebuild(store: LedgerStore, agent: str, on: WallsOn, now: Periods,
                  open_holds: list[OpenHold]) -> Walls:
    """The walls hash of ``agent`` at ``now``, from its calls after ``on``."""
    since = min(now.week_start_ms, now.month_start_ms)
    after = [on.stream_ms, on.stream_ms, on.stream_seq]
    walls = Walls()
    spent: dict[tuple[str, int], int] = defaultdict(int)
    for kind, tool, category, minute, count, total in await store.query(
            WALL_ROWS, [agent, since, *after]):
        if kind != "hold":
            spent[(category, int(minute))] += int(total)
        if kind != "capture":
            _count_calls(walls, now, tool, category, int(minute), int(count))
    for category, minute, amount in await store.query(WALL_REFUNDS,
                                                      [agent, since, since, *after]):
        spent[(category, int(minute))] -= int(amount)
    for (category, minute), micros in spent.items():
        # Never below zero, as refund.lua gives back.
        _count_spent(walls, now, category, minute, max(micros, 0))
    for h in open_holds:
        if h.at_ms >= on.at_ms:
            _count_held(walls, now, h)
    walls.records[""]["T"] = now.minute  # the agent's record marks the hash as records
    walls.counters = {"@" + scope: record_text({**r, "T": now.minute}, scope)
                      for scope, r in walls.records.items()}
    # R's minutes are never 0 (the scripts delete a minute refunded to zero).
    walls.counters.update({f: str(v) for f, v in walls.minutes.items() if v != 0})
    return walls


def _count_spent(walls: Walls, now: Periods, category: str, minute: int, micros: int) -> None:
    start_ms = minute * MINUTE_MS
    for scope in ("", ":" + category):
        r = walls.records[scope]
        if minute == now.minute:
            r["H"] += micros
        elif minute > now.minute - HOUR_MINUTES and micros > 0:
            walls.minutes[f"H{minute}{scope}"] += micros
            r["R"] += micros
        if start_ms >= now.week_start_ms:
            r["W"] += micros
        if start_ms >= now.month_start_ms:
            r["M"] += micros


def _count_calls(walls: Walls, now: Periods, tool: str, category: str, minute: int,
                 count: int) -> None:
    for scope in ("", ":" + category, "/" + tool):
        r = walls.records[scope]
        if minute == now.minute:
            r["N"] += count
        if minute // HOUR_MINUTES == now.hour:
            r["O"] += count
        if minute // MINUTES_A_DAY == now.day:
            r["D"] += count


def _count_held(walls: Walls, now: Periods, h: OpenHold) -> None:
    taken = periods(h.at_ms)
    walls.holds[h.hold_id] = (taken.week, taken.month)
    for scope in ("", ":" + h.category):
        r = walls.records[scope]
        r["h"] += h.amount
        if taken.week == now.week:
            r["w"] += h.amount
        if taken.month == now.month:
            r["m"] += h.amount
