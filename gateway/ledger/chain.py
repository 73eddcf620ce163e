"""The verifiable ledger: the rows of each stream (partition) form a SHA-256 hash chain in
stream order.

    hash = SHA-256(bytes.fromhex(prev_hash) || canonical bytes of the row), as lowercase hex

The first row of a stream links to GENESIS (64 zeros). A row's canonical bytes are the JSON
object of its non-NULL columns (every ledger column but ``prev_hash`` and ``hash``), keys
sorted, no spaces, UTF-8: a column added by a later migration is NULL on older rows and so
leaves their hashes as they were. JSON columns (``metadata``, ``data``) enter as the text the
database gives back (PostgreSQL's JSONB text form, SQLite's text as written).

Sealing. Several writers commit batches of one stream out of order, so a row is chained
only once no row before it in the stream can still arrive: below the consumer group's
floor (the lowest id not yet acknowledged; everything below it is committed or
dead-lettered). A sealing pass reads the stream's head (last chained position and hash) from
``ledger_chain_heads`` and chains the rows after it, below the floor, in one transaction: a
writer killed mid-pass leaves the head and the rows as they were, and the next pass redoes it.
Rows written before this migration are chained from GENESIS by the first pass.

Most rows are sealed without a pass: a writer whose batch starts at its stream's lowest
unacknowledged entry chains the batch's rows from the rows in hand, in the transaction that
inserts them (link_batch), with no read-back and no update; the pass takes the rest.

Verifying recomputes every chain up to its head inside one read snapshot (so it runs beside a
live writer) and names the first row that was changed, removed or inserted. Rows above the
head are the tail not sealed yet: counted, not judged.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.ledger.store import ENTRY_COLUMNS

GENESIS = "0" * 64
# The columns a row's hash covers, in the order the stores select them.
CHAIN_COLUMNS: tuple[str, ...] = tuple(c.strip() for c in ENTRY_COLUMNS.split(","))
JSON_COLUMNS = frozenset({"metadata", "data"})
# Rows chained per stream in one sealing transaction (a first pass over an old ledger loops).
SEAL_ROWS_MAX = 5_000  # a pass holds the write lock: keep it to a second or two
# No position precedes this one: the head of a stream nothing was chained in yet.
START = (-1, -1)

log = logging.getLogger("iou.ledger.chain")

Position = tuple[int, int]  # (stream_ms, stream_seq)


def canonical(row: Sequence[Any]) -> bytes:
    """The canonical bytes of a row given in CHAIN_COLUMNS order."""
    # strict=False: the callers pass rows of exactly these columns (and it is the hot loop).
    return orjson.dumps({c: v for c, v in zip(CHAIN_COLUMNS, row, strict=False)
                         if v is not None}, option=orjson.OPT_SORT_KEYS)


def link(prev_hash: str, row: Sequence[Any]) -> str:
    """The hash of ``row`` chained after ``prev_hash`` (hex)."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical(row)).hexdigest()


@dataclass(frozen=True)
class Head:
    """Where a stream's chain ends: the last sealed row's position, id and hash."""

    stream: str
    position: Position = START
    entry_id: str | None = None
    hash: str = GENESIS
    rows: int = 0


@dataclass(frozen=True)
class Sealed:
    """One sealing pass of one stream: the rows' new (prev_hash, hash, key), the new head."""

    links: list[tuple[str, str, Any]]
    head: Head


def seal_rows(head: Head, rows: Iterable[Sequence[Any]]) -> Sealed:
    """Chain ``rows`` (key, then CHAIN_COLUMNS, in stream order, all after the head)."""
    keyed = list(rows)
    linked, new_head = chain_rows(head, [row[1:] for row in keyed])
    return Sealed([(prev, digest, row[0]) for (prev, digest), row in
                   zip(linked, keyed, strict=True)], new_head)


def chain_rows(head: Head, rows: Sequence[Sequence[Any]]) -> tuple[list[tuple[str, str]], Head]:
    """The (prev_hash, hash) of each row (CHAIN_COLUMNS, in stream order, all after the
    head) and the head after the last one. The writer chains the rows of a batch it holds
    with this, in the transaction that inserts them (sqlite.py, postgres.py)."""
    linked: list[tuple[str, str]] = []
    prev = head.hash
    sha256, fromhex = hashlib.sha256, bytes.fromhex  # link(), inline: once per ledger row
    for row in rows:
        digest = sha256(fromhex(prev) + canonical(row)).hexdigest()
        linked.append((prev, digest))
        prev = digest
    if not rows:
        return linked, head
    last = rows[-1]
    return linked, Head(head.stream, (int(last[2]), int(last[3])), last[0], prev,
                        head.rows + len(linked))


@dataclass(frozen=True)
class Problem:
    """The first row of a chain that does not hold: ``kind`` is "changed", "removed" (a row
    before ``entry_id`` is gone; ``entry_id`` is the removed head itself when the chain's end
    was removed) or "inserted"."""

    stream: str
    entry_id: str
    kind: str
    detail: str


