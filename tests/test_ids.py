"""Identifiers minted by the gateway."""

from __future__ import annotations


def test_entry_ids_differ_across_a_fork() -> None:
    import os

    from gateway import ids

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
