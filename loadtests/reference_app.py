"""The reference: a bare Starlette JSON endpoint, served with the gateway's server settings."""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def reference(request: Request) -> Response:
    body = orjson.loads(await request.body())
    return Response(orjson.dumps({"ok": True, "tool": body.get("tool")}),
                    media_type="application/json")


async def ping(request: Request) -> Response:
    """A constant GET: proves the load generator can drive far more than the gateway."""
    return Response(b'{"ok":true}', media_type="application/json")


app = Starlette(routes=[Route("/ref", reference, methods=["POST"]),
                        Route("/ping", ping, methods=["GET"])])
