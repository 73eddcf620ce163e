"""Identifiers minted by the gateway."""

from __future__ import annotations

import time
import uuid

from gateway.metering import ids


def test_entry_ids_differ_across_a_fork() -> None:
    import os

    from gateway.metering import ids

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child writes its next ids and leaves at once
        os.write(write, "".join(ids.uuid7() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    mine = "".join(ids.uuid7() for _ in range(3))
    os.waitpid(pid, 0)
    theirs = os.read(read, 1000).decode()
    os.close(read)
    assert theirs and theirs[-20:] != mine[-20:]  # random tails differ
    assert ids.uuid7()[14] == "7"  # version nibble


def test_entry_ids_are_canonical_uuid7_in_time_order() -> None:
    before_ms = time.time_ns() // 1_000_000
    minted = [ids.uuid7() for _ in range(1000)]
    for text in minted:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # lower-case 8-4-4-4-12
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert parsed.int >> 80 >= before_ms
    assert len(set(minted)) == len(minted)
    assert [u[:13] for u in minted] == sorted(u[:13] for u in minted)  # ms prefix ascends
