"""Response bodies of the contract, built from the engine's typed results."""

from __future__ import annotations

from typing import Any

from gateway.metering.models import (
    AgentState,
    CallCaps,
    CategoryLimits,
    ChargeResult,
    Limits,
    LoopLimit,
    Tool,
)
from gateway.metering.models import state_warnings as warnings_of_state
from gateway.metering.money import format_amount as fmt


def charge_payload(r: ChargeResult) -> dict[str, Any]:
    return {"charge_id": r.charge_id, "tool": r.tool, "category": r.category,
            "cost": fmt(r.cost_micros), "balance": fmt(r.balance_micros),
            "warnings": list(r.warnings)}


def _opt(micros: int | None) -> str | None:
    return None if micros is None else fmt(micros)


def _calls(calls: CallCaps) -> dict[str, int]:
    """The call caps that are set (whole numbers of calls)."""
    return {k: v for k, v in (("per_minute", calls.per_minute), ("per_hour", calls.per_hour),
                              ("per_day", calls.per_day)) if v is not None}


def _category(c: CategoryLimits) -> dict[str, Any]:
    caps: dict[str, Any] = {k: v for k, v in (
        ("per_call", _opt(c.per_call_micros)), ("daily", _opt(c.daily_micros)),
        ("hourly", _opt(c.hourly_micros)), ("weekly", _opt(c.weekly_micros)),
        ("monthly", _opt(c.monthly_micros))) if v}
    if _calls(c.calls):
        caps["calls"] = _calls(c.calls)
    return caps


def _loop(loop: LoopLimit | None) -> dict[str, Any] | None:
    if loop is None:
        return None
    return {"repeats": loop.repeats, "window_s": loop.window_s, "action": loop.action}


def limits_payload(limits: Limits) -> dict[str, Any]:
    tools: dict[str, Any] = {}
    for name, t in limits.tools.items():
        tools[name] = {"per_call": _opt(t.per_call_micros)} if t.per_call_micros else {}
        if _calls(t.calls):
            tools[name]["calls"] = _calls(t.calls)
    # The walls beyond the balance appear only when set, so an agent without them keeps the
    # object it always had.
    walls: dict[str, Any] = {k: v for k, v in (
        ("hourly", _opt(limits.hourly_micros)), ("weekly", _opt(limits.weekly_micros)),
        ("monthly", _opt(limits.monthly_micros)), ("calls", _calls(limits.calls)),
        ("tools", tools), ("require_task", limits.require_task), ("loop", _loop(limits.loop)))
        if v}
    out = {
        "per_call": _opt(limits.per_call_micros),
        "daily": _opt(limits.daily_micros),
        "categories": {name: _category(c) for name, c in limits.categories.items()},
        "low_balance": _opt(limits.low_balance_micros),
        "webhook_url": limits.webhook_url,
        **walls,
    }
    if limits.shadow is not None:
        # Shown only when set; a shadow object holds caps and require_task alone.
        shadow = limits_payload(limits.shadow)
        del shadow["low_balance"], shadow["webhook_url"]
        out["shadow"] = shadow
    return out


def state_warnings(state: AgentState) -> list[str]:
    """Warnings of the balance route: the same rules the scripts apply on a charge."""
    return list(warnings_of_state(state.balance_micros, state.limits.low_balance_micros,
                                  state.spent_today_micros, state.limits.daily_micros))


def agent_summary(state: AgentState) -> dict[str, Any]:
    return {"agent": state.agent, "balance": fmt(state.balance_micros),
            "held": fmt(state.held_micros), "spent_today": fmt(state.spent_today_micros),
            "frozen": state.frozen}


def agent_detail(state: AgentState, created_at: str) -> dict[str, Any]:
    return {**agent_summary(state), "limits": limits_payload(state.limits),
            "created_at": created_at, "warnings": state_warnings(state),
            "spent_today_by_category": {c: fmt(v) for c, v in
                                        state.spent_today_by_category.items()},
            "parent": state.parent}


def tool_payload(tool: Tool) -> dict[str, Any]:
    # Upstream headers are secret: say whether they are set, never what they are.
    return {"tool": tool.name, "price": fmt(tool.price_micros), "category": tool.category,
            "pricing": tool.pricing, "upstream": tool.upstream,
            "upstream_headers_set": tool.upstream_headers is not None}
