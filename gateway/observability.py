"""Prometheus metrics (prometheus_client); multi-worker safe via its multiprocess mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
# Calls the agents' shadow limits would have refused (they succeeded), by the limit that would
# have fired: a bounded set, the `limit` names of the contract's limit_exceeded refusals.
SHADOW_REFUSALS = Counter("iou_shadow_refusals_total",
                          "Calls shadow limits would have refused, by limit", ["limit"])
# Error answers by HTTP status (a bounded set: the contract's statuses). Success is not
# counted here: the charge path's successes are iou_charges_total, and a success costs nothing.
HTTP_ERRORS = Counter("iou_http_errors_total", "Error answers by HTTP status", ["status"])
# Sampled from Redis INFO by a background task of each worker (REDIS_SAMPLE_INTERVAL_S), not
# per scrape. On a cluster, the master closest to its limit. maxmemory 0 means no limit.
REDIS_USED_MEMORY = Gauge("iou_redis_used_memory_bytes", "Redis used_memory (sampled)",
                          multiprocess_mode="max")
REDIS_MAXMEMORY = Gauge("iou_redis_maxmemory_bytes", "Redis maxmemory, 0 when unlimited (sampled)",
                        multiprocess_mode="max")
REDIS_SAMPLE_INTERVAL_S = 5.0

CONTENT_TYPE = CONTENT_TYPE_LATEST

_error_children: dict[int, Any] = {}


def count_error(status: int) -> None:
    """Count one error answer; the labelled children are cached (labels() is not free)."""
    child = _error_children.get(status)
    if child is None:
        child = _error_children[status] = HTTP_ERRORS.labels(str(status))
    child.inc()


_shadow_children: dict[str, Any] = {}


def count_shadow_refusal(limit: str) -> None:
    """Count one call a shadow limit would have refused (children cached, as count_error's)."""
    child = _shadow_children.get(limit)
    if child is None:
        child = _shadow_children[limit] = SHADOW_REFUSALS.labels(limit)
    child.inc()


def memory_of(info: bytes | str) -> tuple[int, int]:
    """(used_memory, maxmemory) in bytes from the text of ``INFO memory``."""
    text = info.decode() if isinstance(info, bytes) else info
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return int(fields.get("used_memory", 0)), int(fields.get("maxmemory", 0))


def record_redis_memory(infos: list[bytes | str]) -> None:
    """Export the memory of the server closest to its limit (the only one on one Redis)."""
    samples = [memory_of(info) for info in infos]
    if not samples:
        return
    used, limit = max(samples, key=lambda s: (s[0] / s[1] if s[1] else 0.0, s[0]))
    REDIS_USED_MEMORY.set(used)
    REDIS_MAXMEMORY.set(limit)


def render(metrics_dir: Path | None) -> bytes:
    """The exposition text, merged across the workers' files in ``metrics_dir`` when the
    workers share one (Settings.metrics_dir)."""
    if metrics_dir is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, str(metrics_dir))  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()
