"""What every route needs, built once per worker in the app's lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.auth import Authenticator
from gateway.api.responses import error_response
from gateway.config import Settings
from gateway.ledger.identity import StoreGuard
from gateway.ledger.store import LedgerStore
from gateway.logs import AGENT
from gateway.metering.engine import Engine
from gateway.metering.errors import GatewayError, unavailable
from gateway.receipts import ReceiptSigner
from gateway.store.errors import StoreUnavailable
from gateway.webhooks.deliverer import WebhookDeliverer


@dataclass
class Context:
    engine: Engine
    settings: Settings
    auth: Authenticator
    http: httpx.AsyncClient
    webhooks: WebhookDeliverer
    ledger: LedgerStore
    # Seconds the ledger is behind, or None when no ledger writer is configured.
    ledger_lag_s: Callable[[], Awaitable[float | None]] | None = None
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    # Whether Redis is the store the ledger describes (None: not checked, e.g. in tests).
    guard: StoreGuard | None = None
    # Signs receipts (gateway/receipts/); None: no receipts (a bare test context).
    receipts: ReceiptSigner | None = None

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` off the request's path, keeping a reference until it ends."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


Handler = Callable[[Context, Request], Awaitable[Response]]


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint that maps GatewayError to the contract's JSON error (and a
    store failure that reached it unmapped to the contract's 503, never a 500)."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request.app.state.ctx, request)
        except GatewayError as exc:
            if AGENT.get() is None and "agent" in request.path_params:
                AGENT.set(request.path_params["agent"])  # an admin route about an agent
            return error_response(exc)
        except StoreUnavailable as exc:
            return error_response(unavailable(exc))

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run