@dataclass
class ChainReport:
    """One stream's verification: its head as recomputed, rows checked, the unsealed tail."""

    stream: str
    head: Head
    checked: int = 0
    unsealed: int = 0
    problem: Problem | None = None
    _prev: str = GENESIS
    _before_prev: str | None = None
    _last_id: str | None = None
    _pending: Sequence[Any] | None = None  # a sealed row waiting for the next one

    def feed(self, row: Sequence[Any]) -> None:
        """Check the next row: CHAIN_COLUMNS then prev_hash, hash, in stream order. A sealed
        row is judged when the row after it arrives (or at finish()): only the next row's
        link tells a forged row inserted into the chain from a row after a removed one."""
        if self.problem is not None:
            return
        if self._pending is not None:
            self._check(self._pending, row)
            self._pending = None
            if self.problem is not None:
                return
        position = (int(row[2]), int(row[3]))
        if position > self.head.position:
            if row[-1] is not None:  # only a sealing pass writes hashes, and it moves the head
                self.problem = self._found(row[0], "changed", "it is sealed but lies past the "
                                           "recorded head: the head record was edited")
                return
            self.unsealed += 1
            return
        self._pending = row

    def _check(self, row: Sequence[Any], following: Sequence[Any] | None) -> None:
        self.problem = self._judge(row[:-2], row[-2], row[-1], following)
        if self.problem is None:
            self.checked += 1
            self._before_prev, self._prev, self._last_id = self._prev, row[-1], row[0]

    def _judge(self, row: Sequence[Any], prev_hash: str | None, digest: str | None,
               following: Sequence[Any] | None) -> Problem | None:
        entry_id = row[0]
        if digest is None:
            return self._found(entry_id, "inserted", "a row inside the sealed chain has no hash")
        if prev_hash == self._prev and link(self._prev, row) == digest:
            return None
        if self._links_here(following):
            return self._found(entry_id, "inserted",
                               "the next row links past it, to the row before it")
        if prev_hash == self._prev:
            return self._found(entry_id, "changed", "its contents do not match its hash")
        if link(self._prev, row) == digest:
            return self._found(entry_id, "changed", "its prev_hash was edited")
        if prev_hash == self._before_prev and self._last_id is not None:
            return self._found(self._last_id, "inserted",
                               "the next row links past it, to the row before it")
        return self._found(entry_id, "removed",
                           "its prev_hash names no row before it: a row before it is gone")

    def _links_here(self, following: Sequence[Any] | None) -> bool:
        """Whether ``following`` (the row after the one judged) is the true successor of the
        last row that held: then the row judged sits between two linked rows, inserted."""
        if following is None or following[-1] is None or following[-2] != self._prev:
            return False
        return bool(link(self._prev, following[:-2]) == following[-1])

    def finish(self) -> None:
        """After the last row: the chain must end at the recorded head."""
        if self._pending is not None and self.problem is None:
            self._check(self._pending, None)
        self._pending = None
        if self.problem is not None or self._prev == self.head.hash:
            return
        if self._last_id == self.head.entry_id:
            self.problem = self._found(self.head.entry_id or "", "changed",
                                       "the recorded head hash was edited")
        else:
            self.problem = self._found(self.head.entry_id or "", "removed",
                                       "the chain's last sealed row is gone")

    def _found(self, entry_id: str, kind: str, detail: str) -> Problem:
        return Problem(self.stream, entry_id, kind, detail)

    def as_json(self) -> dict[str, Any]:
        return {"stream": self.stream, "head_hash": self.head.hash,
                "head_entry_id": self.head.entry_id, "rows": self.checked,
                "unsealed": self.unsealed,
                "problem": None if self.problem is None else {
                    "entry_id": self.problem.entry_id, "kind": self.problem.kind,
                    "detail": self.problem.detail}}


def verify_stream(head: Head, rows: Iterable[Sequence[Any]]) -> ChainReport:
    """Recompute one stream's chain; rows are CHAIN_COLUMNS + (prev_hash, hash), in order."""
    report = ChainReport(head.stream, head)
    for row in rows:
        report.feed(row)
        if report.problem is not None:
            break
    report.finish()
    return report


def _select_list(json_cast: str) -> str:
    return ", ".join(c + json_cast if c in JSON_COLUMNS else c for c in CHAIN_COLUMNS)


def seal_query(json_cast: str = "", key: str = "entry_id") -> str:
    """The rows after a head and below a floor, in stream order (?: stream, head ms, head
    seq, floor ms, floor seq, limit): the row's ``key`` (what the store updates it by), its
    CHAIN_COLUMNS, and its hash (NULL until sealed)."""
    return (f"SELECT {key}, {_select_list(json_cast)}, hash FROM ledger_entries WHERE stream = ? "
            "AND (stream_ms, stream_seq) > (?, ?) AND (stream_ms, stream_seq) < (?, ?) "
            "ORDER BY stream_ms, stream_seq LIMIT ?")


