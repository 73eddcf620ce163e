"""Script return codes -> the contract's errors, with their details."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.metering import money
from gateway.metering.errors import (
    AgentExists,
    AgentFrozen,
    BalanceInsufficient,
    GatewayError,
    HoldClosed,
    IdempotencyConflict,
    InvalidRequest,
    LoopDetected,
    NotFound,
    PerCallLimitExceeded,
    TaskClosed,
    TaskLimitExceeded,
    WindowLimitExceeded,
)
from gateway.store.calls import Refused
from gateway.store.codes import Code


class NothingToHold(InvalidRequest):
    """A hold on a free tool: the amount would be 0 (invoke then calls the tool as free)."""

    def __init__(self) -> None:
        super().__init__("max_cost", "must be above 0 (a free tool needs no hold: charge it)")


def refusal(  # noqa: C901, PLR0912 - one flat branch per refusal code reads best
        refused: Refused, **context: str) -> GatewayError:
    """The contract's error for a script's refusal (its code and the fields its header
    names)."""
    code, reply = refused.code, refused
    agent = context.get("agent", "")
    if code == Code.NOT_FOUND:
        what = f"tool {context['tool']}" if "tool" in context and not agent else f"agent {agent}"
        return NotFound(f"No {what} exists.")
    if code == Code.TOOL_NOT_FOUND:
        return NotFound(f"No tool named {context.get('tool', '')} in the catalog.")
    if code in (Code.COST_FIXED, Code.COST_REQUIRED, Code.HOLD_BELOW_PRICE,
                Code.NOTHING_TO_HOLD):
        return _price_refusal(code, reply, context)
    if code == Code.HOLD_NOT_FOUND:
        return NotFound(f"No hold {context.get('hold_id', '')} for agent {agent}.")
    if code == Code.HOLD_CLOSED:
        state = reply.text("state") or ""
        return HoldClosed(f"The hold is already {state}.", state=state)
    if code == Code.CAPTURE_EXCEEDS_HOLD:
        return InvalidRequest("cost", f"must be at most the held amount "
                                      f"{money.format_amount(reply.integer('held_amount'))}")
    if code == Code.FROZEN:
        return AgentFrozen(f"Agent {agent} is frozen; paid calls are refused.")
    if code == Code.IDEMPOTENCY_CONFLICT:
        return IdempotencyConflict("This Idempotency-Key was used with a different request.")
    if code == Code.BALANCE_INSUFFICIENT:
        balance = money.format_amount(reply.integer("balance"))
        cost = money.format_amount(reply.integer("cost"))
        return BalanceInsufficient(f"The call costs {cost} but only {balance} is available.",
                                   balance=balance, cost=cost)
    if code in (Code.LIMIT_PER_CALL, Code.LIMIT_CATEGORY_PER_CALL):
        return _per_call_refusal(code, reply, context)
    if code in (Code.LIMIT_DAILY, Code.LIMIT_CATEGORY_DAILY):
        return _window_refusal(code, reply, context)
    if code == Code.LIMIT_WINDOW:
        return _spend_window_refusal(reply)
    if code == Code.LIMIT_CALLS:
        return _calls_refusal(reply)
    if code == Code.LIMIT_TOOL_PER_CALL:
        return _tool_per_call_refusal(reply)
    if code in TASK_CODES:
        return _task_refusal(code, reply, context)
    if code == Code.LOOP_DETECTED:
        return _loop_refusal(reply)
    if code == Code.AGENT_EXISTS:
        return AgentExists(f"An agent named {agent} already exists.")
    if code == Code.BALANCE_OVERFLOW:
        return InvalidRequest("amount", "would take the balance above the largest exact amount")
    if code == Code.KEYS_FULL:
        return InvalidRequest("keys", f"an agent may have at most {reply.integer('keys_max')} keys")
    if code == Code.KEY_NOT_FOUND:
        return NotFound("No such key.")
    return InvalidRequest("argument", "was refused by the script (argument "
                                      f"{list(reply.fields.values())})")


def _price_refusal(code: Code, reply: Refused, context: Mapping[str, str]) -> GatewayError:
    """A client naming a price the catalog sets: the catalog price is what a call costs."""
    tool = context.get("tool")
    if code == Code.COST_REQUIRED:
        return InvalidRequest("cost", "is required for tools priced variable")
    if code == Code.NOTHING_TO_HOLD:
        return NothingToHold()
    price = money.format_amount(reply.integer("price"))
    if code == Code.HOLD_BELOW_PRICE:
        return InvalidRequest("max_cost", f"must be at least the price {price} of the "
                                          f"fixed-price tool {tool}")
    if context.get("op") == "capture":
        return InvalidRequest("cost", f"must be the held price {price} of a fixed-price tool "
                                      "(or be omitted)")
    return InvalidRequest("cost", f"is only accepted for tools priced variable ({tool} costs "
                                  f"{price})")


def _category(reply: Refused, context: Mapping[str, str]) -> str | None:
    """The category a script put in its refusal, else the caller's (older scripts, capture)."""
    return reply.text("category") or context.get("category")


