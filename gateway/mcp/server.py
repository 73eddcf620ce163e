"""The gateway's MCP server face at ``/mcp`` (streamable HTTP, the official SDK's session
manager), one per worker.

Every HTTP request to ``/mcp`` is authenticated with the agent key (a Bearer token) before
the SDK sees it: a missing, unknown or revoked key is the contract's JSON 401, whatever
the request. The request then carries its agent, and the handlers meter for it.

The endpoint is stateless (the SDK's stateless mode for the initialize-handshake protocol;
the 2026-07-28 protocol has no sessions anyway): no ``Mcp-Session-Id``, each request stands
alone on its own key. So any worker answers any request (a session kept in one worker's
memory would be unknown to the others behind the same port), and no request can act for
another key's agent, whatever it names. The gateway sends no message of its own, so JSON
answers (no SSE) and no GET stream.

``tools/list`` offers ``<server>.<tool>`` for each tool a registered server listed that
has a catalog entry of that name, with ``_meta`` ``iou/price``, ``iou/category`` and
``iou/pricing``; ``tools/call`` is gateway/mcp/calls.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from gateway.api.body import read_asgi_body
from gateway.api.context import Context
from gateway.api.responses import error_response
from gateway.metering.errors import GatewayError, UnsupportedMediaType, unavailable
from gateway.metering.models import Tool
from gateway.metering.money import format_amount
from gateway.store.errors import StoreUnavailable

from . import calls, registry
from .calls import META_PREFIX, Metering, refusal_result
from .upstream import UpstreamPool

log = logging.getLogger("iou.mcp")

AGENT_SCOPE_KEY = "iou.agent"  # the ASGI scope entry naming the authenticated agent
SERVER_NAME = "iou-gateway"
INTERNAL_ERROR = -32603


class McpFront:
    """The MCP server, its session manager and the upstream pool of one worker."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.pool = UpstreamPool(float(ctx.settings.upstream_timeout_s))
        self.metering = Metering(ctx.engine, ctx.engine.conn, self.pool, ctx.settings,
                                 ctx.spawn, self._on_depleted, ctx.receipts)
        self.server: Server[Any] = Server(SERVER_NAME, on_list_tools=self._list_tools,
                                          on_call_tool=self._call_tool)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.manager = StreamableHTTPSessionManager(
            self.server, json_response=True, stateless=True,
            max_request_body_size=ctx.settings.body_bytes_max)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[McpFront]:
        async with self.manager.run():
            try:
                yield self
            finally:
                await self.pool.close()

    async def start(self) -> None:
        """Run the session manager in a task of its own until ``stop``: its anyio task group
        must be left by the task that entered it, and an app's lifespan may start and stop
        in two different tasks (an in-process test client does)."""
        started = asyncio.Event()
        self._stopping = asyncio.Event()

        async def serve() -> None:
            async with self.running():
                started.set()
                await self._stopping.wait()

        self._task = asyncio.create_task(serve(), name="mcp-front")
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self._task.done():
            self._task.result()  # it failed to start: say why

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def _on_depleted(self, agent: str, exc: GatewayError) -> None:
        from gateway.webhooks.deliverer import queue_depleted

        await queue_depleted(self.ctx.engine, agent, exc)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One HTTP request to /mcp: authenticate, then hand it to the SDK."""
        request = Request(scope, receive)
        try:
            agent = await self.ctx.auth.agent(request)
        except GatewayError as exc:
            await error_response(exc)(scope, receive, send)
            return
        except StoreUnavailable as exc:
            await error_response(unavailable(exc))(scope, receive, send)
            return
        scope[AGENT_SCOPE_KEY] = agent
        if request.method == "POST":
            # The HTTP-level refusals in the contract's shape (the SDK's are plain text):
            # read the body here, then hand it on whole.
            try:
                receive = await self._checked_body(request, receive)
            except GatewayError as exc:
                await error_response(exc)(scope, receive, send)
                return
        await self.manager.handle_request(scope, receive, send)

    async def _checked_body(self, request: Request, receive: Receive) -> Receive:
        """The request's body, refused when it is not application/json (415), larger than
        IOU_BODY_BYTES_MAX (413) or cut off (400), as a receive that replays it."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise UnsupportedMediaType("The body must be sent as application/json.")
        raw = await read_asgi_body(receive, request.headers.get("content-length"),
                                   self.ctx.settings.body_bytes_max)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}

        return replay

    async def _list_tools(self, ctx: ServerRequestContext[Any, Any],
                          params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        _agent_of(ctx)
        try:
            await self.ctx.engine.refresh_catalog()
            servers = await registry.all_servers(self.ctx.engine.conn)
        except (StoreUnavailable, GatewayError) as exc:
            raise MCPError(INTERNAL_ERROR, "unavailable: the gateway's store cannot be "
                           "read; try again.") from exc
        catalog = {t.name: t for t in self.ctx.engine.tools()}
        offered = [_offered(server.name, raw, catalog[f"{server.name}.{raw['name']}"])
                   for server in servers for raw in server.tools
                   if f"{server.name}.{raw.get('name')}" in catalog]
        return types.ListToolsResult(tools=offered)

    async def _call_tool(self, ctx: ServerRequestContext[Any, Any],
                         params: types.CallToolRequestParams) -> types.CallToolResult:
        agent = _agent_of(ctx)
        meta: dict[str, Any] | None = None if params.meta is None else dict(params.meta)
        try:
            return await calls.call_tool(self.metering, agent, params.name,
                                         dict(params.arguments or {}), meta)
        except StoreUnavailable as exc:
            return refusal_result(unavailable(exc))


def _agent_of(ctx: ServerRequestContext[Any, Any]) -> str:
    """The agent of the HTTP request that carried this message (authenticated by handle)."""
    request = ctx.request
    agent = request.scope.get(AGENT_SCOPE_KEY) if isinstance(request, Request) else None
    if not isinstance(agent, str):
        raise MCPError(INTERNAL_ERROR, "The request carries no authenticated agent.")
    return agent


def _offered(server: str, raw: dict[str, Any], entry: Tool) -> types.Tool:
    """An upstream tool as the gateway offers it: renamed, with its price in ``_meta``."""
    meta = {k: v for k, v in (raw.get("_meta") or {}).items() if not k.startswith(META_PREFIX)}
    meta.update({META_PREFIX + "price": format_amount(entry.price_micros),
                 META_PREFIX + "category": entry.category,
                 META_PREFIX + "pricing": entry.pricing})
    return types.Tool.model_validate({**raw, "name": f"{server}.{raw['name']}", "_meta": meta})


class McpEndpoint:
    """The ASGI app of the /mcp route: the worker's McpFront (set by the app's lifespan)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front: McpFront = scope["app"].state.mcp
        await front.handle(scope, receive, send)
