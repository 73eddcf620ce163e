"""The faults that tests/fault_entry.py plants really strike where they say (the slow fault
tests rely on them: a fault that never fired would prove nothing)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from gateway.ledger.writer import GROUP
from gateway.metering.engine import Engine
from tests.ledger_helpers import store_for

WRITER_DEATH_TIMEOUT_S = 60


async def _writer_dies(engine: Engine, ledger_url: str, fault: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env.update({"IOU_REDIS_URL": engine.conn.url, "IOU_LEDGER_URL": ledger_url})
    done = subprocess.run([sys.executable, "-m", "tests.fault_entry", f"{fault}:1", "writer",
                           "--consumer", "planted"], env=env, capture_output=True,
                          timeout=WRITER_DEATH_TIMEOUT_S)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]


async def _pending(engine: Engine, agent: str) -> int:
    stream = engine.agent_keys(agent).events
    summary = await engine.conn.call_or_raise(b"XPENDING", stream, GROUP)
    return int(summary[0])


async def _ledger_rows(ledger_url: str, agent: str) -> int:
    store = store_for(ledger_url)
    try:
        return len(await store.entries(agent, 100))
    finally:
        await store.close()


async def test_after_read_kills_the_writer_before_its_commit(
        real_engine: Engine, tmp_path: Path) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    await real_engine.create_agent("planted-read", grant_micros=1_000_000)
    await _writer_dies(real_engine, ledger_url, "after_read")
    assert await _ledger_rows(ledger_url, "planted-read") == 0
    assert await _pending(real_engine, "planted-read") >= 1


async def test_after_commit_kills_the_writer_between_commit_and_ack(
        real_engine: Engine, tmp_path: Path) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    await real_engine.create_agent("planted-commit", grant_micros=1_000_000)
    await _writer_dies(real_engine, ledger_url, "after_commit")
    assert await _ledger_rows(ledger_url, "planted-commit") == 1  # the grant
    assert await _pending(real_engine, "planted-commit") >= 1  # never acknowledged
