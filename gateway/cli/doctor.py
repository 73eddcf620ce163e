"""`iou doctor`: check a deployment, one line per check with what to change; exit 1 when
any fails.

It reads the same configuration as `iou serve` (IOU_REDIS_URL, else the embedded store that
`iou serve` runs under IOU_DATA_DIR; IOU_LEDGER_URL, else the SQLite file there) and changes
nothing but one probe row of the ledger's meta table (to prove it writable). It starts no
server: an embedded store that is not running is reported as unreachable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.config import Settings
from gateway.ledger.factory import ledger_shown, open_store
from gateway.ledger.identity import REASONS, StoreState, compare
from gateway.ledger.lag import ledger_backlog
from gateway.ledger.store import LedgerStore
from gateway.store import meta, server
from gateway.store.cluster import parse_cluster_url
from gateway.store.connections import Connection, open_connection
from gateway.store.resp import RedisConnection

CLOCK_SKEW_MAX_S = 1.0
REDIS_TIMEOUT_S = 5.0
LEDGER_TIMEOUT_S = 10.0
CLUSTER_SLOTS = 16384
PROBE_NAME = "doctor_probe"
CLUSTER_SCHEME = "redis+cluster://"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found; on a failure, also what to change
    skipped: bool = False

    def line(self) -> str:
        mark = "skip" if self.skipped else "ok  " if self.ok else "FAIL"
        return f"{mark} {self.name}: {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "skipped": self.skipped,
                "detail": self.detail}


def redis_url(settings: Settings) -> str | None:
    """IOU_REDIS_URL, or the URL of the embedded store `iou serve` runs (None: never ran)."""
    if settings.redis_url is not None:
        return settings.redis_url
    url_file = settings.data_dir / "redis.url"
    return url_file.read_text().strip() if url_file.exists() else None


async def _reachable(conn: Connection, where: str) -> Check:
    try:
        await asyncio.wait_for(server.ping(conn), REDIS_TIMEOUT_S)
    except Exception as exc:
        return Check("redis reachable", False, f"{where} does not answer ({exc}): start "
                     "Redis (or `iou serve` for the embedded default) or fix IOU_REDIS_URL")
    return Check("redis reachable", True, where)


async def _eviction(conn: Connection) -> Check:
    policies = [i.get("maxmemory_policy", "?") for i in await server.info_each(conn, b"memory")]
    bad = sorted({p for p in policies if p != "noeviction"})
    if bad:
        return Check("maxmemory-policy", False, f"{', '.join(bad)}: it can delete balances "
                     "under memory pressure; set `maxmemory-policy noeviction` (CONFIG SET "
                     "and redis.conf)")
    return Check("maxmemory-policy", True, "noeviction")


async def _persistence(conn: Connection) -> Check:
    infos = await server.info_each(conn, b"persistence")
    off = sum(1 for i in infos if i.get("aof_enabled") != "1")
    if off:
        return Check("persistence (AOF)", False, f"appendonly is off on {off} of {len(infos)} "
                     "server(s): acknowledged charges since the last snapshot would be lost; "
                     "set `appendonly yes` (CONFIG SET and redis.conf)")
    failing = [i.get("aof_last_write_status") for i in infos
               if i.get("aof_last_write_status", "ok") != "ok"]
    if failing:
        return Check("persistence (AOF)", False, f"the last AOF write failed "
                     f"({failing[0]}): check the disk of the Redis server")
    return Check("persistence (AOF)", True, "appendonly yes")


async def _clock(conn: Connection) -> Check:
    skews = []
    for redis_s in await server.clock_each_s(conn):
        skews.append(redis_s - time.time())
    worst = max(skews, key=abs)
    if abs(worst) > CLOCK_SKEW_MAX_S:
        side = "ahead of" if worst > 0 else "behind"
        return Check("clocks", False, f"Redis is {abs(worst):.1f} s {side} this host (at most "
                     f"{CLOCK_SKEW_MAX_S:g} s): sync both with NTP (daily windows and hold "
                     "expiry follow Redis's clock)")
    return Check("clocks", True, f"Redis and this host within {abs(worst):.3f} s")


async def _cluster(conn: Connection, url: str) -> Check:
    if not url.startswith(CLUSTER_SCHEME):
        return Check("cluster slots", True, "not a cluster (one Redis)")
    info = await server.cluster_info(conn)
    assigned = int(info.get("cluster_slots_assigned", 0))
    failing = int(info.get("cluster_slots_fail", 0)) + int(info.get("cluster_slots_pfail", 0))
    if assigned < CLUSTER_SLOTS or failing or info.get("cluster_state") != "ok":
        return Check("cluster slots", False, f"{assigned} of {CLUSTER_SLOTS} slots assigned, "
                     f"{failing} failing, state {info.get('cluster_state')}: assign the "
                     "missing slots (`redis-cli --cluster fix`) or bring their masters back")
    return Check("cluster slots", True, f"all {CLUSTER_SLOTS} slots covered, state ok")


async def _ledger(store: LedgerStore, where: str) -> Check:
    try:
        await asyncio.wait_for(store.identity(), LEDGER_TIMEOUT_S)
    except Exception as exc:
        return Check("ledger", False, f"{where} cannot be read ({_one_line(exc)}): start the "
                     "database, fix IOU_LEDGER_URL, or run `iou serve` once to create it")
    try:
        await asyncio.wait_for(store.set_meta(PROBE_NAME, str(int(time.time()))),
                               LEDGER_TIMEOUT_S)
    except Exception as exc:
        return Check("ledger", False, f"{where} is readable but not writable "
                     f"({_one_line(exc)}): the writer cannot commit; fix the database's "
                     "permissions, disk or read-only mode")
    return Check("ledger", True, f"{where} reachable and writable")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


async def _partitions(conn: Connection, store: LedgerStore | None) -> tuple[Check, int | None]:
    in_redis = await server.partitions(conn)
    if in_redis is None:
        return Check("partitions", False, "Redis has none recorded: a store `iou serve` "
                     "never initialised, or a wiped one (`iou recover`)"), None
    count = in_redis
    in_ledger = await store.meta("partitions") if store is not None else None
    if in_ledger is not None and int(in_ledger) != count:
        return Check("partitions", False, f"Redis has {count}, the ledger {in_ledger}: this "
                     "is not the store the ledger was written from; `iou recover` rebuilds "
                     "it with the ledger's"), count
    return Check("partitions", True, f"{count}" + ("" if in_ledger else
                                                   " (the ledger has none recorded yet)")), count


async def _lag(conn: Connection, partitions: int, lag_max_s: int) -> Check:
    lag_s, pending = await ledger_backlog(conn, partitions)
    if lag_s > lag_max_s:
        return Check("writer lag", False, f"{lag_s:.1f} s behind ({pending} events waiting; "
                     f"IOU_LEDGER_LAG_MAX_S={lag_max_s}): is a ledger writer running (`iou "
                     "serve` without --no-writer, or `iou writer`)? Is the ledger slow?")
    return Check("writer lag", True, f"{lag_s:.1f} s, {pending} events waiting")


async def _identity(conn: Connection, store: LedgerStore) -> Check:
    redis_id = await meta.identity(conn)
    ledger_id = await store.identity()
    if ledger_id is None:
        return Check("store identity", False, "the ledger has no store identity yet: start "
                     "`iou serve` once against this Redis and ledger")
    state = compare(redis_id, ledger_id)
    if state is not StoreState.OK:
        return Check("store identity", False, REASONS[state])
    return Check("store identity", True, f"Redis is the store the ledger describes "
                 f"({ledger_id[:8]}…)")


async def _guarded(name: str, probe: Callable[[], Awaitable[Check]]) -> Check:
    """A check whose own failure (a refusal, a timeout) is its failed line, not a crash."""
    try:
        return await asyncio.wait_for(probe(), REDIS_TIMEOUT_S + LEDGER_TIMEOUT_S)
    except Exception as exc:
        return Check(name, False, f"could not be checked: {_one_line(exc)}")


def _skipped(names: list[str], why: str) -> list[Check]:
    return [Check(n, False, f"not checked: {why}", skipped=True) for n in names]


REDIS_CHECKS = ["maxmemory-policy", "persistence (AOF)", "clocks", "cluster slots",
                "partitions", "writer lag", "store identity"]


async def run_doctor(settings: Settings) -> list[Check]:
    """Every check, in the contract's order."""
    url = redis_url(settings)
    store = open_store(settings)
    ledger = await _ledger(store, ledger_shown(settings))
    if url is None:
        checks = [Check("redis reachable", False, f"no IOU_REDIS_URL and no embedded store "
                        f"under {settings.data_dir}: run `iou serve` or set IOU_REDIS_URL")]
        checks += [*_skipped(REDIS_CHECKS, "Redis unreachable"), ledger]
        await store.close()
        return _ordered(checks)
    conn = open_connection(url)
    # A cluster's seed node alone answers PING and CLUSTER INFO even when slots are missing
    # (the cluster connection itself refuses a cluster that does not cover every slot).
    seed = RedisConnection(parse_cluster_url(url)) if url.startswith(CLUSTER_SCHEME) else None
    try:
        return _ordered(await _with_redis(conn, seed or conn, url, store, ledger, settings))
    finally:
        conn.close()
        if seed is not None:
            seed.close()
        await store.close()