def _per_call_refusal(code: Code, reply: Refused, context: Mapping[str, str]
                      ) -> GatewayError:
    limit = "per_call" if code == Code.LIMIT_PER_CALL else "category_per_call"
    cap = money.format_amount(reply.integer("max"))
    cost = money.format_amount(reply.integer("cost"))
    return PerCallLimitExceeded(f"The call costs {cost}, above the {limit} cap of {cap}.",
                                limit=limit, category=_category(reply, context), max=cap,
                                cost=cost)


def _window_refusal(code: Code, reply: Refused, context: Mapping[str, str]) -> GatewayError:
    limit = "daily" if code == Code.LIMIT_DAILY else "category_daily"
    cap = money.format_amount(reply.integer("max"))
    spent = money.format_amount(reply.integer("spent"))
    category = _category(reply, context)
    return WindowLimitExceeded(
        f"Today's {limit} cap of {cap} is reached ({spent} spent or held).", limit=limit,
        category=category, max=cap, spent=spent, retry_after_s=reply.integer("retry_after_s"))


WINDOW_WORDS = {"hourly": "The last 60 minutes'", "weekly": "This week's",
                "monthly": "This month's"}


def _spend_window_refusal(reply: Refused) -> GatewayError:
    """A rolling-hour, weekly or monthly cap (LIMIT_WINDOW)."""
    limit = reply.text("limit") or ""
    cap = money.format_amount(reply.integer("max"))
    spent = money.format_amount(reply.integer("spent"))
    category = reply.text("category")
    words = WINDOW_WORDS.get(limit.removeprefix("category_"), limit)
    # A category's cap names the category: the agent may have caps on several.
    scope = f" of category {category}" if limit.startswith("category_") else ""
    return WindowLimitExceeded(
        f"{words} {limit} cap{scope} of {cap} is reached ({spent} spent or held).",
        limit=limit, category=category, max=cap, spent=spent,
        retry_after_s=reply.integer("retry_after_s"))


def _calls_refusal(reply: Refused) -> GatewayError:
    """A call cap (LIMIT_CALLS): calls a minute, hour or day of the agent, a category or a
    tool."""
    limit, scope, cap = reply.text("limit"), reply.text("scope"), reply.integer("max")
    category, tool = reply.text("category"), reply.text("tool")
    where = {"agent": "the agent", "category": f"category {category}",
             "tool": f"tool {tool}"}.get(scope or "", scope)
    return WindowLimitExceeded(
        f"The {limit} cap of {cap} calls for {where} is reached.", limit=limit, scope=scope,
        category=category, tool=tool, max=cap, retry_after_s=reply.integer("retry_after_s"))


def _tool_per_call_refusal(reply: Refused) -> GatewayError:
    """A tool's per-call cap (LIMIT_TOOL_PER_CALL)."""
    cap = money.format_amount(reply.integer("max"))
    cost = money.format_amount(reply.integer("cost"))
    tool = reply.text("tool")
    return PerCallLimitExceeded(
        f"The call costs {cost}, above the tool_per_call cap of {cap} for {tool}.",
        limit="tool_per_call", category=reply.text("category"), tool=tool, max=cap, cost=cost)


TASK_CODES = frozenset({Code.TASK_NOT_FOUND, Code.TASK_CLOSED, Code.LIMIT_TASK_BUDGET,
                        Code.LIMIT_TASK_CALLS, Code.LIMIT_TASK_REQUIRED})


def _task_refusal(code: Code, reply: Refused, context: Mapping[str, str]) -> GatewayError:
    """A task refused the call: unknown (404), closed or expired (409), its budget or
    max_calls, or require_task (403 limit_exceeded)."""
    task = context.get("task")
    if code == Code.TASK_NOT_FOUND:
        return NotFound(f"No task {task} for agent {context.get('agent', '')}.")
    if code == Code.TASK_CLOSED:
        state = reply.text("state") or ""
        return TaskClosed(f"Task {task} is {state}; calls naming it are refused.", task=task,
                          state=state)
    if code == Code.LIMIT_TASK_REQUIRED:
        return TaskLimitExceeded("Paid calls of this agent must name a task (require_task).",
                                 limit="task_required")
    if code == Code.LIMIT_TASK_CALLS:
        name, cap = reply.text("name"), reply.integer("max")
        return TaskLimitExceeded(f"Task {task} allows {cap} calls of {name}; all are used.",
                                 limit="task_calls", task=task, name=name, max=cap)
    budget = money.format_amount(reply.integer("max"))
    spent = money.format_amount(reply.integer("spent"))
    return TaskLimitExceeded(f"Task {task}'s budget of {budget} is reached ({spent} spent or "
                             "held).", limit="task_budget", task=task, max=budget, spent=spent)
def _loop_refusal(reply: Refused) -> GatewayError:
    """The loop breaker (LOOP_DETECTED); with action freeze the script also froze the agent."""
    tool, repeats, window_s = reply.text("tool"), reply.integer("repeats"), reply.integer(
        "window_s")
    frozen = " The agent is now frozen." if reply.integer("frozen") else ""
    return LoopDetected(
        f"{tool} was called with the same arguments more than {repeats} times within "
        f"{window_s} s.{frozen}", tool=tool, repeats=repeats, window_s=window_s,
        retry_after_s=reply.integer("retry_after_s"))
