"""The ledger writer: partition streams -> ledger table, losing and doubling nothing.

One consumer group ("ledger") over every partition stream and the catalog stream. A batch
is written in one transaction (ON CONFLICT (entry_id) DO NOTHING), then XACKed, then the
stream is trimmed with XTRIM MINID below the oldest entry not yet acknowledged. At start
a writer first re-reads its own pending entries (id 0), and it regularly claims the
entries of dead writers (XAUTOCLAIM, idle above the slowest batch). An entry that fails to
parse 5 times goes to dead_letters and is acknowledged: never silently dropped. When the
database is down nothing is acknowledged, so nothing is trimmed before it is committed.

Idle, the writer waits inside Redis: one XREADGROUP with BLOCK over every stream, on the
writer's own connection (a blocked command holds up the commands queued behind it on an
auto-pipelined connection, so it never shares the gateway's). Redis Cluster refuses a read
across slots (CROSSSLOT): there it reads each stream in one write and waits BLOCK_MS between
empty passes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.ledger import chain
from gateway.ledger.entries import LedgerEntry, PoisonedEntry, parse_entry
from gateway.ledger.store import LedgerStore, StoreUnavailable, config_statements
from gateway.metering.errors import GatewayError
from gateway.store import meta, streams
from gateway.store.connections import open_connection
from gateway.store.errors import GroupMissing
from gateway.store.errors import StoreUnavailable as RedisUnavailable

GROUP = b"ledger"
BATCH_SIZE_MAX = 1000
# How long an idle read waits inside Redis for new entries. It also bounds how long stop()
# waits for the loop and how late a due claim or trim runs (every 1 to 5 s).
BLOCK_MS = 500
# While entries trickle in, read at most this often: a read then brings a batch of hundreds
# of rows instead of one or two per stream, and the per-batch costs (the XREADGROUP, an
# XPENDING and an XACK per stream, a transaction with its chain heads and its fsync) are
# shared by all of them. Measured (loadtests.bench_writer --cpu): about 90 rows a batch
# cost 55-63 µs of writer CPU per row, about 400 rows 38-40 µs. It adds at most this much
# to the ledger lag (target: p99 under 1 s).
LINGER_MS = 200
BATCH_FULL = 500  # a read that brought this many rows is followed at once by the next
CLAIM_IDLE_MS = 30_000
CLAIM_EVERY_S = 5.0
TRIM_EVERY_S = 1.0
FAILURES_MAX = 5
RETRY_WAIT_S = 1.0
PIPELINE_BATCHES_MAX = 20
# Sealing passes per trim (each chains up to chain.SEAL_ROWS_MAX rows per stream); the rest
# of a very long unsealed ledger (one migrated with millions of rows) waits for the next trim.
SEAL_PASSES_MAX = 50
# iou:stats field: stream entries settled (committed or dead-lettered) by all writers, for
# /metrics (iou_ledger_written_total): the writers run in processes Prometheus does not scrape.

log = logging.getLogger("iou.writer")


stream_names = streams.event_streams
stream_label = streams.stream_label


@dataclass
class _Prepared:
    """A parsed batch waiting for its commit: rows, where each came from, what to ack."""

    good: list[LedgerEntry] = field(default_factory=list)
    origin: dict[str, tuple[str, str, list[Any]]] = field(default_factory=dict)
    acks: dict[str, list[str]] = field(default_factory=dict)
    # Streams whose entries here are the next ones in the stream, each settled by this
    # commit: stream -> its first entry's id (see _chain_from).
    firsts: dict[str, str] = field(default_factory=dict)


@dataclass
class WriterStats:
    committed: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    batches: int = 0
    sealed: int = 0


def _parsed(label: str, entry_id: str, fields: list[Any]) -> LedgerEntry:
    entry = parse_entry(label, entry_id, fields)
    if entry.data is not None:
        config_statements(entry)  # a config event missing its data is poisoned too
    return entry


class LedgerWriter:
    def __init__(self, redis_url: str, store: LedgerStore, partitions: int,
                 consumer: str | None = None) -> None:
        # A connection of its own that decodes replies to str in hiredis (C), which is
        # where the writer's parsing time went.
        self._conn = open_connection(redis_url, decode=True)
        # One server holds every stream: one read names them all and can block.
        self._one_read = streams.one_server(self._conn)
        self._store = store
        self._streams = stream_names(partitions)
        self._consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self._failures: dict[str, int] = {}
        self._stopping = asyncio.Event()
        self.stats = WriterStats()
        # Awaited before each pass; False makes the writer wait (see service.run_writer).
        self.gate: Callable[[], Awaitable[bool]] | None = None

    @property
    def store(self) -> LedgerStore:
        return self._store

    def close(self) -> None:
        self._conn.close()

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def prepare(self) -> None:
        await self._store.migrate()
        await self._create_groups()

    async def _create_groups(self) -> None:
        await streams.create_groups(self._conn, self._streams, GROUP)

    async def run(self) -> None:
        """Run until stop(): own pending entries first, then new ones, claiming stale ones."""
        await self.prepare()
        retry_pending = True
        regroup = False
        last_claim = last_trim = 0.0
        while not self._stopping.is_set():
            try:
                if self.gate is not None and not await self.gate():
                    await asyncio.sleep(RETRY_WAIT_S)
                    continue
                if regroup:
                    await self._create_groups()
                    regroup = False
                if retry_pending:
                    await self.drain_pending()
                    retry_pending = False
                if time.monotonic() - last_claim > CLAIM_EVERY_S:
                    await self.claim_stale()
                    last_claim = time.monotonic()
                await self.read_new(BLOCK_MS)
                if time.monotonic() - last_trim > TRIM_EVERY_S:
                    await self.drain_pending()  # retries entries that failed to parse
                    await self.trim()
                    last_trim = time.monotonic()
            except (StoreUnavailable, RedisUnavailable, GatewayError) as exc:
                # Nothing was acknowledged: the batch stays pending and nothing is trimmed.
                log.warning("ledger writer waiting: %s", exc)
                retry_pending = True
                await asyncio.sleep(RETRY_WAIT_S)
            except Exception as exc:
                retry_pending = True
                if isinstance(exc, GroupMissing):
                    # Redis lost the streams (restarted without its data, or wiped and
                    # recovered): make the groups again rather than fail every pass forever.
                    log.warning("ledger writer: %s; creating the consumer groups again", exc)
                    regroup = True
                    continue
                # A writer must outlive surprises; what it held stays pending for the retry.
                log.exception("ledger writer failed a pass; retrying")
                await asyncio.sleep(RETRY_WAIT_S)

    async def drain_pending(self) -> None:
        """Process this consumer's pending entries (after a crash or a failed batch)."""
        while True:
            batch = await self._read([b"0"] * len(self._streams), 0)
            if not any(entries for _, entries in batch):
                return
            if await self._process(batch) == 0:
                return  # only entries that keep failing are left; retried on the next pass

    async def read_new(self, block_ms: int, batches_max: int = PIPELINE_BATCHES_MAX,
                       linger: bool = True) -> int:
        """Read new entries, committing each batch while the next is read and parsed
        (and, with ``linger``, while the next one gathers: see LINGER_MS).

        Only new entries ('>') can be pipelined: a re-read of pending entries would return
        the batch still being committed."""
        inflight: asyncio.Task[int] | None = None
        settled = 0
        for _ in range(batches_max):
            if self._stopping.is_set():
                break  # what is in flight is still committed and acknowledged below
            read_at = time.monotonic()
            batch = await self._read([b">"] * len(self._streams), block_ms)
            prepared = (await self._prepare(batch, in_order=True)
                        if any(e for _, e in batch) else None)
            if inflight is not None:
                settled += await inflight
                inflight = None
            if prepared is None:
                break
            inflight = asyncio.create_task(self._commit(prepared))
            block_ms = 0  # keep reading only what is already there
            if linger and sum(len(e) for _, e in batch) < BATCH_FULL:
                await asyncio.sleep(max(read_at + LINGER_MS / 1000 - time.monotonic(), 0))
        if inflight is not None:
            settled += await inflight
        return settled

    async def drain(self) -> int:
        """Commit everything currently in the streams (for reconcile and tests)."""
        await self.prepare()
        total = 0
        await self.drain_pending()
        await self.claim_stale(idle_ms=0)
        while (done := await self.read_new(0, linger=False)) > 0:
            total += done
        await self.trim()
        return total

    async def _read(self, ids: list[bytes], wait_ms: int) -> list[tuple[str, list[Any]]]:
        """New (``>``) or pending (``0``) entries of every stream; when there are none, wait
        up to ``wait_ms`` for new ones (0: answer at once)."""
        positions = list(zip(self._streams, ids, strict=True))
        if self._one_read:
            return await streams.read_together(self._conn, GROUP, self._consumer, positions,
                                               BATCH_SIZE_MAX, wait_ms)
        # A cluster: one XREADGROUP per stream, all in one write (each names one key, routed
        # to the node of its slot), and a wait in Python when nothing came back.
        batch = await streams.read(self._conn, GROUP, self._consumer, positions,
                                   BATCH_SIZE_MAX)
        if wait_ms and not any(entries for _, entries in batch):
            await asyncio.sleep(wait_ms / 1000)
        return batch

    async def claim_stale(self, idle_ms: int = CLAIM_IDLE_MS) -> None:
        """Take over entries a dead writer read but never acknowledged."""
        for stream in self._streams:
            cursor = b"0-0"
            while True:
                cursor, entries = await streams.claim_idle(
                    self._conn, stream, GROUP, self._consumer, idle_ms, cursor, BATCH_SIZE_MAX)
                if entries:
                    await self._process([(stream, entries)])
                if cursor == "0-0":
                    break

    async def _process(self, batch: list[tuple[str, list[Any]]]) -> int:
        """Write one batch, then acknowledge it; returns how many entries were settled."""
        return await self._commit(await self._prepare(batch))

    async def _prepare(self, batch: list[tuple[str, list[Any]]], in_order: bool = False
                       ) -> _Prepared:
        """Parse a batch. ``in_order``: it was read with ``>``, so each stream's entries are
        the stream's next ones (XREADGROUP hands out new entries in order, none skipped)."""
        prepared = _Prepared()
        good, origin = prepared.good, prepared.origin
        for stream, entries in batch:
            label = stream_label(stream)
            settled = True
            for entry_id, fields in entries:
                if fields is None:  # deleted before it was read: nothing to keep
                    prepared.acks.setdefault(stream, []).append(entry_id)
                    continue
                try:  # inline, not awaited per entry: this loop runs for every row
                    parsed = _parsed(label, entry_id, fields)
                except (PoisonedEntry, KeyError, ValueError, TypeError) as exc:
                    await self._failed(stream, entry_id, fields, exc)
                    if self._failures.get(entry_id, 0) == -1:
                        prepared.acks.setdefault(stream, []).append(entry_id)
                    else:
                        settled = False  # it stays pending: no later row may be chained yet
                    continue
                good.append(parsed)
                origin[parsed.entry_id] = (stream, entry_id, fields)
            if in_order and settled and entries:
                prepared.firsts[stream] = entries[0][0]
        return prepared

    async def _commit(self, prepared: _Prepared) -> int:
        """Commit, then XACK: an entry is acknowledged only once its row is durable."""
        acks = prepared.acks
        if prepared.good:
            chain_from = await self._chain_from(prepared.firsts)
            for stream, entry_id in await self._write(prepared.good, prepared.origin,
                                                      chain_from):
                acks.setdefault(stream, []).append(entry_id)
        settled = sum(len(ids) for ids in acks.values())
        # One write for all streams (each XACK names one key: fine on a cluster too), and
        # the writers' shared total for /metrics (iou_ledger_written_total) in the same tick.
        await asyncio.gather(streams.ack(self._conn, GROUP, acks),
                             *([meta.add_written(self._conn, settled)] if settled else []))
        return settled

    async def _chain_from(self, firsts: dict[str, str]) -> dict[str, chain.Position]:
        """The streams whose rows in this batch can be chained as they are inserted (no
        second pass reading them back): those whose first entry here is the lowest the group
        has not acknowledged, so every older entry is committed or dead-lettered and no row
        can still arrive before them (acknowledgements are never undone). Label -> the
        position of that first entry."""
        if not firsts:
            return {}
        lowest = await streams.lowest_pending(self._conn, list(firsts), GROUP)
        return {stream_label(stream): chain.parse_floor(first)
                for stream, first in firsts.items() if lowest.get(stream) == first}

    async def _write(self, good: list[LedgerEntry],
                     origin: dict[str, tuple[str, str, list[Any]]],
                     chain_from: dict[str, chain.Position] | None = None
                     ) -> list[tuple[str, str]]:
        """Commit the entries; returns (stream, id) of those settled (committed or dead).

        A batch the database refuses for a reason other than being down is written one
        entry at a time, so one bad row cannot hold back the others."""
        try:
            inserted = await self._store.write(good, chain_from)
        except StoreUnavailable:
            raise
        except Exception as exc:
            if len(good) == 1:
                stream, entry_id, fields = origin[good[0].entry_id]
                await self._failed(stream, entry_id, fields, exc)
                return [(stream, entry_id)] if self._failures.get(entry_id) == -1 else []
            settled: list[tuple[str, str]] = []
            for entry in good:
                settled += await self._write([entry], origin)
            return settled
        self.stats.committed += inserted
        self.stats.duplicates += len(good) - inserted
        self.stats.batches += 1
        return [origin[e.entry_id][:2] for e in good]

    async def _failed(self, stream: str, entry_id: str, fields: list[Any],
                      exc: Exception) -> None:
        count = self._failures.get(entry_id, 0) + 1
        self._failures[entry_id] = count
        log.warning("ledger entry %s of %s failed (%d/%d): %s", entry_id, stream,
                    count, FAILURES_MAX, exc)
        if count < FAILURES_MAX:
            return
        raw = orjson.dumps([str(f).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                            for f in fields]).decode()
        await self._store.dead_letter(stream_label(stream), entry_id, raw, str(exc))
        self.stats.dead_letters += 1
        self._failures[entry_id] = -1  # acknowledged with the rest of the batch

    async def trim(self) -> None:
        """XTRIM MINID below the oldest entry the group has not acknowledged, then seal the
        ledger's hash chains below the same floors."""
        floors: dict[str, tuple[int, int]] = {}
        for stream in self._streams:
            floor = await streams.unacknowledged_floor(self._conn, stream, GROUP)
            if floor is not None:
                await streams.trim_below(self._conn, stream, floor)
                floors[stream_label(stream)] = chain.parse_floor(floor)
        await self.seal(floors)

    async def seal(self, floors: dict[str, tuple[int, int]]) -> int:
        """Chain the committed rows below each stream's floor (read from Redis before this
        call: every entry below a floor is acknowledged, so committed or dead-lettered, and
        no row can still arrive before it). See gateway/ledger/chain.py."""
        total = 0
        for _ in range(SEAL_PASSES_MAX):
            sealed, more = await self._store.seal(floors)
            total += sealed
            if not more:
                break
        self.stats.sealed += total
        return total