async def _with_redis(conn: Connection, node: Connection, url: str, store: LedgerStore,
                      ledger: Check, settings: Settings) -> list[Check]:
    """The checks once a Redis URL is known: ``node`` is the one server (or a cluster's
    seed node) that answers PING and CLUSTER INFO, ``conn`` the connection the gateway
    would use."""
    where = url.split("@")[-1]  # never print a password of the URL
    reachable = await _reachable(node, where)
    if not reachable.ok:
        return [reachable, ledger, *_skipped(REDIS_CHECKS, "Redis unreachable")]
    checks = [reachable, ledger]
    for name, probe in [("maxmemory-policy", lambda: _eviction(conn)),
                        ("persistence (AOF)", lambda: _persistence(conn)),
                        ("clocks", lambda: _clock(conn)),
                        ("cluster slots", lambda: _cluster(node, url))]:
        checks.append(await _guarded(name, probe))
    try:
        partitions, count = await _partitions(conn, store if ledger.ok else None)
    except Exception as exc:
        partitions, count = Check("partitions", False, f"could not be checked: "
                                  f"{_one_line(exc)}"), None
    checks.append(partitions)
    checks.append(await _guarded("writer lag", lambda: _lag(
        conn, count or settings.partitions, settings.ledger_lag_max_s)))
    checks.append(await _guarded("store identity", lambda: _identity(conn, store))
                  if ledger.ok else _skipped(["store identity"], "ledger unreachable")[0])
    return checks


ORDER = ["redis reachable", "maxmemory-policy", "persistence (AOF)", "clocks", "cluster slots",
         "ledger", "writer lag", "partitions", "store identity"]


def _ordered(checks: list[Check]) -> list[Check]:
    return sorted(checks, key=lambda c: ORDER.index(c.name))
