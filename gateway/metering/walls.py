"""The walls beyond the balance as Python reads them: the periods of a time, numbered as
lua/_lib.lua's ``periods`` numbers them, and the usage an agent's walls hash holds at a time
(what the scripts would sum for a call then). The scripts alone write the hash; iou recover
(gateway/ledger/recover_walls.py) and the agent detail route read through here."""

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


def usage(counters: Mapping[str, str], now_ms: int) -> dict[str, int]:
    """What the walls hash ``counters`` holds at ``now_ms``, by wall and scope: keys
    '<wall><scope>' ('hr', 'wk:llm', 'nd/web_browse', ...); spend walls count spent and held
    micros, call walls calls."""
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
