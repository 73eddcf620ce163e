"""Limits: the agent hash's fields <-> the typed Limits, and validated changes."""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway.metering import money
from gateway.metering.errors import InvalidRequest
from gateway.metering.models import CategoryLimits, Limits

NAME_RE = re.compile(r"[a-z0-9_.-]{1,64}", re.ASCII)
HOLD_TTL_S_MAX = 3600  # the longest hold a caller may ask for
LIMIT_FIELDS = {"per_call": "pc", "daily": "dl", "low_balance": "low"}


def check_name(field: str, value: str) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise InvalidRequest(field, "must be 1 to 64 characters of a-z 0-9 - _ .")
    return value


def limits_of(a: Mapping[str, str]) -> Limits:
    categories: dict[str, dict[str, int]] = {}
    for field, value in a.items():
        if field.startswith("c:"):
            _, cat, which = field.split(":")
            categories.setdefault(cat, {})[which] = int(value)
    low = int(a["low"]) if a.get("low") not in (None, "0") else None
    return Limits(
        per_call_micros=int(a["pc"]) if "pc" in a else None,
        daily_micros=int(a["dl"]) if "dl" in a else None,
        categories={c: CategoryLimits(v.get("pc"), v.get("dl")) for c, v in
                    sorted(categories.items())},
        low_balance_micros=low,
        webhook_url=a.get("wh"))


def limit_pair(name: str, value: int | str | None) -> tuple[str, str]:
    """The agent-hash field and value of one limit change ('' removes the field)."""
    if name == "webhook_url":
        if value is not None and (not isinstance(value, str) or not re.fullmatch(
                r"https?://[!-~]{1,2040}", value)):
            raise InvalidRequest("webhook_url", "must be an http:// or https:// URL")
        return ("wh", value or "")
    parts = name.split(".")
    if name in LIMIT_FIELDS:
        field = LIMIT_FIELDS[name]
    elif len(parts) == 3 and parts[0] == "categories" and parts[2] in ("per_call", "daily"):
        check_name("category", parts[1])
        field = f"c:{parts[1]}:{'pc' if parts[2] == 'per_call' else 'dl'}"
    else:
        raise InvalidRequest(name, "is not a known limit")
    if value is None:
        return (field, "")
    low_ok = name == "low_balance" and value == 0
    if not money.is_whole(value, 0 if low_ok else 1):
        raise InvalidRequest(name, "must be an amount above 0")
    return (field, str(value))
