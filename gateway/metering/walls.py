"""The walls beyond the balance as Python reads them: the periods of a time, numbered as
lua/_lib.lua's ``periods`` numbers them, the records of the walls hash, and the usage an
agent's walls hash holds at a time (what the scripts would sum for a call then). The scripts
alone write the hash; iou recover (gateway/ledger/recover_walls.py) and the agent detail
route read and build it through here.

The hash holds one record per scope ('@' the agent, '@:<category>', '@/<tool>'): the minute T
it was last written in and the counters of T's periods, "T N O D H R h W w M m" (a tool's
"T N O D"); and the earlier minutes of T's rolling hour as fields 'H<minute>' and
'H<minute>:<category>' (R is their sum). A hash of the layout before records (one field per
counter and period, '<kind><period><scope>') is read as it stands until a script migrates it."""

from __future__ import annotations

import datetime
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
HOUR_MINUTES = 60
EPOCH = datetime.date(1970, 1, 1)
# <kind><period><scope>: scope '' (the agent), ':<category>' or '/<tool>'.
COUNTER_RE = re.compile(r"([A-Za-z])(\d*)(.*)")
RECORD = ("T", "N", "O", "D", "H", "R", "h", "W", "w", "M", "m")
MINUTE_RE = re.compile(r"H(\d+)(:.*)?")


@dataclass(frozen=True)
class Periods:
    """The periods a time falls in."""

    minute: int
    hour: int
    day: int
    week: int  # weeks since the Monday before 1970-01-01 (ISO weeks, UTC)
    week_start_ms: int
    month: int  # year * 12 + month - 1
    month_start_ms: int


def periods(ms: int) -> Periods:
    day = ms // DAY_MS
    week = (day + 3) // 7  # day 0 was a Thursday
    date = EPOCH + datetime.timedelta(days=day)
    month_start = (datetime.date(date.year, date.month, 1) - EPOCH).days * DAY_MS
    return Periods(ms // MINUTE_MS, ms // HOUR_MS, day, week, (week * 7 - 3) * DAY_MS,
                   date.year * 12 + date.month - 1, month_start)


def _wall(kind: str, period: int | None, p: Periods) -> str | None:
    """The wall a counter belongs to at ``p`` ('hr', 'wk', 'mo', 'nm', 'nh', 'nd'), None when
    it is stale (lua/_lib.lua's counter_wall)."""
    if kind == "h":
        return "hr"
    if period is None:
        return None
    live = {"H": ("hr", period > p.minute - HOUR_MINUTES), "W": ("wk", period == p.week),
            "w": ("wk", period == p.week), "M": ("mo", period == p.month),
            "m": ("mo", period == p.month), "N": ("nm", period == p.minute),
            "O": ("nh", period == p.hour), "D": ("nd", period == p.day)}.get(kind)
    return live[0] if live and live[1] else None


def record_text(record: Mapping[str, int], scope: str) -> str:
    """A record as the walls hash keeps it (a tool's keeps its calls only)."""
    names = RECORD[:4] if scope.startswith("/") else RECORD
    return " ".join(str(record.get(name, 0)) for name in names)


def usage(counters: Mapping[str, str], now_ms: int) -> dict[str, int]:
    """What the walls hash ``counters`` holds at ``now_ms``, by wall and scope: keys
    '<wall><scope>' ('hr', 'wk:llm', 'nd/web_browse', ...); spend walls count spent and held
    micros, call walls calls."""
    if "@" not in counters:
        return _usage_per_period(counters, now_ms)
    p = periods(now_ms)
    out: dict[str, int] = defaultdict(int)
    for name, value in counters.items():
        minute = MINUTE_RE.fullmatch(name)
        if minute is not None and int(minute.group(1)) > p.minute - HOUR_MINUTES:
            out["hr" + (minute.group(2) or "")] += int(value)
        elif name.startswith("@"):
            _record_usage(out, name[1:], dict(zip(RECORD, map(int, value.split()),
                                                  strict=False)), p)
    return dict(out)


def _record_usage(out: dict[str, int], scope: str, r: dict[str, int], p: Periods) -> None:
    """What one record holds at ``p``: its periods that are p's, the held always."""
    t = periods(r["T"] * MINUTE_MS)
    out["nm" + scope] += r["N"] if t.minute == p.minute else 0
    out["nh" + scope] += r["O"] if t.hour == p.hour else 0
    out["nd" + scope] += r["D"] if t.day == p.day else 0
    if "H" in r:
        out["hr" + scope] += r["h"] + (r["H"] if t.minute > p.minute - HOUR_MINUTES else 0)
        out["wk" + scope] += r["W"] + r["w"] if t.week == p.week else 0
        out["mo" + scope] += r["M"] + r["m"] if t.month == p.month else 0


def _usage_per_period(counters: Mapping[str, str], now_ms: int) -> dict[str, int]:
    """usage() of a hash of the layout before records."""
    p = periods(now_ms)
    out: dict[str, int] = defaultdict(int)
    for name, value in counters.items():
        matched = COUNTER_RE.fullmatch(name)
        if matched is None or not value.lstrip("-").isdigit():
            continue
        kind, period, scope = matched.groups()
        wall = _wall(kind, int(period) if period else None, p)
        if wall is not None:
            out[wall + scope] += int(value)
    return dict(out)
