"""The `iou` command with a fault planted from the tests' side (production code has no hook).

    python -m tests.fault_entry FAULT[:PROBABILITY] [iou arguments...]

patches one function of this process, then runs the CLI's main with the remaining
arguments. The faults:

- ``after_read`` / ``after_commit``: a ledger writer (``iou writer``) kills itself with
  SIGKILL now and then (PROBABILITY per batch, default 0.1) just before it commits
  a batch, or just after the commit and before the XACK, to prove that no crash point
  loses or doubles rows;
- ``mid_seal``: a ledger writer kills itself now and then (PROBABILITY per stream of a
  sealing pass, and per batch chained as it is inserted) inside the transaction that chains
  the ledger's rows (gateway/ledger/chain.py), after the links of earlier streams were
  written and before the commit;
- ``batch_item``: in ``iou serve`` (one worker: uvicorn runs it in this process), a batch
  item whose metadata is ``{"iou_fault": "raise"}`` raises after its charge (the worst
  moment), the first time only (a replayed item answers normally).
"""

from __future__ import annotations

import os
import random
import signal
import sys
from collections.abc import Callable
from typing import Any

CRASH_PROBABILITY_DEFAULT = 0.1


def _crash_sometimes(probability: float) -> None:
    if random.random() < probability:
        os.kill(os.getpid(), signal.SIGKILL)


def _writer_crashes(probability: float, before_commit: bool) -> None:
    from gateway.ledger.writer import LedgerWriter

    commit = LedgerWriter._write

    async def write(self: LedgerWriter, *args: Any) -> Any:
        if before_commit:
            _crash_sometimes(probability)
        settled = await commit(self, *args)
        if not before_commit:
            _crash_sometimes(probability)  # committed, not yet acknowledged
        return settled

    LedgerWriter._write = write  # type: ignore[method-assign,assignment]


def _seal_crashes(probability: float) -> None:
    from gateway.ledger import chain

    plan = chain.plan_seal

    def plan_then_crash(*args: Any) -> Any:
        planned = plan(*args)
        _crash_sometimes(probability)  # inside the sealing transaction, not yet committed
        return planned

    chain.plan_seal = plan_then_crash  # type: ignore[assignment]
    link = chain.link_batch

    def link_then_crash(*args: Any) -> Any:
        linked = link(*args)
        _crash_sometimes(probability)  # in the batch's insert transaction, before the insert
        return linked

    chain.link_batch = link_then_crash  # type: ignore[assignment]


def _batch_item_raises(probability: float) -> None:
    from gateway.api import agent

    charge = agent.charge_one  # what a batch item calls (by its module-level name)

    async def charge_then_raise(ctx: Any, caller: str, request: Any) -> Any:
        result = await charge(ctx, caller, request)
        marked = (request.metadata or {}).get("iou_fault") == "raise"
        if marked and request.index is not None and not result.replayed:
            raise RuntimeError("fault planted by tests/fault_entry.py after the charge")
        return result

    agent.charge_one = charge_then_raise  # type: ignore[assignment]


FAULTS: dict[str, Callable[[float], None]] = {
    "after_read": lambda p: _writer_crashes(p, before_commit=True),
    "after_commit": lambda p: _writer_crashes(p, before_commit=False),
    "mid_seal": _seal_crashes,
    "batch_item": _batch_item_raises,  # every marked item, the first time
}


def main() -> None:
    planted, *args = sys.argv[1:]
    fault, _, probability = planted.partition(":")
    FAULTS[fault](float(probability or CRASH_PROBABILITY_DEFAULT))
    from gateway.cli.main import main as iou

    sys.argv = ["iou", *args]
    iou()


if __name__ == "__main__":
    main()
