"""What ``Client`` and ``AsyncClient`` share: building calls, the retry rule, reading answers.

A method of either client builds a ``Call`` here (method, path, body bytes, headers and how
to read the answer); the client sends it, sync or async, with the retry loop; the answer is
read here. So the two clients differ only in how they wait.
"""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import orjson

from gateway.sdk.codes import SERVER_ERRORS
from gateway.sdk.errors import BadResponse, IOUError, Unreachable, error_for
from gateway.sdk.models import (
    AgentSummary,
    Capture,
    Charge,
    Child,
    Debit,
    HoldInfo,
    Invoked,
    LedgerEntry,
    Money,
    Reclaim,
    Refund,
    Release,
    Status,
    Task,
    to_amount,
)

T = TypeVar("T")
URL_DEFAULT = "http://127.0.0.1:8080"
MAX_RETRIES_DEFAULT = 2
TIMEOUT_S_DEFAULT = 30.0
BACKOFF_S_DEFAULT = 0.25  # the first retry's pause; doubled each retry, jittered
BACKOFF_S_MAX = 8.0
RETRY_AFTER_S_MAX = 60.0  # a Retry-After longer than this is not waited for in full
PAGE_SIZE_DEFAULT = 100
IDEMPOTENCY_HEADER = "idempotency-key"
JSON_HEADERS = {"content-type": "application/json"}
# Retried with the same Idempotency-Key: the request may or may not have reached the gateway.
RETRYABLE_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
RETRYABLE_STATUS = 503
# A batch item's error has no HTTP status of its own: the code's, when it has only one.
_ONE_STATUS = {e.code: e.statuses[0] for e in SERVER_ERRORS if len(e.statuses) == 1}
_STATUSES = {e.code: e.statuses for e in SERVER_ERRORS}

Warn = Callable[[str, dict[str, Any]], None]


MICRO = Decimal("0.000001")


def metered_cost(cost: Callable[[Any], Any], result: Any,
                 held: Decimal) -> tuple[str, BaseException | None]:
    """What a metered tool that has run is captured for, and the cost function's error if it
    raised. The tool ran, so it is paid: the cost function's answer when it is an amount
    within the hold, else the whole hold (as invoke captures the hold when an upstream
    reports more than it, or nonsense). Capturing less would release the rest: an answer
    above the hold, or none, made the capture fail and the tool run for free."""
    try:
        asked = Decimal(to_amount(cost(result)))
    except Exception as exc:  # raised again by the caller, after the capture
        return to_amount(held), exc
    fits = asked.is_finite() and 0 <= asked <= held and asked == asked.quantize(MICRO)
    return (to_amount(asked) if fits else to_amount(held)), None


def new_idempotency_key() -> str:
    return "iou-" + secrets.token_urlsafe(18)


@dataclass(slots=True)
class Call(Generic[T]):
    """One request as it is sent on each attempt (the same key every time)."""

    method: str
    path: str
    content: bytes | None
    headers: dict[str, str]
    read: Callable[[Any], T]
    params: dict[str, str] | None = None
    invoke: bool = False


def paid_call(path: str, body: Mapping[str, Any] | None, read: Callable[[Any], T],
              key: str | None) -> Call[T]:
    """A POST: always with an Idempotency-Key, so that a retry is charged once."""
    headers = {IDEMPOTENCY_HEADER: key or new_idempotency_key()}
    if body is None:
        return Call("POST", path, None, headers, read)
    return Call("POST", path, orjson.dumps(body), headers | JSON_HEADERS, read)


def _identity(answer: Any) -> Any:
    return answer


def retry_pause_s(attempt: int, backoff_s: float, retry_after: str | None = None) -> float:
    """The pause before retry ``attempt`` + 1: exponential with jitter (half to all of
    it, so many clients refused together do not come back together), at least what the
    gateway's Retry-After asked for."""
    pause_s: float = min(backoff_s * 2.0 ** attempt, BACKOFF_S_MAX) * random.uniform(0.5, 1.0)
    if retry_after is not None and retry_after.isascii() and retry_after.isdigit():
        pause_s = max(pause_s, min(float(retry_after), RETRY_AFTER_S_MAX))
    return pause_s


def _retry_after(response: httpx.Response) -> int | None:
    value = response.headers.get("retry-after")
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


