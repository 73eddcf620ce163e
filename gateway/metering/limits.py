"""Limits: the agent hash's fields <-> the typed Limits, and validated changes.

Field names in the agent hash (lua/set_limits.lua checks them again): ``pc`` per call,
``dl`` daily, ``hr`` rolling hour, ``wk`` ISO week, ``mo`` calendar month, ``nm`` / ``nh`` /
``nd`` calls a minute / hour / day; a category's as ``c:<category>:<cap>``; a tool's per-call
and call caps as ``t:<tool>:pc|nm|nh|nd``; ``low`` and ``wh`` for the low-balance threshold
and the webhook URL; ``rt`` = "1" for require_task (paid calls must name a task); ``lp`` the
loop breaker as ``<repeats>/<window_s>/<r|f>``. Shadow limits (evaluated, never refusing) are
the same caps and ``rt`` prefixed ``s.``, with ``sx`` = "1" while any is set; the sums of
would-be refusals are ``sn:<limit>`` (calls) and ``sa:<limit>`` (micros).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway.metering import money
from gateway.metering.errors import InvalidRequest
from gateway.metering.models import CallCaps, CategoryLimits, Limits, LoopLimit, ToolLimits

NAME_RE = re.compile(r"[a-z0-9_.-]{1,64}", re.ASCII)
# Said in words, not as a character list: a list ending in "." read as ". ." in the message.
NAME_RULE = "must be 1 to 64 characters, each a-z, 0-9, - (hyphen), _ or . (dot)"
HOLD_TTL_S_MAX = 3600  # the longest hold a caller may ask for
LIMIT_FIELDS = {"per_call": "pc", "daily": "dl", "low_balance": "low"}
# Spend caps (micros) by their name in the limits object.
SPEND_CAPS = {"per_call": "pc", "daily": "dl", "hourly": "hr", "weekly": "wk", "monthly": "mo"}
# Call caps (counts) under "calls".
CALL_CAPS = {"per_minute": "nm", "per_hour": "nh", "per_day": "nd"}
CALLS_MAX = 1_000_000_000
# The loop breaker's bounds (lua/_lib.lua LOOP_REPEATS_MAX, LOOP_WINDOW_S_MAX): a loop list
# keeps at most this many times, for at most a day.
LOOP_REPEATS_MAX = 1000
LOOP_WINDOW_S_MAX = 86_400
LOOP_ACTIONS = {"refuse": "r", "freeze": "f"}
LOOP_RE = re.compile(r"([0-9]{1,16})/([0-9]{1,16})/([rf])", re.ASCII)
# Every cap field of the agent hash (the agent's own; with a c:/t: prefix for the others).
CAP_FIELDS = frozenset(SPEND_CAPS.values()) | frozenset(CALL_CAPS.values())


def check_name(field: str, value: str) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise InvalidRequest(field, NAME_RULE)
    return value


def is_limit_field(field: str) -> bool:
    """Whether an agent-hash field holds a limit (the ledger's limits events carry these)."""
    if field in CAP_FIELDS or field in ("low", "wh", "rt", "lp"):
        return True
    parts = field.split(":")
    return len(parts) == 3 and parts[0] in ("c", "t") and parts[2] in CAP_FIELDS


# Limits a shadow limits object cannot hold: they refuse nothing (low_balance, webhook_url), or
# act on their own (the loop breaker freezes), or nest.
NOT_SHADOWED = ("low_balance", "webhook_url", "loop", "shadow")


def is_shadow_field(field: str) -> bool:
    """Whether an agent-hash field holds a shadow limit (``s.`` + a cap field, or ``s.rt``)."""
    inner = field[2:]
    return field.startswith("s.") and (inner == "rt" or (
        is_limit_field(inner) and inner not in ("low", "wh", "lp")))


def keeps_walls(field: str) -> bool:
    """A wall, enforced or shadow: while one is set the scripts keep the walls counters."""
    return is_wall_field(field) or (is_shadow_field(field) and is_wall_field(field[2:]))


def shadow_sums(a: Mapping[str, str]) -> dict[str, tuple[int, int]]:
    """The would-be refusals of an agent's shadow limits: limit -> (calls, micros)."""
    return {f[3:]: (int(v), int(a.get("sa:" + f[3:], "0")))
            for f, v in sorted(a.items()) if f.startswith("sn:")}


def is_wall_field(field: str) -> bool:
    """A cap beyond per-call and daily caps: while one is set, the agent's x flag is '1'."""
    return is_limit_field(field) and field not in ("low", "wh", "rt", "lp") and (
        field.startswith("t:") or field[-2:] not in ("pc", "dl"))


def _calls(caps: Mapping[str, int]) -> CallCaps:
    return CallCaps(caps.get("nm"), caps.get("nh"), caps.get("nd"))


def _category(caps: Mapping[str, int]) -> CategoryLimits:
    return CategoryLimits(caps.get("pc"), caps.get("dl"), caps.get("hr"), caps.get("wk"),
                          caps.get("mo"), _calls(caps))


def limits_of(a: Mapping[str, str]) -> Limits:
    scoped: dict[str, dict[str, dict[str, int]]] = {"c": {}, "t": {}}
    for field, value in a.items():
        if field[:2] in ("c:", "t:") and is_limit_field(field):
            scope, name, which = field.split(":")
            scoped[scope].setdefault(name, {})[which] = int(value)
    own = {f: int(a[f]) for f in CAP_FIELDS if f in a}
    low = int(a["low"]) if a.get("low") not in (None, "0") else None
    return Limits(
        per_call_micros=own.get("pc"), daily_micros=own.get("dl"),
        categories={c: _category(v) for c, v in sorted(scoped["c"].items())},
        low_balance_micros=low, webhook_url=a.get("wh"),
        hourly_micros=own.get("hr"), weekly_micros=own.get("wk"), monthly_micros=own.get("mo"),
        calls=_calls(own),
        tools={t: ToolLimits(v.get("pc"), _calls(v)) for t, v in sorted(scoped["t"].items())},
        require_task=a.get("rt") == "1", loop=loop_of(a.get("lp")), shadow=_shadow_of(a))


def _shadow_of(a: Mapping[str, str]) -> Limits | None:
    """The shadow limits of an agent hash, None when it has none."""
    if a.get("sx") != "1":
        return None
    inner = {f[2:]: v for f, v in a.items() if is_shadow_field(f)}
    return limits_of(inner) if inner else None


def loop_of(field: str | None) -> LoopLimit | None:
    """The loop breaker of an agent-hash ``lp`` field (None when unset, or out of the bounds
    the scripts read: lua/_lib.lua loop_setting)."""
    m = LOOP_RE.fullmatch(field or "")
    if (m is None or not 1 <= int(m[1]) <= LOOP_REPEATS_MAX
            or not 1 <= int(m[2]) <= LOOP_WINDOW_S_MAX):
        return None
    action = "freeze" if m[3] == "f" else "refuse"
    return LoopLimit(int(m[1]), int(m[2]), action)


def loop_field(loop: LoopLimit) -> str:
    """The ``lp`` field of a loop breaker, after checking its bounds."""
    if not money.is_whole(loop.repeats, 1, LOOP_REPEATS_MAX):
        raise InvalidRequest("loop.repeats", f"must be a whole number from 1 to "
                                             f"{LOOP_REPEATS_MAX}")
    if not money.is_whole(loop.window_s, 1, LOOP_WINDOW_S_MAX):
        raise InvalidRequest("loop.window_s", f"must be a whole number of seconds from 1 to "
                                              f"{LOOP_WINDOW_S_MAX}")
    if loop.action not in LOOP_ACTIONS:
        raise InvalidRequest("loop.action", "must be refuse or freeze")
    return f"{loop.repeats}/{loop.window_s}/{LOOP_ACTIONS[loop.action]}"


def _cap_field(name: str) -> str:
    """The agent-hash field of one limit name (``daily``, ``calls.per_day``,
    ``categories.llm.hourly``, ``tools.web_browse.calls.per_day``, ...)."""
    if name in LIMIT_FIELDS:
        return LIMIT_FIELDS[name]
    if name in SPEND_CAPS:
        return SPEND_CAPS[name]
    if name.startswith("calls.") and name[6:] in CALL_CAPS:
        return CALL_CAPS[name[6:]]
    group, _, rest = name.partition(".")
    if group not in ("categories", "tools"):
        raise InvalidRequest(name, "is not a known limit")
    spend = SPEND_CAPS if group == "categories" else {"per_call": "pc"}
    # Category and tool names may hold dots themselves, so the cap is read from the end.
    entity, _, calls_cap = rest.rpartition(".calls.")
    if entity and calls_cap in CALL_CAPS:
        return _scoped_field(group, entity, CALL_CAPS[calls_cap])
    entity, _, spend_cap = rest.rpartition(".")
    if entity and spend_cap in spend:
        return _scoped_field(group, entity, spend[spend_cap])
    raise InvalidRequest(name, "is not a known limit")


def _scoped_field(group: str, entity: str, which: str) -> str:
    check_name("tool" if group == "tools" else "category", entity)
    return f"{group[0]}:{entity}:{which}"


def _shadow_pair(name: str, value: int | str | LoopLimit | None) -> tuple[str, str]:
    """A shadow limit's field: the enforced one's, prefixed ``s.``."""
    inner = name[7:]
    if inner.split(".")[0] in NOT_SHADOWED:
        raise InvalidRequest(name, "is not a limit shadow limits can hold")
    field, text = limit_pair(inner, value)
    return ("s." + field, text)


def limit_pair(name: str, value: int | str | LoopLimit | None) -> tuple[str, str]:
    """The agent-hash field and value of one limit change ('' removes the field); a shadow
    limit is named ``shadow.<limit>``."""
    if name.startswith("shadow."):
        return _shadow_pair(name, value)
    if name == "loop":
        if value is not None and not isinstance(value, LoopLimit):
            raise InvalidRequest("loop", "must be an object or null")
        return ("lp", "" if value is None else loop_field(value))
    if isinstance(value, LoopLimit):
        raise InvalidRequest(name, "is not the loop breaker")
    if name == "webhook_url":
        # The script's rule: at most 2048 characters in all, whichever the scheme.
        if value is not None and (not isinstance(value, str) or len(value) > 2048
                                  or not re.fullmatch(r"https?://[!-~]+", value)):
            raise InvalidRequest("webhook_url", "must be an http:// or https:// URL")
        return ("wh", value or "")
    if name == "require_task":
        if value is not None and not isinstance(value, bool):
            raise InvalidRequest("require_task", "must be true, false or null")
        return ("rt", "1" if value else "")
    field = _cap_field(name)
    if value is None:
        return (field, "")
    low_ok = name == "low_balance" and value == 0
    if not money.is_whole(value, 0 if low_ok else 1):
        what = "a whole number of calls" if ".calls." in f".{name}" else "an amount"
        raise InvalidRequest(name, f"must be {what} above 0")
    if field[-2:] in ("nm", "nh", "nd") and not money.is_whole(value, 1, CALLS_MAX):
        raise InvalidRequest(name, f"must be at most {CALLS_MAX} calls")
    return (field, str(value))
