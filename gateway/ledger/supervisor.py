"""Keep the ledger writer of ``iou serve`` alive: restart it with capped exponential backoff.

A writer that dies (killed, out of memory, a bug) would otherwise leave every new event in
the streams until someone restarted the gateway. The supervisor is a thread of the ``iou
serve`` process (uvicorn owns the main thread); it waits on the child, logs one line per
restart naming the exit status, and counts restarts in Redis (field ``writer_restarts`` of
the meta hash). Redis is where the gateway's workers, which are other processes (and maybe
other hosts), read it for ``iou_ledger_writer_restarts_total``; it is also where ``iou
reconcile`` leaves its drift count for the same reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import threading
import time

from gateway.store import meta
from gateway.store.connections import open_connection
from gateway.store.errors import StoreUnavailable
from gateway.store.resp import ReplyError

log = logging.getLogger("iou.supervisor")

BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 30.0
# A writer that ran this long was healthy: its next death starts the backoff afresh.
HEALTHY_AFTER_S = 60.0
POLL_S = 1.0  # how often the thread looks up from waiting (stop, unrecorded restarts)
STOP_TIMEOUT_S = 30.0
NICENESS = 10  # added to the writer's nice value (it is background work with slack)


def exit_status(returncode: int) -> str:
    """'exit status 1' or 'signal SIGKILL' (Popen's negative return codes)."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


def backoff_s(failures: int, first_s: float = BACKOFF_FIRST_S,
              max_s: float = BACKOFF_MAX_S) -> float:
    """Wait before restart number ``failures`` (1-based) of an unhealthy run: doubling, capped."""
    return float(min(first_s * 2 ** max(failures - 1, 0), max_s))


async def record_restarts(redis_url: str, count: int) -> None:
    """Add ``count`` to the restarts counter in Redis (raises StoreUnavailable when it is down)."""
    conn = open_connection(redis_url)
    try:
        await meta.add_writer_restarts(conn, count)
    finally:
        conn.close()


class WriterSupervisor:
    """Run ``command`` as a child and restart it whenever it exits, until stop()."""

    def __init__(self, command: list[str], redis_url: str) -> None:
        self._command = command
        self._redis_url = redis_url
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self.restarts = 0
        self._unrecorded = 0  # restarts not yet added to Redis (it was down)

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None else process.pid

    def start(self) -> None:
        self._spawn()
        self._thread = threading.Thread(target=self._watch, name="iou-writer-supervisor",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """SIGTERM the writer (it finishes the batch in hand) and stop restarting it."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            process = subprocess.Popen(self._command, stdin=subprocess.DEVNULL)
            self._process = process
        # Background work with a second of slack (lag target < 1 s): at a lower priority
        # its batches wait for a free core instead of delaying requests.
        with contextlib.suppress(ProcessLookupError):  # it already exited: its log says why
            os.setpriority(os.PRIO_PROCESS, process.pid, NICENESS)

    def _watch(self) -> None:
        failures = 0
        started = time.monotonic()
        while not self._stopping.is_set():
            process = self._process
            assert process is not None
            try:
                returncode = process.wait(POLL_S)
            except subprocess.TimeoutExpired:
                self._record()
                continue
            if self._stopping.is_set():
                return
            failures = 1 if time.monotonic() - started > HEALTHY_AFTER_S else failures + 1
            wait_s = backoff_s(failures)
            self.restarts += 1
            self._unrecorded += 1
            log.error("ledger writer (pid %d) exited with %s; restart %d in %.2f s",
                      process.pid, exit_status(returncode), self.restarts, wait_s)
            if self._stopping.wait(wait_s):
                return
            self._spawn()
            started = time.monotonic()
            self._record()

    def _record(self) -> None:
        if not self._unrecorded:
            return
        try:
            asyncio.run(record_restarts(self._redis_url, self._unrecorded))
        except (StoreUnavailable, ReplyError, OSError) as exc:
            log.warning("could not count the writer restart in Redis yet: %s", exc)
            return
        self._unrecorded = 0
