"""The charge route without framework layers: plain ASGI in front of the Starlette app.

POST /v1/charge is the call agents make most; it is served here alone (the Starlette app
has no route for it), skipping Starlette's Request object, routing and middleware
(measured: they cost more CPU than the metering itself) while running the same body
reader, validation, authentication, engine call and error bodies as the rest of the API.
Everything else goes on to the Starlette app.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from gateway.api import receipts
from gateway.api.agent import charge_one, charge_receipt
from gateway.api.auth import Authenticator
from gateway.api.body import configure_json_limits, json_body, read_asgi_body
from gateway.api.context import Context
from gateway.api.payloads import charge_payload
from gateway.api.request_id import HEADER as REQUEST_ID_HEADER
from gateway.api.request_id import HEADER_BYTES as REQUEST_ID_HEADER_BYTES
from gateway.api.request_id import RequestIds, accept_request_id
from gateway.api.requests import charge_request, idempotency_key
from gateway.api.responses import error_body
from gateway.metering.errors import GatewayError, unavailable
from gateway.observability import CHARGE_LATENCY, count_error
from gateway.store.errors import StoreUnavailable

CHARGE_PATH = "/v1/charge"
ROUTES = (("POST", CHARGE_PATH),)  # (method, path) served here, not by the Starlette app
INTERNAL_BODY = orjson.dumps({"error": "internal",
                              "message": "The gateway failed; nothing was charged twice."})
log = logging.getLogger("iou.app")


class ChargeFastPath:
    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.others = RequestIds(app)  # every other route: the same request id, as middleware
        settings = app.state.settings
        configure_json_limits(settings.json_depth_max, settings.json_number_chars_max)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != CHARGE_PATH:
            await self.others(scope, receive, send)
            return
        headers = _headers(scope)
        request_id = accept_request_id(headers.get(REQUEST_ID_HEADER))
        if scope["method"] != "POST":
            count_error(405)
            await _respond(send, 405, _not_allowed(scope["method"]), [(b"allow", b"POST")],
                           request_id)
            return
        ctx: Context = self.app.state.ctx  # set by the Starlette app's lifespan
        started = time.perf_counter()
        try:
            status, body, extra = await _charge(ctx, scope, headers, receive)
        except Exception:  # the contract's JSON 500, as the Starlette routes answer it
            log.exception("unhandled error on POST %s", CHARGE_PATH)
            status, body, extra = 500, INTERNAL_BODY, []
        await _respond(send, status, body, extra, request_id)
        if status == 200:
            CHARGE_LATENCY.observe(time.perf_counter() - started)
        else:
            count_error(status)


async def _charge(ctx: Context, scope: Scope, headers: dict[str, str], receive: Receive
                  ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    client = scope["client"][0] if scope.get("client") else "unknown"
    try:
        caller = await ctx.auth.caller_from(headers.get("authorization"), client,
                                            headers.get("x-forwarded-for"))
        agent = Authenticator.require_agent(caller)
        raw = await read_asgi_body(receive, headers.get("content-length"),
                                   ctx.settings.body_bytes_max)
        body = json_body(headers.get("content-type", ""), raw)
        key = idempotency_key(headers.get("idempotency-key"))
        charge = charge_request(body, ctx.settings.amount_max_micros, key)
        with_receipt = receipts.asked(headers)
        result = await charge_one(ctx, agent, charge)
    except GatewayError as exc:
        return error_body(exc)
    except StoreUnavailable as exc:  # one that reached here unmapped: still the 503
        return error_body(unavailable(exc))
    payload = charge_payload(result)
    if with_receipt:
        payload["receipt"] = charge_receipt(ctx, result, charge.task)
    return 200, orjson.dumps(payload), []


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


def _not_allowed(method: str) -> bytes:
    return orjson.dumps({"error": "method_not_allowed",
                         "message": f"{method} is not allowed here."})


async def _respond(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]],
                   request_id: str) -> None:
    headers: list[Any] = [(b"content-type", b"application/json"),
                          (b"content-length", str(len(body)).encode()),
                          (REQUEST_ID_HEADER_BYTES, request_id.encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
