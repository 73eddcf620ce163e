"""The store's stream operations on a real Redis: a read over every stream that waits
inside Redis, and a lost consumer group reported as GroupMissing."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.store import streams
from gateway.store.errors import GroupMissing
from gateway.store.resp import RedisConnection, parse_redis_url
from tests.conftest import flush

GROUP = b"test-group"
STREAMS = ["iou:{p00}:events", "iou:{p01}:events"]


async def test_read_together_waits_for_the_first_entry(real_redis_url: str) -> None:
    flush(real_redis_url)
    reader = RedisConnection(parse_redis_url(real_redis_url))  # a blocking read: its own
    writer = RedisConnection(parse_redis_url(real_redis_url))
    try:
        assert streams.one_server(reader)
        await streams.create_groups(reader, STREAMS, GROUP)
        positions = [(s, b">") for s in STREAMS]
        started = time.monotonic()
        assert await streams.read_together(reader, GROUP, b"c1", positions, 10, 200) == []
        assert time.monotonic() - started >= 0.15  # it waited inside Redis
        waiting = asyncio.create_task(
            streams.read_together(reader, GROUP, b"c1", positions, 10, 5000))
        await asyncio.sleep(0.05)
        await streams.queue_webhook(writer, 16, "x", [b"k", b"v"])  # another stream: no wake
        await writer.call_or_raise(b"XADD", STREAMS[1], b"*", b"f", b"1")
        batch = await asyncio.wait_for(waiting, 3)
        assert [(s, [fields for _, fields in entries]) for s, entries in batch] == [
            (STREAMS[1].encode(), [[b"f", b"1"]])]
        await writer.call_or_raise(b"DEL", *STREAMS)
        with pytest.raises(GroupMissing):
            await streams.read_together(reader, GROUP, b"c1", positions, 10)
        with pytest.raises(GroupMissing):
            await streams.read(reader, GROUP, b"c1", positions, 10)
    finally:
        reader.close()
        writer.close()
