"""The store's own errors. The domain maps them to the contract's (``metering.errors``):
the Redis layer imports nothing from the parts above it."""

from __future__ import annotations


class StoreUnavailable(Exception):
    """Redis cannot be reached or refuses writes for a state of its own: paid calls fail
    closed (the domain answers 503 ``unavailable``). The message names no address."""


class StoreUnsafe(Exception):
    """The configured Redis could lose balances; the message says how to fix it."""


class GroupMissing(Exception):
    """A stream lost its consumer group (Redis restarted without its data, or was wiped and
    recovered): the reader makes the groups again."""
