"""The limits object of PATCH /v1/agents/{agent}/limits -> the engine's flat limit changes.

Every field is optional and ``null`` removes a limit (a whole category, tool or ``calls``
object when that object is ``null``). Amounts are the contract's decimal strings; call caps
are whole numbers of calls.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.api.body import Fields, parse_amount_field
from gateway.metering.errors import InvalidRequest
from gateway.metering.limits import (
    CALL_CAPS,
    CALLS_MAX,
    LOOP_ACTIONS,
    LOOP_REPEATS_MAX,
    LOOP_WINDOW_S_MAX,
    check_name,
)
from gateway.metering.models import LoopLimit

Changes = dict[str, int | str | LoopLimit | None]
SPEND = ("per_call", "daily", "hourly", "weekly", "monthly")
TOP_FIELDS = (*SPEND, "calls", "categories", "tools", "low_balance", "webhook_url",
              "require_task", "loop", "shadow")
# A shadow limits object holds the caps and require_task: what refuses a call by itself.
SHADOW_FIELDS = (*SPEND, "calls", "categories", "tools", "require_task")


def limit_changes(body: dict[str, Any], amount_max: int) -> Changes:
    """The engine's flat limit changes (``categories.llm.hourly``, ...) from a limits object;
    its ``shadow`` object's as ``shadow.<name>`` (``"shadow": null`` removes them all)."""
    changes = _limit_changes(body, amount_max, TOP_FIELDS)
    if "shadow" in body:
        changes.update(_shadow(body["shadow"], amount_max))
    return changes


def _shadow(value: Any, amount_max: int) -> Changes:
    """The changes of a ``shadow`` limits object: validated as the enforced limits are (the
    same reasons, fields named ``shadow.<field>``); a shadow inside it is refused."""
    if value is None:
        return {"shadow": None}
    if not isinstance(value, dict):
        raise InvalidRequest("shadow", "must be a limits object or null")
    try:
        inner = _limit_changes(value, amount_max, SHADOW_FIELDS)
    except InvalidRequest as exc:
        field = str(exc.details.get("field", ""))
        raise InvalidRequest("shadow." + field, str(exc.details.get("reason", ""))) from None
    return {"shadow." + name: v for name, v in inner.items()}


def _limit_changes(body: dict[str, Any], amount_max: int, allowed: tuple[str, ...]) -> Changes:
    fields = Fields(body, allowed)
    changes = _spend(body, (*SPEND, "low_balance"), "", amount_max)
    changes.update(_calls(body, ""))
    if "webhook_url" in body:
        url = None if body["webhook_url"] is None else fields.text("webhook_url", 2048)
        if url is not None and not re.fullmatch(r"https?://[!-~]+", url):
            raise InvalidRequest("webhook_url", "must be an http:// or https:// URL")
        changes["webhook_url"] = url
    if "require_task" in body:
        if body["require_task"] is not None and not isinstance(body["require_task"], bool):
            raise InvalidRequest("require_task", "must be true, false or null")
        changes["require_task"] = bool(body["require_task"])
    if "loop" in body:
        changes["loop"] = _loop(body["loop"])
    for group, spend in (("categories", SPEND), ("tools", ("per_call",))):
        for name, caps in (fields.obj(group) or {}).items():
            check_name(f"{group}.{name}", name)
            changes.update(_scoped(f"{group}.{name}.", caps, spend, amount_max))
    return changes


def _loop(value: Any) -> LoopLimit | None:
    """The loop breaker ``{"repeats", "window_s", "action"?}`` (action defaults to refuse);
    ``null`` removes it."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest("loop", "must be an object or null")
    fields = Fields(value, ("repeats", "window_s", "action"), "loop.")
    for name in ("repeats", "window_s"):
        if value.get(name) is None:
            raise InvalidRequest("loop." + name, "is required")
    repeats = fields.integer("repeats", 1, LOOP_REPEATS_MAX, 0)
    window_s = fields.integer("window_s", 1, LOOP_WINDOW_S_MAX, 0)
    action = value.get("action")
    action = "refuse" if action is None else action
    if not isinstance(action, str) or action not in LOOP_ACTIONS:
        raise InvalidRequest("loop.action", "must be refuse or freeze")
    return LoopLimit(repeats, window_s, action)


def _spend(body: dict[str, Any], names: tuple[str, ...], prefix: str, amount_max: int
           ) -> Changes:
    return {prefix + name: None if body[name] is None else parse_amount_field(
        prefix + name, body[name], name == "low_balance", amount_max)
        for name in names if name in body}


def _calls(body: dict[str, Any], prefix: str) -> Changes:
    if "calls" not in body:
        return {}
    caps = body["calls"]
    names = [f"{prefix}calls.{n}" for n in CALL_CAPS]
    if caps is None:
        return dict.fromkeys(names)
    if not isinstance(caps, dict):
        raise InvalidRequest(prefix + "calls", "must be an object or null")
    fields = Fields(caps, tuple(CALL_CAPS), prefix + "calls.")
    return {f"{prefix}calls.{n}": None if v is None else fields.integer(n, 1, CALLS_MAX, 1)
            for n, v in caps.items()}


def _scoped(prefix: str, caps: Any, spend: tuple[str, ...], amount_max: int) -> Changes:
    """One category's or tool's caps; ``null`` removes them all."""
    if caps is None:
        return {**dict.fromkeys(prefix + n for n in spend), **_calls({"calls": None}, prefix)}
    if not isinstance(caps, dict):
        raise InvalidRequest(prefix[:-1], "must be an object or null")
    Fields(caps, (*spend, "calls"), prefix)
    return {**_spend(caps, spend, prefix, amount_max), **_calls(caps, prefix)}
