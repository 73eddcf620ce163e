"""`iou verify` tells a forged row inserted into a sealed chain from a removed one, whatever
the forger wrote in its `prev_hash` and `hash` (the row after it still links to the row
before it), and says what it cannot see without a published head."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.ledger import chain
from gateway.ledger.store import LedgerStore
from gateway.metering.engine import Engine
from tests.test_ledger_chain import (
    COLUMNS,
    _gap,
    _insert_copy,
    busiest_stream,
    problems,
    sealed_ledger,
    sql,
    stream_rows,
)

GARBAGE = "cd" * 32


@pytest.mark.parametrize("forged_link", ["both garbage", "prev right, hash garbage"])
async def test_a_forged_row_is_named_inserted(real_engine: Engine, store: LedgerStore,
                                              ledger_url: str, forged_link: str) -> None:
    await sealed_ledger(real_engine, store, "forge")
    stream = await busiest_stream(ledger_url)
    rows = await stream_rows(ledger_url, stream)
    before = rows[_gap(rows)]
    prev = GARBAGE if forged_link == "both garbage" else before[-1]
    await _insert_copy(ledger_url, before[:len(COLUMNS)], "forged-x", int(before[3]) + 1,
                       (prev, "ef" * 32))
    assert await problems(store) == [(stream, "forged-x", "inserted")]
    await sql(ledger_url, "DELETE FROM ledger_entries WHERE entry_id = 'forged-x'")
    assert await problems(store) == []


async def test_a_forged_first_row_is_named_inserted(real_engine: Engine, store: LedgerStore,
                                                    ledger_url: str) -> None:
    await sealed_ledger(real_engine, store, "first")
    stream = await busiest_stream(ledger_url)
    rows = await stream_rows(ledger_url, stream)
    first = rows[0]
    if int(first[3]) == 0:  # the forged row must sort before the first one
        await _insert_copy(ledger_url, first[:len(COLUMNS)], "forged-0", 0, (GARBAGE, GARBAGE))
        await sql(ledger_url, "UPDATE ledger_entries SET stream_ms = ? WHERE entry_id = ?",
                  int(first[2]) - 1, "forged-0")
    else:
        await _insert_copy(ledger_url, first[:len(COLUMNS)], "forged-0", 0, (GARBAGE, GARBAGE))
    assert await problems(store) == [(stream, "forged-0", "inserted")]


def test_a_removed_row_is_still_named_removed() -> None:
    """The lookahead does not turn a gap into an insertion: rows A, B, C sealed, B deleted."""
    rows = [_row(i) for i in range(3)]
    sealed = chain.seal_rows(chain.Head("p00"), [(r[0], *r) for r in rows])
    linked = [(*r, prev, digest) for r, (prev, digest, _) in zip(rows, sealed.links,
                                                                 strict=True)]
    intact = chain.verify_stream(sealed.head, linked)
    assert intact.problem is None and intact.checked == 3
    report = chain.verify_stream(sealed.head, [linked[0], linked[2]])
    assert report.problem is not None
    assert (report.problem.entry_id, report.problem.kind) == ("e2", "removed")


def _row(i: int) -> tuple[object, ...]:
    values: dict[str, object] = {"entry_id": f"e{i}", "stream": "p00", "stream_ms": 1000 + i,
                                 "stream_seq": 0, "at_ms": 1000 + i, "kind": "charge",
                                 "agent": "a", "amount": 5}
    return tuple(values.get(c) for c in COLUMNS)


def test_verify_says_what_it_cannot_see(tmp_path: Path) -> None:
    """A stream deleted with its head record leaves nothing to recompute: the output says
    that only heads published elsewhere catch it."""
    environ = {"IOU_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
               "IOU_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "gateway.cli.main", "verify"], env=environ,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "published" in done.stdout and "GET /v1/ledger/heads" in done.stdout, done.stdout
