"""Operations routes: /healthz, /readyz, /metrics, /openapi.json."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway import keys
from gateway.api import metrics
from gateway.api.context import Context, endpoint
from gateway.api.openapi import openapi_document
from gateway.api.responses import json_response
from gateway.errors import GatewayError
from gateway.ledger.lag import ledger_backlog
from gateway.ledger.store import StoreUnavailable


@endpoint
async def healthz(ctx: Context, request: Request) -> Response:
    return json_response(200, {"status": "ok"})


@endpoint
async def readyz(ctx: Context, request: Request) -> Response:
    """Ready when Redis answers, every script is loaded and the ledger keeps up."""
    checks: dict[str, object] = {}
    try:
        await ctx.engine.conn.call_or_raise(b"PING")
        checks["redis"] = "ok"
        if not await ctx.engine.scripts.loaded():
            # A restarted Redis has none cached; load them now rather than on first call.
            await ctx.engine.scripts.preload()
        checks["scripts"] = "ok" if await ctx.engine.scripts.loaded() else "missing"
    except GatewayError as exc:
        checks["redis"] = exc.message
    lag = await ctx.ledger_lag_s() if ctx.ledger_lag_s is not None else None
    checks["ledger_lag_s"] = lag
    ledger_ok = lag is None or lag <= ctx.settings.ledger_lag_max_s
    ready = checks.get("redis") == "ok" and checks.get("scripts") == "ok" and ledger_ok
    return json_response(200 if ready else 503, {"ready": ready, "checks": checks})


@endpoint
async def metrics_text(ctx: Context, request: Request) -> Response:
    metrics.BATCH_FACTOR.set(ctx.engine.conn.batch_factor)
    try:
        metrics.WEBHOOK_BACKLOG.set(await ctx.webhooks.backlog())
        lag_s, pending = await ledger_backlog(ctx.engine.conn, ctx.engine.partitions)
        metrics.LEDGER_LAG.set(lag_s)
        metrics.LEDGER_PENDING.set(pending)
        drift = await ctx.engine.conn.call_or_raise(b"HGET", keys.META, b"reconcile_drift")
        metrics.RECONCILE_DRIFT.set(int(drift or 0))
        metrics.DEAD_LETTERS.set(await ctx.ledger.count("dead_letters"))
    except (GatewayError, StoreUnavailable):
        pass  # Redis or the ledger down: serve what we have; /readyz says why
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)


@endpoint
async def openapi(ctx: Context, request: Request) -> Response:
    return json_response(200, openapi_document())


@endpoint
async def dashboard(ctx: Context, request: Request) -> Response:
    """The operators' web page (static files under /dashboard/)."""
    return RedirectResponse("/dashboard/", status_code=308)
