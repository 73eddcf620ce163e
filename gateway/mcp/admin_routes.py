"""Admin routes for upstream MCP servers: ``PUT``, ``GET`` and ``DELETE``
``/v1/mcp/servers/{server}`` and ``GET /v1/mcp/servers``.

A PUT connects to the upstream and lists its tools before storing anything: an upstream
that cannot be reached is 502 ``upstream_unavailable`` (504 ``upstream_timeout`` when it
does not answer in time), as for invoke. The headers (the upstream's secrets) are stored
sealed and never shown again; the answers name the tools the upstream listed."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.body import Fields, read_json
from gateway.api.context import Context, endpoint
from gateway.api.responses import iso_ms, json_response
from gateway.metering.errors import InvalidRequest

from . import registry
from .server import McpFront

HEADER_NAME_RE = re.compile(r"[A-Za-z0-9-]{1,64}")
HEADER_VALUE_RE = re.compile(r"[\x20-\x7e]{0,4096}")
HEADERS_MAX = 16
URL_CHARS_MAX = 2048


def _front(request: Request) -> McpFront:
    front: McpFront = request.app.state.mcp
    return front


def _payload(server: registry.McpServer) -> dict[str, Any]:
    return {"server": server.name, "url": server.url, "tools": server.tool_names(),
            "updated_at": iso_ms(server.updated_ms)}


@endpoint
async def put_server(ctx: Context, request: Request) -> Response:
    await ctx.auth.admin(request)
    name = registry.check_server_name(request.path_params["server"])
    fields = Fields(await read_json(request, ctx.settings.body_bytes_max), ("url", "headers"))
    url = fields.text("url", URL_CHARS_MAX, required=True)
    assert url is not None
    headers = _headers(fields.obj("headers"))
    server = await registry.register(ctx.engine.conn, ctx.settings, name, url, headers,
                                     float(ctx.settings.upstream_timeout_s))
    await _front(request).pool.forget_server(name)  # the next call uses the new URL/headers
    return json_response(200, _payload(server))


def _headers(value: dict[str, Any] | None) -> dict[str, str] | None:
    if value is None:
        return None
    if len(value) > HEADERS_MAX:
        raise InvalidRequest("headers", f"may hold at most {HEADERS_MAX}")
    for name, text in value.items():
        if not HEADER_NAME_RE.fullmatch(name):
            raise InvalidRequest("headers", f"has an invalid header name {name!r}")
        if not isinstance(text, str) or not HEADER_VALUE_RE.fullmatch(text):
            raise InvalidRequest(f"headers.{name}", "must be printable ASCII")
    return {str(k): str(v) for k, v in value.items()}


@endpoint
async def get_server(ctx: Context, request: Request) -> Response:
    await ctx.auth.admin(request)
    server = await registry.get(ctx.engine.conn, request.path_params["server"])
    return json_response(200, _payload(server))


@endpoint
async def list_servers(ctx: Context, request: Request) -> Response:
    await ctx.auth.admin(request)
    servers = await registry.all_servers(ctx.engine.conn)
    return json_response(200, {"servers": [_payload(s) for s in servers]})


@endpoint
async def delete_server(ctx: Context, request: Request) -> Response:
    await ctx.auth.admin(request)
    name = request.path_params["server"]
    await registry.remove(ctx.engine.conn, name)
    await _front(request).pool.forget_server(name)
    return Response(status_code=204)
