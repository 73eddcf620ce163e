"""The ``walls`` field of GET /v1/agents/{agent}: each wall beyond the balance that the
agent's limits set, with what it holds now and its cap, in the limits object's shape:

    {"hourly": {"used": "0.14", "max": "0.2"}, "weekly": ..., "monthly": ...,
     "calls": {"per_minute": {"used": 3, "max": 5}, ...},
     "categories": {"llm": {"hourly": {...}, "calls": {...}}},
     "tools": {"web_browse": {"calls": {"per_day": {"used": 2, "max": 10}}}}}

Spend walls count spent and held (what a call is checked against: the rolling last 60
minutes, the ISO week, the calendar month, UTC); call walls count calls (free ones too) in
the current UTC minute, clock hour and day."""

from __future__ import annotations

from typing import Any

from gateway.metering.models import CallCaps, Limits
from gateway.metering.money import format_amount

SPEND_WALLS = (("hourly", "hr"), ("weekly", "wk"), ("monthly", "mo"))
CALL_WALLS = (("per_minute", "nm"), ("per_hour", "nh"), ("per_day", "nd"))


def walls_payload(limits: Limits, used: dict[str, int]) -> dict[str, Any]:
    """The walls ``limits`` set, each with its usage from ``used`` (Engine.walls_used)."""
    out: dict[str, Any] = _spend(limits.hourly_micros, limits.weekly_micros,
                                 limits.monthly_micros, used, "")
    calls = _calls(limits.calls, used, "")
    if calls:
        out["calls"] = calls
    categories: dict[str, Any] = {}
    for name, c in limits.categories.items():
        one = _spend(c.hourly_micros, c.weekly_micros, c.monthly_micros, used, ":" + name)
        if _calls(c.calls, used, ":" + name):
            one["calls"] = _calls(c.calls, used, ":" + name)
        if one:
            categories[name] = one
    if categories:
        out["categories"] = categories
    tools = {name: {"calls": _calls(t.calls, used, "/" + name)}
             for name, t in limits.tools.items() if _calls(t.calls, used, "/" + name)}
    if tools:
        out["tools"] = tools
    return out


def _spend(hourly: int | None, weekly: int | None, monthly: int | None, used: dict[str, int],
           scope: str) -> dict[str, Any]:
    caps = dict(zip((name for name, _ in SPEND_WALLS), (hourly, weekly, monthly), strict=True))
    return {name: {"used": format_amount(max(used.get(wall + scope, 0), 0)),
                   "max": format_amount(cap)}
            for name, wall in SPEND_WALLS if (cap := caps[name]) is not None}


def _calls(caps: CallCaps, used: dict[str, int], scope: str) -> dict[str, Any]:
    values = {"per_minute": caps.per_minute, "per_hour": caps.per_hour,
              "per_day": caps.per_day}
    return {name: {"used": max(used.get(wall + scope, 0), 0), "max": cap}
            for name, wall in CALL_WALLS if (cap := values[name]) is not None}
