"""Finding and waiting on the processes a test started (by pid, from /proc)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def writer_pids(gateway_pid: int) -> list[int]:
    """The ledger writer children of an ``iou serve`` process."""
    return [p for p in children(gateway_pid) if b"writer" in cmdline(p)]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float,
             every_s: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(every_s)


def wait_gone(pid: int, timeout_s: float = 10) -> None:
    """Wait until ``pid`` has exited (and was reaped, or is a zombie)."""
    wait_for(f"pid {pid} to exit", lambda: not alive(pid) or None, timeout_s)