def _charge_body(tool: str, cost: Money | None, metadata: Mapping[str, Any] | None,
                 task: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"tool": tool}
    if cost is not None:
        body["cost"] = to_amount(cost)
    if metadata is not None:
        body["metadata"] = metadata
    if task is not None:
        body["task"] = task  # a gateway without tasks refuses it (422): nothing is charged
    return body


def _batch_item(item: Mapping[str, Any]) -> dict[str, Any]:
    body = dict(item)
    if body.get("cost") is not None:
        body["cost"] = to_amount(body["cost"])
    return body


def batch_result(item: Mapping[str, Any]) -> Charge | IOUError:
    """A batch item's answer: its charge, or its error as an (unraised) exception."""
    if "error" not in item:
        return Charge.from_answer(dict(item))
    return error_for(_ONE_STATUS.get(str(item["error"]), 0), item)


def segment(value: str) -> str:
    """A caller's value (agent or tool name, hold, task or charge id) as one path segment:
    percent-encoded whole, so a ``/``, ``?`` or ``#`` in it cannot reach another route, and
    the names ``.`` and ``..`` (the contract's alphabet allows dots) encoded too, since URLs
    collapse those dot segments onto the route above."""
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


class BaseClient:
    """Settings and everything that does not wait; see ``Client`` for the parameters."""

    def __init__(self, url: str | None = None, key: str | None = None, *,
                 max_retries: int = MAX_RETRIES_DEFAULT, timeout_s: float = TIMEOUT_S_DEFAULT,
                 on_warning: Warn | None = None, backoff_s: float = BACKOFF_S_DEFAULT) -> None:
        # The SDK runs in the agent's process, apart from the gateway's configuration: it
        # reads the two variables the contract names for it, and nothing else.
        self.url = (url or os.environ.get("IOU_URL") or URL_DEFAULT).rstrip("/")
        self.key = key or os.environ.get("IOU_AGENT_KEY") or None
        if max_retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise ValueError("max_retries >= 0, timeout_s > 0 and backoff_s >= 0")
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.on_warning = on_warning
        self.last_warnings: tuple[str, ...] = ()

    def _base_headers(self) -> dict[str, str]:
        headers = {"user-agent": "iou-sdk-python"}
        if self.key:
            headers["authorization"] = f"Bearer {self.key}"
        return headers

    # -- building calls ------------------------------------------------------------------

    def _charge_call(self, tool: str, cost: Money | None, metadata: Mapping[str, Any] | None,
                     task: str | None, key: str | None) -> Call[Charge]:
        return paid_call("/v1/charge", _charge_body(tool, cost, metadata, task),
                         Charge.from_answer, key)

    def _charges_call(self, items: Iterable[Mapping[str, Any]],
                      key: str | None) -> Call[list[Charge | IOUError]]:
        body = {"charges": [_batch_item(item) for item in items]}
        return paid_call("/v1/charges", body,
                         lambda a: [batch_result(r) for r in a["results"]], key)

    def _hold_call(self, tool: str, max_cost: Money | None, ttl_s: int | None,
                   metadata: Mapping[str, Any] | None, task: str | None,
                   key: str | None) -> Call[HoldInfo]:
        body: dict[str, Any] = {"tool": tool}
        if max_cost is not None:
            body["max_cost"] = to_amount(max_cost)
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        if metadata is not None:
            body["metadata"] = metadata
        if task is not None:
            body["task"] = task
        return paid_call("/v1/holds", body, HoldInfo.from_answer, key)

    def _capture_call(self, hold_id: str, cost: Money | None,
                      metadata: Mapping[str, Any] | None, key: str | None) -> Call[Capture]:
        body: dict[str, Any] = {}
        if cost is not None:
            body["cost"] = to_amount(cost)
        if metadata is not None:
            body["metadata"] = metadata
        return paid_call(f"/v1/holds/{segment(hold_id)}/capture", body, Capture.from_answer,
                         key)

    def _release_call(self, hold_id: str, key: str | None) -> Call[Release]:
        return paid_call(f"/v1/holds/{segment(hold_id)}/release", None, Release.from_answer, key)

    def _invoke_call(  # noqa: PLR0913 - the invoke's options, each named
            self, tool: str, payload: Any, content: bytes | None,
            max_cost: Money | None, headers: Mapping[str, str] | None,
            key: str | None, task: str | None = None) -> Call[Invoked]:
        sent = {k.lower(): v for k, v in (headers or {}).items()}
        sent[IDEMPOTENCY_HEADER] = key or new_idempotency_key()
        if task is not None:
            sent["x-iou-task"] = task
        if max_cost is not None:
            sent["x-iou-max-cost"] = to_amount(max_cost)
        if content is None and payload is not None:
            content = orjson.dumps(payload)
            sent.setdefault("content-type", "application/json")
        return Call("POST", f"/v1/tools/{segment(tool)}/invoke", content, sent, _identity,
                    invoke=True)

    def _refund_call(self, charge_id: str, amount: Money | None, reason: str | None,
                     key: str | None) -> Call[Refund]:
        body: dict[str, Any] = {}
        if amount is not None:
            body["amount"] = to_amount(amount)
        if reason is not None:
            body["reason"] = reason
        return paid_call(f"/v1/charges/{segment(charge_id)}/refund", body, Refund.from_answer,
                         key)

    def _debit_call(self, agent: str, amount: Money, reason: str,
                    key: str | None) -> Call[Debit]:
        body = {"amount": to_amount(amount), "reason": reason}
        return paid_call(f"/v1/agents/{segment(agent)}/debit", body, Debit.from_answer, key)

    def _task_open_call(self, budget: Money, name: str | None, ttl_s: int | None,
                        max_calls: Mapping[str, int] | None, key: str | None) -> Call[Task]:
        body: dict[str, Any] = {"budget": to_amount(budget)}
        for field_name, value in (("name", name), ("ttl_s", ttl_s), ("max_calls", max_calls)):
            if value is not None:
                body[field_name] = value
        return paid_call("/v1/tasks", body, Task.from_answer, key)

    def _task_get_call(self, task_id: str) -> Call[Task]:
        return Call("GET", f"/v1/tasks/{segment(task_id)}", None, {}, Task.from_answer)

    def _task_close_call(self, task_id: str) -> Call[Task]:
        return paid_call(f"/v1/tasks/{segment(task_id)}/close", None, Task.from_answer, None)

    def _tasks_list_call(self, agent: str, limit: int) -> Call[list[Task]]:
        return Call("GET", f"/v1/agents/{segment(agent)}/tasks", None, {},
                    lambda a: [Task.from_answer(t) for t in a["tasks"]], {"limit": str(limit)})

    def _child_call(self, parent: str, name: str, amount: Money,
                    limits: Mapping[str, Any] | None, key: str | None) -> Call[Child]:
        body: dict[str, Any] = {"name": name, "amount": to_amount(amount)}
        if limits is not None:
            body["limits"] = dict(limits)
        return paid_call(f"/v1/agents/{segment(parent)}/children", body, Child.from_answer, key)

    def _reclaim_call(self, child: str, amount: Money | None,
                      key: str | None) -> Call[Reclaim]:
        body = {} if amount is None else {"amount": to_amount(amount)}
        return paid_call(f"/v1/agents/{segment(child)}/reclaim", body, Reclaim.from_answer, key)

    def _shadow_call(self, agent: str) -> Call[dict[str, Any]]:
        return Call("GET", f"/v1/agents/{segment(agent)}/shadow", None, {}, _identity)

    def _limits_call(self, agent: str, patch: Mapping[str, Any] | None) -> Call[dict[str, Any]]:
        if patch is None:
            return Call("GET", f"/v1/agents/{segment(agent)}/limits", None, {}, _identity)
        return Call("PATCH", f"/v1/agents/{segment(agent)}/limits", orjson.dumps(dict(patch)),
                    {"content-type": "application/json"}, _identity)

    def _status_call(self) -> Call[Status]:
        return Call("GET", "/v1/balance", None, {}, Status.from_answer)

    def _request_call(self, method: str, path: str, body: Any, params: Mapping[str, str] | None,
                      headers: Mapping[str, str] | None, key: str | None) -> Call[Any]:
        sent = {k.lower(): v for k, v in (headers or {}).items()}
        if method.upper() == "POST":
            sent[IDEMPOTENCY_HEADER] = key or sent.get(IDEMPOTENCY_HEADER) or new_idempotency_key()
        content = None
        if body is not None:
            content = orjson.dumps(body)
            sent["content-type"] = "application/json"
        return Call(method.upper(), path, content, sent, _identity,
                    None if params is None else dict(params))

    def _page_call(self, path: str, params: dict[str, str], rows: str,
                   read: Callable[[dict[str, Any]], T]) -> Call[tuple[list[T], str | None]]:
        def page(answer: dict[str, Any]) -> tuple[list[T], str | None]:
            return [read(r) for r in answer[rows]], answer.get("next_cursor")

        return Call("GET", path, None, {}, page, params)

    def _ledger_call(self, agent: str, before: str | None, kind: str | None, tool: str | None,
                     page_size: int) -> Call[tuple[list[LedgerEntry], str | None]]:
        params = {"limit": str(page_size)}
        for name, value in (("before", before), ("kind", kind), ("tool", tool)):
            if value is not None:
                params[name] = value
        return self._page_call(f"/v1/agents/{segment(agent)}/ledger", params, "entries",
                               LedgerEntry.from_answer)

    def _agents_call(self, cursor: str | None,
                     page_size: int) -> Call[tuple[list[AgentSummary], str | None]]:
        params = {"limit": str(page_size)} | ({"cursor": cursor} if cursor else {})
        return self._page_call("/v1/agents", params, "agents", AgentSummary.from_answer)

    # -- reading answers -----------------------------------------------------------------

    def _finish(self, call: Call[T], response: httpx.Response) -> T:
        """The call's result, or the contract's error raised as its class."""
        if call.invoke:
            return call.read(self._invoked(response))
        answer = self._decode(response)
        self._notice(answer)
        return call.read(answer)

    def _decode(self, response: httpx.Response) -> Any:
        status = response.status_code
        # A 3xx is no answer of the gateway's: it falls through to BadResponse below.
        if status == 204 or (not response.content and 200 <= status < 300):
            return None
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise BadResponse(f"{self.url} answered {status} without JSON; is it the IOU "
                              "gateway?", status=status) from None
        if status >= 400:
            if not isinstance(answer, dict):
                raise BadResponse(f"{self.url} answered {status}", status=status)
            raise error_for(status, answer, _retry_after(response))
        return answer

    def _invoked(self, response: httpx.Response) -> Invoked:
        """An upstream's answer is returned whatever its status; the gateway's own refusal
        (a contract error object without a charge) is raised."""
        charge_id = response.headers.get("x-iou-charge-id")
        if charge_id is None and response.status_code >= 400:
            refusal = _gateway_refusal(response)
            if refusal is not None:
                raise error_for(response.status_code, refusal, _retry_after(response))
        balance = response.headers.get("x-iou-balance")
        return Invoked(response.status_code, response.content,
                       response.headers.get("content-type"), charge_id,
                       None if balance is None else _decimal(balance))

    def _notice(self, answer: Any) -> None:
        """Warnings of any answer (a batch: of its items) reach ``on_warning`` and
        ``last_warnings``, the agent's cue to pause before its next step."""
        if not isinstance(answer, dict):
            return
        if "results" in answer and isinstance(answer["results"], list):
            warnings = _batch_warnings(answer["results"])
        elif "warnings" in answer:
            warnings = tuple(answer["warnings"] or ())
        else:
            return
        self.last_warnings = warnings
        if self.on_warning is not None:
            for warning in warnings:
                self.on_warning(warning, answer)

    def _unreachable(self, exc: Exception) -> IOUError:
        return Unreachable(f"no answer from the gateway at {self.url} after "
                           f"{self.max_retries + 1} attempts ({type(exc).__name__}); is it "
                           "running?")


def _batch_warnings(results: list[Any]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for item in results:
        if isinstance(item, dict):
            seen.update(dict.fromkeys(item.get("warnings") or ()))
    return tuple(seen)


def _gateway_refusal(response: httpx.Response) -> dict[str, Any] | None:
    if not response.headers.get("content-type", "").startswith("application/json"):
        return None
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    # The gateway's refusal: a code of the list with one of that code's statuses. (An
    # upstream that answers exactly like the gateway would be read as the gateway.)
    if (isinstance(body, dict) and "message" in body
            and response.status_code in _STATUSES.get(str(body.get("error")), ())):
        return body
    return None


def _decimal(value: str) -> Any:
    from decimal import Decimal, InvalidOperation

    try:
        return Decimal(value)
    except InvalidOperation:
        return None
