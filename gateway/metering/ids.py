"""Identifiers minted by the gateway: time-ordered random ids and agent keys."""

from __future__ import annotations

import os
import random
import secrets
import time

from gateway.store import keys

# Seeded from os.urandom at import and again in every forked child, so no two processes
# draw the same sequence (a repeated entry id would be dropped by ON CONFLICT DO NOTHING).
_random = random.Random(secrets.randbits(128))
os.register_at_fork(after_in_child=lambda: _random.seed(secrets.randbits(128)))
API_KEY_PREFIX = "iou_"
API_KEY_RANDOM_BYTES = 32  # 43 url-safe characters


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix ms, then random bits; sorts by creation time.

    The random bits only need to be unique, not secret (ids are public), so they come from
    the process's seeded Mersenne Twister, several times cheaper than os.urandom here."""
    ms = time.time_ns() // 1_000_000
    rand = _random.getrandbits(80)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 68) & 0xFFF) << 64
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)
    h = f"{value:032x}"  # the canonical 8-4-4-4-12 form, without building a uuid.UUID
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def hold_id() -> str:
    return "hold_" + uuid7().replace("-", "")


def task_id() -> str:
    """``task_`` + 128 random bits in hex: a task id is unguessable, though it is never a
    credential (a task is only usable by its own agent)."""
    return "task_" + secrets.token_hex(16)


def key_id() -> str:
    """``key_`` + a UUIDv7 in hex: public, unique, and it carries its creation time (ms)."""
    return "key_" + uuid7().replace("-", "")


def new_api_key(partition: int, partitions: int) -> tuple[str, str]:
    """A fresh agent key and its hash, whose lookup record lands in ``partition``.

    Drawing until the hash falls in the agent's partition (P tries on average) keeps the
    key fully random while its lookup record shares the agent's cluster slot, so one
    script can create the agent and its key atomically.
    """
    while True:
        api_key = API_KEY_PREFIX + secrets.token_urlsafe(API_KEY_RANDOM_BYTES)
        key_hash = keys.api_key_hash(api_key)
        if keys.api_key_partition(key_hash, partitions) == partition:
            return api_key, key_hash
