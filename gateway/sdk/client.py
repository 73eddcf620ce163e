"""``Client``: the synchronous SDK, safe to share between threads."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import httpx

from gateway.sdk._base import (
    PAGE_SIZE_DEFAULT,
    RETRYABLE_ERRORS,
    RETRYABLE_STATUS,
    BaseClient,
    Call,
    metered_cost,
    retry_pause_s,
)
from gateway.sdk.errors import InvalidRequest, IOUError
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
from gateway.sdk.receipts import ReceiptInvalid, verify_receipt

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
CONNECTIONS_MAX = 100


class Client(BaseClient):
    """The gateway, seen from an agent (or, with the admin token, from its operator).

    ``url`` and ``key`` default to ``IOU_URL`` and ``IOU_AGENT_KEY``. Every POST carries an
    Idempotency-Key (generated unless given); a connection error, a timeout or a 503 is
    retried up to ``max_retries`` times with exponential backoff (``backoff_s`` first) and
    jitter, with the same key, so a retried call is charged once. 4xx are never retried.
    ``on_warning(warning, answer)`` hears every warning; ``last_warnings`` holds the last
    answer's. Money is ``Decimal``; amounts given may be Decimal, str or int (never float).
    """

    def __init__(self, url: str | None = None, key: str | None = None, *,
                 max_retries: int = 2, timeout_s: float = 30.0,
                 on_warning: Callable[[str, dict[str, Any]], None] | None = None,
                 backoff_s: float = 0.25) -> None:
        super().__init__(url, key, max_retries=max_retries, timeout_s=timeout_s,
                         on_warning=on_warning, backoff_s=backoff_s)
        limits = httpx.Limits(max_connections=CONNECTIONS_MAX,
                              max_keepalive_connections=CONNECTIONS_MAX)
        self._http = httpx.Client(base_url=self.url, headers=self._base_headers(),
                                  timeout=timeout_s, limits=limits)
        self._receipt_jwks: dict[str, Any] | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- agent routes --------------------------------------------------------------------

    def charge(self, tool: str, *, cost: Money | None = None,
               metadata: Mapping[str, Any] | None = None, task: str | None = None,
               idempotency_key: str | None = None) -> Charge:
        """Pay for one call of ``tool`` (``cost`` only for tools priced variable)."""
        return self._run(self._charge_call(tool, cost, metadata, task, idempotency_key))

    def charges(self, items: Iterable[Mapping[str, Any]], *,
                idempotency_key: str | None = None) -> list[Charge | IOUError]:
        """A batch, exactly once as a whole: each item's ``Charge`` or its error (not
        raised), in order. Items are charge bodies (``tool``, ``cost``, ``metadata``)."""
        return self._run(self._charges_call(items, idempotency_key))

    def hold(self, tool: str, max: Money | None = None, *, ttl_s: int | None = None,
             metadata: Mapping[str, Any] | None = None, task: str | None = None,
             idempotency_key: str | None = None) -> Hold:
        """Set ``max`` aside for a call whose price is known after it ran. As a context
        manager the hold is released when the block raises or ends without a capture."""
        info = self._run(self._hold_call(tool, max, ttl_s, metadata, task, idempotency_key))
        return Hold(self, info)

    def capture(self, hold_id: str, cost: Money | None = None, *,
                metadata: Mapping[str, Any] | None = None,
                idempotency_key: str | None = None) -> Capture:
        return self._run(self._capture_call(hold_id, cost, metadata, idempotency_key))

    def release(self, hold_id: str, *, idempotency_key: str | None = None) -> Release:
        return self._run(self._release_call(hold_id, idempotency_key))

    def invoke(  # noqa: PLR0913 - the invoke's options, each named
            self, tool: str, payload: Any = None, *, content: bytes | None = None,
            max_cost: Money | None = None, headers: Mapping[str, str] | None = None,
            idempotency_key: str | None = None, task: str | None = None) -> Invoked:
        """Call the tool's upstream through the gateway (held, captured on a 2xx); ``task``
        counts the call against one of the agent's tasks (header X-IOU-Task)."""
        return self._run(self._invoke_call(tool, payload, content, max_cost, headers,
                                           idempotency_key, task))

    @property
    def tasks(self) -> Tasks:
        """The agent's tasks (budget envelopes): ``open``, ``get``, ``close``, ``list``."""
        return Tasks(self)

    def status(self) -> Status:
        return self._run(self._status_call())

    def shadow(self, agent: str) -> dict[str, Any]:
        """What ``agent``'s shadow limits would have refused (the agent's own key or the
        admin): ``{"agent", "refusals": {limit: {"count", "amount"}}, "total"}``."""
        return self._run(self._shadow_call(agent))

    # -- admin routes (the admin token as ``key``) ---------------------------------------

    def limits(self, agent: str, patch: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The agent's limits object; with ``patch``, merged first (``null`` removes a
        limit; ``{"shadow": {...}}`` sets shadow limits, ``{"shadow": None}`` clears them)."""
        return self._run(self._limits_call(agent, patch))

    def ledger(self, agent: str, *, kind: str | None = None, tool: str | None = None,
               page_size: int = PAGE_SIZE_DEFAULT) -> Iterator[LedgerEntry]:
        """Every ledger entry of ``agent``, newest first, page after page."""
        before: str | None = None
        while True:
            rows, before = self._run(self._ledger_call(agent, before, kind, tool, page_size))
            yield from rows
            if before is None:
                return

    def refund(self, charge_id: str, amount: Money | None = None, *, reason: str | None = None,
               idempotency_key: str | None = None) -> Refund:
        """Give back ``amount`` (default: what is left) of a charge, batch item or capture."""
        return self._run(self._refund_call(charge_id, amount, reason, idempotency_key))

    def debit(self, agent: str, amount: Money, *, reason: str,
              idempotency_key: str | None = None) -> Debit:
        """Take ``amount`` back from ``agent``'s available balance (402 beyond it)."""
        return self._run(self._debit_call(agent, amount, reason, idempotency_key))

    def create_child(self, parent: str, name: str, amount: Money, *,
                     limits: Mapping[str, Any] | None = None,
                     idempotency_key: str | None = None) -> Child:
        """A sub-agent of ``parent`` funded with ``amount`` from its balance (the parent's
        own key or the admin); ``name`` must hash to the parent's partition."""
        return self._run(self._child_call(parent, name, amount, limits, idempotency_key))

    def reclaim(self, child: str, amount: Money | None = None, *,
                idempotency_key: str | None = None) -> Reclaim:
        """Move ``amount`` (default: all it has available) from ``child`` to its parent."""
        return self._run(self._reclaim_call(child, amount, idempotency_key))

    def agents(self, *, page_size: int = PAGE_SIZE_DEFAULT) -> Iterator[AgentSummary]:
        cursor: str | None = None
        while True:
            rows, cursor = self._run(self._agents_call(cursor, page_size))
            yield from rows
            if cursor is None:
                return

    def request(self, method: str, path: str, body: Any = None,
                params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
                idempotency_key: str | None = None) -> Any:
        """Any route: the decoded JSON of a 2xx (None for 204), else the error raised. A POST
        carries an Idempotency-Key like every paid call."""
        return self._run(self._request_call(method, path, body, params, headers,
                                            idempotency_key))

    # -- receipts ------------------------------------------------------------------------

    def receipt_keys(self, *, refresh: bool = False) -> dict[str, Any]:
        """The gateway's public receipt keys (JWKS), fetched once and kept."""
        if refresh or self._receipt_jwks is None:
            self._receipt_jwks = self.request("GET", "/v1/receipts/keys")
        return self._receipt_jwks

    def verify_receipt(self, token: str) -> dict[str, Any]:
        """The claims of a receipt signed by this gateway (``cost`` and ``balance_after`` as
        decimal strings); raises ReceiptInvalid when it was altered or is not the gateway's.
        A key id not yet seen fetches the keys again (a rotation)."""
        try:
            return verify_receipt(token, self.receipt_keys())
        except ReceiptInvalid:
            return verify_receipt(token, self.receipt_keys(refresh=True))

    # -- metered tools -------------------------------------------------------------------

    def metered(self, tool: str, *, cost: Callable[[Any], Money] | Money | None = None,
                max: Money | None = None, metadata: Mapping[str, Any] | None = None,
                task: str | None = None) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Wrap a sync or async function as a paid tool. A fixed price (or a constant
        ``cost``) is charged before it runs; with ``cost=lambda result: ...`` the call holds
        ``max``, runs, and captures the cost of its result (released if it raises). A
        refusal raises before the function runs: an unpaid tool never executes."""

        def wrap(fn: Callable[P, R]) -> Callable[P, R]:
            if inspect.iscoroutinefunction(fn):
                return self._metered_async(fn, tool, cost, max, metadata, task)
            return self._metered_sync(fn, tool, cost, max, metadata, task)

        return wrap

    def _metered_sync(self, fn: Callable[P, R], tool: str, cost: Any, max_cost: Money | None,
                      metadata: Mapping[str, Any] | None, task: str | None) -> Callable[P, R]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            if not callable(cost):
                self.charge(tool, cost=cost, metadata=metadata, task=task)
                return fn(*args, **kwargs)
            with self.hold(tool, max_cost, metadata=metadata, task=task) as held:
                result = fn(*args, **kwargs)
                paid, error = metered_cost(cost, result, held.amount)
                held.capture_ran(paid)
            if error is not None:
                raise error
            return result

        return run

    def _metered_async(self, fn: Callable[P, Any], tool: str, cost: Any,
                       max_cost: Money | None, metadata: Mapping[str, Any] | None,
                       task: str | None) -> Callable[P, Any]:
        @functools.wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> Any:
            if not callable(cost):
                await asyncio.to_thread(self.charge, tool, cost=cost, metadata=metadata,
                                        task=task)
                return await fn(*args, **kwargs)
            held = await asyncio.to_thread(self.hold, tool, max_cost, metadata=metadata,
                                           task=task)
            try:
                result = await fn(*args, **kwargs)
                paid, error = metered_cost(cost, result, held.amount)
                await asyncio.to_thread(held.capture_ran, paid)
            finally:
                if held.captured is None:
                    await asyncio.to_thread(held.close_quietly)
            if error is not None:
                raise error
            return result

        return run

    # -- sending -------------------------------------------------------------------------

    def _run(self, call: Call[T]) -> T:
        return self._finish(call, self._send(call))

    def _send(self, call: Call[Any]) -> httpx.Response:
        """The call's answer, sent again with the same key while it is lost or a 503."""
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = self._http.request(call.method, call.path, content=call.content,
                                              params=call.params, headers=call.headers)
            except RETRYABLE_ERRORS as exc:
                if last:
                    raise self._unreachable(exc) from None
                time.sleep(retry_pause_s(attempt, self.backoff_s))
                continue
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from None
            if response.status_code == RETRYABLE_STATUS and not last:
                time.sleep(retry_pause_s(attempt, self.backoff_s,
                                         response.headers.get("retry-after")))
                continue
            return response
        raise AssertionError("the last attempt returns or raises")


