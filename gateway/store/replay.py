"""The scripts on ``iou replay``'s scratch server: the production scripts whose clock reads
an absolute time set before each call (the time the ledger recorded for it).

Only ever bound to a throwaway server (gateway/store/embedded.py ``start_scratch``); the
live store is never opened by a replay.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.store import keys
from gateway.store.calls import ScriptCalls
from gateway.store.connections import Connection


class ReplayCalls(ScriptCalls):
    """``ScriptCalls`` with the replay clock, plus the two commands a replay needs besides
    the scripts. Calls issued in one event-loop tick go out in one write, in order, so a
    clock set just before a call is the clock that call reads."""

    def __init__(self, conn: Connection, partitions: int) -> None:
        super().__init__(conn, partitions, replay_clock_key=keys.REPLAY_CLOCK_KEY)
        self._conn = conn

    async def set_clock(self, now_ms: int) -> None:
        """What ``now_ms()`` reads in the scripts called after this one (Unix ms)."""
        await self._conn.call_or_raise(b"SET", keys.REPLAY_CLOCK_KEY, str(now_ms))

    async def drop_outputs(self, partitions: Iterable[int]) -> None:
        """Delete what the scripts appended for readers that a scratch server has none of
        (the events streams and webhook outboxes), so a long replay's memory stays flat."""
        names = [name for p in partitions for name in (keys.events(p), keys.webhooks(p))]
        if names:
            await self._conn.call_or_raise(b"DEL", *names)

    async def server_cpu_s(self) -> float:
        """CPU seconds the scratch server spent so far (user and system; a benchmark's
        figure: it tells the scripts' share of a replay from the replaying process's)."""
        info = await self._conn.call_or_raise(b"INFO", b"cpu")
        text = info.decode() if isinstance(info, bytes) else str(info)
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return float(fields.get("used_cpu_user", 0)) + float(fields.get("used_cpu_sys", 0))
