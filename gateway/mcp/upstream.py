"""Client sessions to the upstream MCP servers, pooled: one live connection per server (and
per URL and credentials, so a change made by a PUT opens a new one), shared by every
agent's calls. One MCP connection carries many concurrent requests (each is its own HTTP
request, matched by JSON-RPC id), so a pool of one per server is enough; a connection that
failed is dropped and the next call opens a new one.

Each connection lives in a task of its own: the SDK's client is a stack of anyio context
managers that must be entered and left by the same task."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

log = logging.getLogger("iou.mcp")
# The SDK's HTTP client logs every request at INFO: one line per upstream call is noise.
logging.getLogger("httpx2").setLevel(logging.WARNING)

CONNECT_TIMEOUT_S = 5.0
# A pooled connection idle this long is opened again before use: a handshake-era upstream
# forgets idle sessions (the SDK's default is 30 minutes), and a call on a forgotten
# session would fail once.
IDLE_REOPEN_S = 300.0
CONNECTIONS_PER_UPSTREAM_MAX = 256


@dataclass(frozen=True)
class Upstream:
    """Where an upstream server is and the headers (opened credentials) it wants."""

    name: str
    url: str
    headers: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, name: str, url: str, headers: dict[str, str]) -> Upstream:
        return cls(name, url, tuple(sorted(headers.items())))


class UpstreamFailed(Exception):
    """The upstream could not be reached, or its connection broke (nothing was answered)."""

    @classmethod
    def of(cls, exc: BaseException) -> UpstreamFailed:
        """Named after the first failure inside ``exc`` (the SDK's task groups wrap what
        went wrong, e.g. a ConnectError, in exception groups)."""
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        if isinstance(exc, UpstreamFailed):
            return exc
        return cls(type(exc).__name__)


def _http_client(upstream: Upstream, timeout_s: float) -> httpx2.AsyncClient:
    limits = httpx2.Limits(max_connections=CONNECTIONS_PER_UPSTREAM_MAX,
                           max_keepalive_connections=64)
    timeout = httpx2.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S)
    return httpx2.AsyncClient(headers=dict(upstream.headers), timeout=timeout, limits=limits)


@contextlib.asynccontextmanager
async def connected(upstream: Upstream, timeout_s: float) -> AsyncIterator[Client]:
    """A client connected to ``upstream`` (for one-off use: the registration's listing)."""
    async with (_http_client(upstream, timeout_s) as http,
                Client(streamable_http_client(upstream.url, http_client=http),
                       read_timeout_seconds=timeout_s, cache=None) as client):
        yield client


async def list_tools(upstream: Upstream, timeout_s: float) -> list[dict[str, Any]]:
    """The upstream's tools as JSON objects (every page), on a connection of its own."""
    try:
        async with asyncio.timeout(timeout_s), connected(upstream, timeout_s) as client:
            return await _all_tools(client)
    except TimeoutError:
        raise
    except Exception as exc:
        raise UpstreamFailed.of(exc) from exc


async def _all_tools(client: Client) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):  # a bound on pages: an upstream that pages forever is cut off
        params = None if cursor is None else types.PaginatedRequestParams(cursor=cursor)
        page = await client.session.list_tools(params=params)
        tools += [t.model_dump(mode="json", by_alias=True, exclude_none=True)
                  for t in page.tools]
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


@dataclass
class _Connection:
    """One live client to one upstream, kept open by its own task until closed."""

    upstream: Upstream
    timeout_s: float
    ready: asyncio.Future[Client] = field(default_factory=asyncio.Future)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    used_at: float = field(default_factory=time.monotonic)
    broken: bool = False

    def start(self) -> None:
        # A context of its own: the connection outlives the request that opened it, whose
        # request id and agent its log lines must not carry.
        self.task = asyncio.create_task(self._run(), name=f"mcp-upstream-{self.upstream.name}",
                                        context=contextvars.Context())

    async def _run(self) -> None:
        try:
            async with connected(self.upstream, self.timeout_s) as client:
                self.ready.set_result(client)
                await self.stop.wait()
        except BaseException as exc:  # the task's end: whatever ended it ends the connection
            self.broken = True
            if not self.ready.done():
                self.ready.set_exception(UpstreamFailed.of(exc))
                if not isinstance(exc, asyncio.CancelledError):
                    log.warning("MCP upstream %s: could not connect (%s)", self.upstream.name,
                                _cause(exc))
            elif not isinstance(exc, asyncio.CancelledError):
                log.warning("MCP upstream %s: connection ended (%s)", self.upstream.name,
                            _cause(exc))
        finally:
            self.broken = True

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(self.task), CONNECT_TIMEOUT_S)
            if not self.task.done():
                self.task.cancel()


def _cause(exc: BaseException) -> str:
    """What ended a connection, for the operator's log: the first failure inside the SDK's
    exception groups, with its message (the caller's answer names its type only)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).replace("\n", " ")
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


class UpstreamPool:
    """The worker's connections to upstream MCP servers, one per (name, URL, headers)."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._connections: dict[Upstream, _Connection] = {}
        self._lock = asyncio.Lock()

    async def call_tool(self, upstream: Upstream, tool: str, arguments: dict[str, Any],
                        meta: types.RequestParamsMeta | None = None) -> types.CallToolResult:
        """Call ``tool`` on ``upstream``; raises UpstreamFailed when the connection could
        not be opened or broke, TimeoutError past the timeout, and MCPError when the
        upstream answered with a JSON-RPC error."""
        connection = await self._connection(upstream)
        try:
            async with asyncio.timeout(self._timeout_s):
                client = await asyncio.shield(connection.ready)
                connection.used_at = time.monotonic()
                return await client.call_tool(tool, arguments, meta=meta)
        except (MCPError, TimeoutError):
            # An answer that is an error, or a slow tool: the connection itself is sound
            # (and carries other agents' calls).
            raise
        except UpstreamFailed:
            self._forget(connection)
            raise
        except Exception as exc:
            self._forget(connection)
            raise UpstreamFailed.of(exc) from exc

    async def _connection(self, upstream: Upstream) -> _Connection:
        async with self._lock:
            found = self._connections.get(upstream)
            if found is not None and not found.broken and (
                    time.monotonic() - found.used_at < IDLE_REOPEN_S):
                return found
            if found is not None:
                self._forget(found)
            await self._close_others_of(upstream.name)
            opened = _Connection(upstream, self._timeout_s)
            opened.start()
            self._connections[upstream] = opened
            return opened

    async def _close_others_of(self, name: str) -> None:
        """A server's connections under an older URL or credentials are closed (a PUT
        changed them)."""
        for key in [k for k in self._connections if k.name == name]:
            self._forget(self._connections[key])

    def _forget(self, connection: _Connection) -> None:
        if self._connections.get(connection.upstream) is connection:
            del self._connections[connection.upstream]
        connection.broken = True
        asyncio.get_running_loop().create_task(connection.close())

    async def forget_server(self, name: str) -> None:
        """Close the connections to ``name`` (it was changed or removed)."""
        async with self._lock:
            await self._close_others_of(name)

    async def close(self) -> None:
        connections = list(self._connections.values())
        self._connections.clear()
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
