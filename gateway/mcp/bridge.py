"""``iou mcp --key KEY``: a stdio MCP server for hosts that only speak stdio, in front of the
gateway's ``/mcp`` (streamable HTTP, with the agent key).

The bridge is an MCP server on stdin/stdout whose ``tools/list`` and ``tools/call`` are
those of the gateway, answered as the gateway answered them (``_meta`` with the price, the
charge and the balance, refusals as error results): it holds no money and no upstream
credential, only the agent key. Nothing but the protocol goes to stdout; what goes wrong
is said on stderr."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

BRIDGE_NAME = "iou-gateway"
CONNECT_TIMEOUT_S = 10.0
# A tool call may take as long as the gateway lets an upstream take (IOU_UPSTREAM_TIMEOUT_S
# is at most 600 s), plus the gateway's own work.
CALL_TIMEOUT_S = 660.0


class BridgeError(Exception):
    """The gateway could not be reached (code ``unavailable``), or refused the key (the
    gateway's own code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@contextlib.asynccontextmanager
async def gateway_client(url: str, key: str) -> AsyncIterator[Client]:
    """A client of the gateway's /mcp with the agent key (BridgeError when refused)."""
    timeout = httpx2.Timeout(CALL_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=timeout)
    endpoint = url.rstrip("/") + "/mcp"
    async with http:
        await _check_key(http, endpoint)
        async with Client(streamable_http_client(endpoint, http_client=http), cache=None,
                          read_timeout_seconds=CALL_TIMEOUT_S) as client:
            yield client


async def _check_key(http: httpx2.AsyncClient, endpoint: str) -> None:
    """Fail with the gateway's own words before speaking MCP: a wrong key or URL is one
    clear line, not a protocol error in the host."""
    try:
        answer = await http.post(endpoint, json={"jsonrpc": "2.0", "id": 0, "method": "ping"},
                                 headers={"accept": "application/json, text/event-stream"})
    except httpx2.HTTPError as exc:
        raise BridgeError("unavailable", f"cannot reach the gateway at {endpoint} "
                          f"({type(exc).__name__})") from None
    if answer.status_code in (401, 403, 429):
        try:
            error = answer.json()
        except ValueError:
            error = {}
        raise BridgeError(str(error.get("error", answer.status_code)),
                          f"the gateway refused the key: {error.get('message', '')}")


def bridge_server(gateway: Client) -> Server[Any]:
    async def list_tools(ctx: ServerRequestContext[Any, Any],
                         params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return await gateway.session.list_tools(params=params)

    async def call_tool(ctx: ServerRequestContext[Any, Any],
                        params: types.CallToolRequestParams) -> types.CallToolResult:
        return await gateway.session.call_tool(params.name, params.arguments, meta=params.meta)

    return Server(BRIDGE_NAME, on_list_tools=list_tools, on_call_tool=call_tool)


async def run_bridge(url: str, key: str) -> None:
    """Serve stdin/stdout until the host closes stdin."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    async with gateway_client(url, key) as gateway:
        server = bridge_server(gateway)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