def chain_query(json_cast: str = "") -> str:
    """Every row of one stream in stream order, with prev_hash and hash (?: stream)."""
    return (f"SELECT {_select_list(json_cast)}, prev_hash, hash FROM ledger_entries "
            "WHERE stream = ? ORDER BY stream_ms, stream_seq")


SELECT_HEADS = "SELECT stream, stream_ms, stream_seq, entry_id, hash, rows FROM ledger_chain_heads"
SELECT_HEAD = SELECT_HEADS + " WHERE stream = ?"
# A head only moves forward: two sealers never take it back (they are serialized anyway).
UPSERT_HEAD = """INSERT INTO ledger_chain_heads (stream, stream_ms, stream_seq, entry_id, hash,
    rows) VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (stream) DO UPDATE SET stream_ms = excluded.stream_ms,
        stream_seq = excluded.stream_seq, entry_id = excluded.entry_id, hash = excluded.hash,
        rows = excluded.rows
    WHERE (ledger_chain_heads.stream_ms, ledger_chain_heads.stream_seq)
        < (excluded.stream_ms, excluded.stream_seq)"""
STREAMS = "SELECT stream FROM ledger_chain_heads UNION SELECT DISTINCT stream FROM ledger_entries"


def head_of(stream: str, row: Sequence[Any] | None) -> Head:
    """A Head from a SELECT_HEAD row (None: nothing sealed yet)."""
    if row is None:
        return Head(stream)
    return Head(stream, (int(row[1]), int(row[2])), row[3], row[4], int(row[5]))


def head_params(head: Head) -> tuple[Any, ...]:
    return (head.stream, *head.position, head.entry_id, head.hash, head.rows)


def plan_seal(head: Head, rows: Sequence[Sequence[Any]]) -> Sealed | None:
    """Chain rows from seal_query; None (and an error logged) when one of them already has a
    hash: only a sealing pass writes one and it moves the head past it, so the head record
    was tampered with, and re-sealing would bury the evidence that `iou verify` reports."""
    if any(row[-1] is not None for row in rows):
        log.error("ledger chain of %s: sealed rows lie past the recorded head; not sealing "
                  "(run `iou verify`)", head.stream)
        return None
    return seal_rows(head, [row[:-1] for row in rows])


@dataclass(frozen=True)
class BatchLinks:
    """A batch sealed as it is inserted: each entry's (prev_hash, hash) (None, None when its
    stream is left to the sealing pass), the unsealed rows below the batch chained first
    (updated by key, as a pass does), and the streams' new heads."""

    links: list[tuple[str | None, str | None]]
    below: list[Sealed]
    heads: list[Head]


UNLINKED: tuple[None, None] = (None, None)


def link_batch(entries: Sequence[Sequence[Any]], chain_from: Mapping[str, Position],
               heads: Mapping[str, Head], below: Mapping[str, Sequence[Sequence[Any]]]
               ) -> BatchLinks:
    """Chain a batch's rows (CHAIN_COLUMNS each, a stream's in stream order) in the
    transaction that inserts them. ``chain_from``: stream -> the position of the batch's
    first entry of that stream, below which every entry of the stream is settled (committed
    or dead-lettered: the writer saw no older one unacknowledged), so no row can still
    arrive before the batch's. ``below``: that stream's rows after its head and below that
    position, as seal_query reads them (rows committed by writers that could not seal):
    chained first. A stream is left to the sealing pass when that cannot be done exactly:
    the head at or past the batch, too many rows below, a sealed row past the head."""
    links: list[tuple[str | None, str | None]] = [UNLINKED] * len(entries)
    by_stream: dict[str, list[int]] = {}
    for i, entry in enumerate(entries):
        if entry[1] in chain_from:
            by_stream.setdefault(entry[1], []).append(i)
    sealed_below: list[Sealed] = []
    new_heads: list[Head] = []
    for stream, indexes in by_stream.items():
        rows = [entries[i] for i in indexes]
        head = heads.get(stream) or Head(stream)
        if not _chainable(rows, chain_from[stream], head):
            continue
        rows_below = below.get(stream)
        if rows_below:  # rare: rows another writer committed without sealing them
            start = plan_seal(head, rows_below) if len(rows_below) < SEAL_ROWS_MAX else None
            if start is None:
                continue  # tampered, or a long stretch the pass takes in its own transactions
            sealed_below.append(start)
            head = start.head
        linked, head = chain_rows(head, rows)
        for i, pair in zip(indexes, linked, strict=True):
            links[i] = pair
        new_heads.append(head)
    return BatchLinks(links, sealed_below, new_heads)


def _chainable(rows: Sequence[Sequence[Any]], first: Position, head: Head) -> bool:
    """The rows are in stream order, from ``first`` on, and all after the head."""
    if (rows[0][2], rows[0][3]) < first or head.position >= first:
        return False
    return all((a[2], a[3]) < (b[2], b[3]) for a, b in itertools.pairwise(rows))


def parse_floor(floor: str) -> Position:
    ms, _, seq = floor.partition("-")
    return int(ms), int(seq)
