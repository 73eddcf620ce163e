"""Prometheus metrics (prometheus_client); multi-worker safe via its multiprocess mode."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

CHARGES = Counter("iou_charges_total", "Charge attempts by outcome and category",
                  ["outcome", "category"])
CHARGE_LATENCY = Histogram("iou_charge_latency_seconds", "Gateway time of one charge request",
                           buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                    0.5, 1.0))
BATCH_FACTOR = Gauge("iou_redis_batch_factor", "Redis commands per socket write (auto-pipelining)",
                     multiprocess_mode="max")
LEDGER_LAG = Gauge("iou_ledger_lag_seconds", "Age of the oldest event not yet in the ledger",
                   multiprocess_mode="max")
LEDGER_PENDING = Gauge("iou_ledger_pending_entries", "Events not yet committed to the ledger",
                       multiprocess_mode="max")
WEBHOOK_BACKLOG = Gauge("iou_webhook_backlog", "Webhook events waiting for delivery",
                        multiprocess_mode="max")
DEAD_LETTERS = Gauge("iou_ledger_dead_letters", "Stream entries the writer gave up on",
                     multiprocess_mode="max")
RECONCILE_DRIFT = Gauge("iou_reconcile_drift_agents",
                        "Agents whose balance disagreed with the ledger at the last reconcile",
                        multiprocess_mode="max")
WEBHOOK_DROPPED = Counter("iou_webhooks_dropped_total", "Webhook events given up after an hour")
AUTH_FAILURES = Counter("iou_auth_failures_total",
                        "Failed authentications by answer (unauthorized or rate_limited)",
                        ["result"])
PROXY_CALLS = Counter("iou_proxy_calls_total", "Proxied tool calls by result", ["result"])

CONTENT_TYPE = CONTENT_TYPE_LATEST


def render(metrics_dir: Path | None) -> bytes:
    """The exposition text, merged across the workers' files in ``metrics_dir`` when the
    workers share one (Settings.metrics_dir)."""
    if metrics_dir is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, str(metrics_dir))  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()
