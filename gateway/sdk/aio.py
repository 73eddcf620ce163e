"""``AsyncClient``: the same methods as ``Client``, as coroutines; safe to share between
tasks of one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Mapping
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
from gateway.sdk.client import CONNECTIONS_MAX
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


class AsyncClient(BaseClient):
    """See ``Client``: the same parameters, retries and results."""

    def __init__(self, url: str | None = None, key: str | None = None, *,
                 max_retries: int = 2, timeout_s: float = 30.0,
                 on_warning: Callable[[str, dict[str, Any]], None] | None = None,
                 backoff_s: float = 0.25) -> None:
        super().__init__(url, key, max_retries=max_retries, timeout_s=timeout_s,
                         on_warning=on_warning, backoff_s=backoff_s)
        limits = httpx.Limits(max_connections=CONNECTIONS_MAX,
                              max_keepalive_connections=CONNECTIONS_MAX)
        self._http = httpx.AsyncClient(base_url=self.url, headers=self._base_headers(),
                                       timeout=timeout_s, limits=limits)
        self._receipt_jwks: dict[str, Any] | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- agent routes --------------------------------------------------------------------

    async def charge(self, tool: str, *, cost: Money | None = None,
                     metadata: Mapping[str, Any] | None = None, task: str | None = None,
                     idempotency_key: str | None = None) -> Charge:
        return await self._run(self._charge_call(tool, cost, metadata, task, idempotency_key))

    async def charges(self, items: Iterable[Mapping[str, Any]], *,
                      idempotency_key: str | None = None) -> list[Charge | IOUError]:
        return await self._run(self._charges_call(items, idempotency_key))

    def hold(self, tool: str, max: Money | None = None, *, ttl_s: int | None = None,
             metadata: Mapping[str, Any] | None = None, task: str | None = None,
             idempotency_key: str | None = None) -> PendingHold:
        """``await client.hold(...)`` or ``async with client.hold(...) as h:`` (released
        when the block raises or ends without ``await h.capture(...)``)."""
        call = self._hold_call(tool, max, ttl_s, metadata, task, idempotency_key)
        return PendingHold(self, call)

    async def capture(self, hold_id: str, cost: Money | None = None, *,
                      metadata: Mapping[str, Any] | None = None,
                      idempotency_key: str | None = None) -> Capture:
        return await self._run(self._capture_call(hold_id, cost, metadata, idempotency_key))

    async def release(self, hold_id: str, *, idempotency_key: str | None = None) -> Release:
        return await self._run(self._release_call(hold_id, idempotency_key))

    async def invoke(  # noqa: PLR0913 - the invoke's options, each named
            self, tool: str, payload: Any = None, *, content: bytes | None = None,
            max_cost: Money | None = None, headers: Mapping[str, str] | None = None,
            idempotency_key: str | None = None, task: str | None = None) -> Invoked:
        return await self._run(self._invoke_call(tool, payload, content, max_cost, headers,
                                                 idempotency_key, task))

    @property
    def tasks(self) -> AsyncTasks:
        """The agent's tasks (budget envelopes): ``open``, ``get``, ``close``, ``list``."""
        return AsyncTasks(self)

    async def status(self) -> Status:
        return await self._run(self._status_call())

    async def shadow(self, agent: str) -> dict[str, Any]:
        """As Client.shadow."""
        return await self._run(self._shadow_call(agent))

    # -- admin routes --------------------------------------------------------------------

    async def limits(self, agent: str, patch: Mapping[str, Any] | None = None
                     ) -> dict[str, Any]:
        """As Client.limits."""
        return await self._run(self._limits_call(agent, patch))

    async def ledger(self, agent: str, *, kind: str | None = None, tool: str | None = None,
                     page_size: int = PAGE_SIZE_DEFAULT) -> AsyncIterator[LedgerEntry]:
        before: str | None = None
        while True:
            rows, before = await self._run(self._ledger_call(agent, before, kind, tool,
                                                             page_size))
            for row in rows:
                yield row
            if before is None:
                return

    async def refund(self, charge_id: str, amount: Money | None = None, *,
                     reason: str | None = None, idempotency_key: str | None = None) -> Refund:
        """Give back ``amount`` (default: what is left) of a charge, batch item or capture."""
        return await self._run(self._refund_call(charge_id, amount, reason, idempotency_key))

    async def debit(self, agent: str, amount: Money, *, reason: str,
                    idempotency_key: str | None = None) -> Debit:
        """Take ``amount`` back from ``agent``'s available balance (402 beyond it)."""
        return await self._run(self._debit_call(agent, amount, reason, idempotency_key))

    async def create_child(self, parent: str, name: str, amount: Money, *,
                           limits: Mapping[str, Any] | None = None,
                           idempotency_key: str | None = None) -> Child:
        """A sub-agent of ``parent`` funded with ``amount`` from its balance."""
        return await self._run(self._child_call(parent, name, amount, limits,
                                                idempotency_key))

    async def reclaim(self, child: str, amount: Money | None = None, *,
                      idempotency_key: str | None = None) -> Reclaim:
        """Move ``amount`` (default: all it has available) from ``child`` to its parent."""
        return await self._run(self._reclaim_call(child, amount, idempotency_key))

    async def agents(self, *, page_size: int = PAGE_SIZE_DEFAULT) -> AsyncIterator[AgentSummary]:
        cursor: str | None = None
        while True:
            rows, cursor = await self._run(self._agents_call(cursor, page_size))
            for row in rows:
                yield row
            if cursor is None:
                return

    async def request(self, method: str, path: str, body: Any = None,
                      params: Mapping[str, str] | None = None,
                      headers: Mapping[str, str] | None = None,
                      idempotency_key: str | None = None) -> Any:
        return await self._run(self._request_call(method, path, body, params, headers,
                                                  idempotency_key))

    # -- receipts ------------------------------------------------------------------------

    async def receipt_keys(self, *, refresh: bool = False) -> dict[str, Any]:
        """The gateway's public receipt keys (JWKS), fetched once and kept."""
        if refresh or self._receipt_jwks is None:
            self._receipt_jwks = await self.request("GET", "/v1/receipts/keys")
        return self._receipt_jwks

    async def verify_receipt(self, token: str) -> dict[str, Any]:
        """As Client.verify_receipt."""
        try:
            return verify_receipt(token, await self.receipt_keys())
        except ReceiptInvalid:
            return verify_receipt(token, await self.receipt_keys(refresh=True))

    # -- metered tools -------------------------------------------------------------------

    def metered(self, tool: str, *, cost: Callable[[Any], Money] | Money | None = None,
                max: Money | None = None, metadata: Mapping[str, Any] | None = None,
                task: str | None = None
                ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
        """As ``Client.metered``, for async functions (a sync tool: use ``Client``)."""

        def wrap(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"AsyncClient.metered wraps async functions; {fn!r} is not "
                                "one (wrap it with Client.metered)")

            @functools.wraps(fn)
            async def run(*args: P.args, **kwargs: P.kwargs) -> R:
                if not callable(cost):
                    await self.charge(tool, cost=cost, metadata=metadata, task=task)
                    return await fn(*args, **kwargs)
                async with self.hold(tool, max, metadata=metadata, task=task) as held:
                    result = await fn(*args, **kwargs)
                    paid, error = metered_cost(cost, result, held.amount)
                    await held.capture_ran(paid)
                if error is not None:
                    raise error
                return result

            return run

        return wrap

    # -- sending -------------------------------------------------------------------------

    async def _run(self, call: Call[T]) -> T:
        return self._finish(call, await self._send(call))

    async def _send(self, call: Call[Any]) -> httpx.Response:
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = await self._http.request(call.method, call.path,
                                                    content=call.content, params=call.params,
                                                    headers=call.headers)
            except RETRYABLE_ERRORS as exc:
                if last:
                    raise self._unreachable(exc) from None
                await asyncio.sleep(retry_pause_s(attempt, self.backoff_s))
                continue
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from None
            if response.status_code == RETRYABLE_STATUS and not last:
                await asyncio.sleep(retry_pause_s(attempt, self.backoff_s,
                                                  response.headers.get("retry-after")))
                continue
            return response
        raise AssertionError("the last attempt returns or raises")


class AsyncHold:
    """An open hold of an ``AsyncClient``; see ``Hold``."""

    def __init__(self, client: AsyncClient, info: HoldInfo) -> None:
        self.client = client
        self.info = info
        self.hold_id = info.hold_id
        self.amount = info.amount
        self.balance = info.balance
        self.expires_at = info.expires_at
        self.captured: Capture | None = None
        self.released: Release | None = None

    async def capture(self, cost: Money | None = None, *,
                      metadata: Mapping[str, Any] | None = None) -> Capture:
        self.captured = await self.client.capture(self.hold_id, cost, metadata=metadata)
        return self.captured

    async def release(self) -> Release:
        self.released = await self.client.release(self.hold_id)
        return self.released

    async def capture_ran(self, cost: str) -> Capture:
        """As ``Hold.capture_ran``: ``cost``, or the whole hold when the gateway refuses it."""
        try:
            return await self.capture(cost)
        except InvalidRequest:
            return await self.capture(to_amount(self.amount))

    async def close_quietly(self) -> None:
        # The hold expires by itself; the first error is the one to see.
        with contextlib.suppress(IOUError):
            await self.release()

    async def __aenter__(self) -> AsyncHold:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.captured is not None or self.released is not None:
            return
        if exc_type is not None:
            await self.close_quietly()
        else:
            await self.release()


class PendingHold:
    """A hold being opened: await it, or use it with ``async with``."""

    def __init__(self, client: AsyncClient, call: Call[HoldInfo]) -> None:
        self._client = client
        self._call = call
        self._hold: AsyncHold | None = None

    async def _open(self) -> AsyncHold:
        self._hold = AsyncHold(self._client, await self._client._run(self._call))
        return self._hold

    def __await__(self) -> Generator[Any, None, AsyncHold]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncHold:
        return await self._open()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._hold is not None
        await self._hold.__aexit__(exc_type, exc, tb)


class AsyncTasks:
    """``Client.tasks`` for the AsyncClient: the same methods, awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def open(self, budget: Money, *, name: str | None = None, ttl_s: int | None = None,
                   max_calls: Mapping[str, int] | None = None,
                   idempotency_key: str | None = None) -> Task:
        return await self._client._run(self._client._task_open_call(
            budget, name, ttl_s, max_calls, idempotency_key))

    async def get(self, task_id: str) -> Task:
        return await self._client._run(self._client._task_get_call(task_id))

    async def close(self, task_id: str) -> Task:
        return await self._client._run(self._client._task_close_call(task_id))

    async def list(self, agent: str, *, limit: int = 100) -> list[Task]:
        return await self._client._run(self._client._tasks_list_call(agent, limit))
