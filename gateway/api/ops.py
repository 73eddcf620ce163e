"""Operations routes: /healthz, /readyz, /metrics, /openapi.json."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway import observability as metrics
from gateway.api.context import Context, endpoint
from gateway.api.openapi import openapi_document
from gateway.api.responses import json_response
from gateway.ledger.lag import ledger_backlog
from gateway.ledger.store import StoreUnavailable
from gateway.metering.errors import GatewayError
from gateway.store import meta
from gateway.store.errors import StoreUnavailable as RedisUnavailable


@endpoint
async def healthz(ctx: Context, request: Request) -> Response:
    return json_response(200, {"status": "ok"})


@endpoint
async def readyz(ctx: Context, request: Request) -> Response:
    """Ready when Redis answers, every script is loaded, the store is the one the ledger
    describes and the ledger keeps up."""
    checks: dict[str, object] = {}
    try:
        # Ready means writable (PING answers on a Redis that refuses writes).
        await meta.probe_writable(ctx.engine.conn)
        checks["redis"] = "ok"
        if not await ctx.engine.scripts.loaded():
            # A restarted Redis has none cached; load them now rather than on first call.
            await ctx.engine.scripts.preload()
        checks["scripts"] = "ok" if await ctx.engine.scripts.loaded() else "missing"
    except RedisUnavailable as exc:
        checks["redis"] = str(exc)
    if ctx.guard is not None:
        if checks.get("redis") == "ok" and not ctx.guard.ok:
            await ctx.guard.refresh()  # a recover may have just finished: do not wait 1 s
        checks["store"] = ctx.guard.reason
    lag = await ctx.ledger_lag_s() if ctx.ledger_lag_s is not None else None
    checks["ledger_lag_s"] = lag
    ledger_ok = lag is None or lag <= ctx.settings.ledger_lag_max_s
    ready = (checks.get("redis") == "ok" and checks.get("scripts") == "ok" and ledger_ok
             and checks.get("store", "ok") == "ok")
    return json_response(200 if ready else 503, {"ready": ready, "checks": checks})


@endpoint
async def metrics_text(ctx: Context, request: Request) -> Response:
    metrics.BATCH_FACTOR.set(ctx.engine.conn.batch_factor)
    try:
        metrics.WEBHOOK_BACKLOG.set(await ctx.webhooks.backlog())
        lag_s, pending = await ledger_backlog(ctx.engine.conn, ctx.engine.partitions)
        metrics.LEDGER_LAG.set(lag_s)
        metrics.LEDGER_PENDING.set(pending)
        drift, restarts, written = await meta.drift_restarts_written(ctx.engine.conn)
        metrics.RECONCILE_DRIFT.set(drift)
        _FROM_REDIS.restarts = restarts
        _FROM_REDIS.written = written
        metrics.DEAD_LETTERS.set(await ctx.ledger.count("dead_letters"))
    except (GatewayError, StoreUnavailable, RedisUnavailable):
        pass  # Redis or the ledger down: serve what we have; /readyz says why
    body = metrics.render(ctx.settings.metrics_dir) + generate_latest(_OWN_REGISTRY)
    return Response(body, media_type=metrics.CONTENT_TYPE)


class _RedisCountersCollector(Collector):
    """Totals kept in Redis by processes Prometheus does not scrape, so every worker and
    gateway host exports the same: iou_ledger_writer_restarts_total (restarts of supervised
    ledger writers, by the supervisor: gateway/ledger/supervisor.py) and
    iou_ledger_written_total (stream entries the writers settled). Only Redis resets them
    (wiped store); Prometheus's rate() and increase() handle that as a counter reset."""

    restarts = 0
    written = 0

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("iou_ledger_writer_restarts",
                                  "Ledger writers restarted after they died", value=self.restarts)
        yield CounterMetricFamily("iou_ledger_written",
                                  "Stream entries the ledger writers settled (committed or "
                                  "dead-lettered)", value=self.written)


_FROM_REDIS = _RedisCountersCollector()
# A registry of this module's own: the values come from Redis, not from this process, so
# they are not prometheus_client Counters (nor part of the multiprocess files).
_OWN_REGISTRY = CollectorRegistry(auto_describe=False)
_OWN_REGISTRY.register(_FROM_REDIS)


@endpoint
async def openapi(ctx: Context, request: Request) -> Response:
    return json_response(200, openapi_document(ctx.settings.amount_max_micros))


@endpoint
async def root(ctx: Context, request: Request) -> Response:
    """``GET /``: a browser pointed at the gateway lands on the dashboard."""
    return RedirectResponse("/dashboard", status_code=307)


@endpoint
async def dashboard(ctx: Context, request: Request) -> Response:
    """The operators' web page (static files under /dashboard/)."""
    return RedirectResponse("/dashboard/", status_code=308)
