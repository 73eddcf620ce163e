"""A small upstream MCP server for tests/test_mcp.py and loadtests/bench_mcp.py (the official
SDK's low-level server over streamable HTTP), run in a subprocess:
``python -m loadtests.mcp_upstream PORT SECRET``.

Every request must carry ``x-upstream-secret: SECRET`` (else 401): only the gateway has it.
Its tools: ``echo`` (for a fixed price), ``measure`` (variable: reports the cost it is told
to, or nonsense, in ``_meta`` ``iou/cost``), ``fail`` (an error result), ``boom`` (a
JSON-RPC error), ``slow`` (sleeps ``seconds``), ``free`` and ``unpriced``. ``GET /calls``
answers how many times each tool ran (the test's view of the upstream, not the gateway's),
``GET /receipts`` the last ``_meta`` ``iou/receipt`` each tool was called with (the gateway's
proof of payment).
"""

from __future__ import annotations

import asyncio
import collections
import sys
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

CALLS: collections.Counter[str] = collections.Counter()
RECEIPTS: dict[str, str] = {}
OBJECT: dict[str, Any] = {"type": "object"}
TOOLS = [
    types.Tool(name="echo", description="Echoes its text.",
               input_schema={"type": "object", "properties": {"text": {"type": "string"}}}),
    types.Tool(name="measure", description="Costs what it says.", input_schema=OBJECT),
    types.Tool(name="fail", description="Always fails.", input_schema=OBJECT),
    types.Tool(name="boom", description="Answers a protocol error.", input_schema=OBJECT),
    types.Tool(name="slow", description="Sleeps.", input_schema=OBJECT),
    types.Tool(name="free", description="Costs nothing.", input_schema=OBJECT),
    types.Tool(name="unpriced", description="Not in the catalog.", input_schema=OBJECT),
]


async def list_tools(ctx: ServerRequestContext[Any, Any],
                     params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


def _text(text: str, **extra: Any) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], **extra)


async def call_tool(ctx: ServerRequestContext[Any, Any],
                    params: types.CallToolRequestParams) -> types.CallToolResult:
    arguments = params.arguments or {}
    CALLS[params.name] += 1
    receipt = (params.meta or {}).get("iou/receipt")
    if isinstance(receipt, str):
        RECEIPTS[params.name] = receipt
    if params.name == "measure":
        return _text("measured", _meta={"iou/cost": arguments.get("cost"),
                                        "iou/charge_id": "forged"})
    if params.name == "fail":
        return _text("it failed", is_error=True)
    if params.name == "boom":
        raise RuntimeError("boom")
    if params.name == "slow":
        await asyncio.sleep(float(arguments.get("seconds", 5)))
    return _text(f"{params.name}: {arguments.get('text', '')}", _meta={"up/own": "kept"})


async def calls(request: Request) -> Response:
    return JSONResponse(dict(CALLS))


async def receipts(request: Request) -> Response:
    return JSONResponse(RECEIPTS)


class RequireSecret:
    """Refuses every request without the secret header (the upstream's credential)."""

    def __init__(self, app: ASGIApp, secret: str) -> None:
        self.app = app
        self.secret = secret.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in ("/calls", "/receipts") and (
                dict(scope["headers"]).get(b"x-upstream-secret") != self.secret):
            await JSONResponse({"error": "no secret"}, status_code=401)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def main() -> None:
    port, secret = int(sys.argv[1]), sys.argv[2]
    server: Server[Any] = Server("test-upstream", on_list_tools=list_tools,
                                 on_call_tool=call_tool)
    app = server.streamable_http_app(custom_starlette_routes=[Route("/calls", calls),
                                                              Route("/receipts", receipts)],
                                     host="0.0.0.0")
    uvicorn.run(RequireSecret(app, secret), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