class Hold:
    """An open hold; as a context manager, released unless captured inside the block."""

    def __init__(self, client: Client, info: HoldInfo) -> None:
        self.client = client
        self.info = info
        self.hold_id = info.hold_id
        self.amount = info.amount
        self.balance = info.balance
        self.expires_at = info.expires_at
        self.captured: Capture | None = None
        self.released: Release | None = None

    def capture(self, cost: Money | None = None, *,
                metadata: Mapping[str, Any] | None = None) -> Capture:
        """Charge ``cost`` (at most the amount held; a fixed-price tool: omit it)."""
        self.captured = self.client.capture(self.hold_id, cost, metadata=metadata)
        return self.captured

    def release(self) -> Release:
        self.released = self.client.release(self.hold_id)
        return self.released

    def capture_ran(self, cost: str) -> Capture:
        """Capture for a metered tool that has run: ``cost``, or the whole hold when the
        gateway refuses that cost (a fixed-price tool's hold is captured at its price
        only): a tool that ran is never left unpaid."""
        try:
            return self.capture(cost)
        except InvalidRequest:
            return self.capture(to_amount(self.amount))

    def close_quietly(self) -> None:
        """Release after a failure; a release that fails too leaves the hold to expire by
        itself (at ``expires_at``) rather than hide the first error."""
        with contextlib.suppress(IOUError):
            self.release()

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.captured is not None or self.released is not None:
            return
        if exc_type is not None:
            self.close_quietly()
        else:
            self.release()

    def __repr__(self) -> str:
        return f"Hold({self.hold_id!r}, amount={self.amount}, captured={self.captured})"


class Tasks:
    """Tasks of the client's agent (``list`` also with the admin token): a task is a budget
    envelope that charges, holds and invokes naming its id count against."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def open(self, budget: Money, *, name: str | None = None, ttl_s: int | None = None,
             max_calls: Mapping[str, int] | None = None,
             idempotency_key: str | None = None) -> Task:
        """Open a task of ``budget`` (``max_calls``: calls per tool or category name)."""
        return self._client._run(self._client._task_open_call(budget, name, ttl_s, max_calls,
                                                              idempotency_key))

    def get(self, task_id: str) -> Task:
        return self._client._run(self._client._task_get_call(task_id))

    def close(self, task_id: str) -> Task:
        """Close the task (its open holds released); its summary."""
        return self._client._run(self._client._task_close_call(task_id))

    def list(self, agent: str, *, limit: int = 100) -> list[Task]:
        """The agent's recent tasks, newest first (the admin, or the agent itself)."""
        return self._client._run(self._client._tasks_list_call(agent, limit))
