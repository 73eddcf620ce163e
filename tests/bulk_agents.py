"""Load many agents straight into Redis through create_agent.lua, pipelined (a dashboard
test needs 100,000 agents; 100,000 HTTP calls would take minutes)."""

from __future__ import annotations

import secrets

import redis

from gateway.metering import ids
from gateway.store import keys
from gateway.store.scripts import load_script

PIPELINE_CALLS = 2000
AMOUNT_MAX_MICROS = 1_000_000_000 * 1_000_000
LOW_BALANCE_MICROS = 1_000_000


def grant_of(i: int) -> int:
    """A spread of opening balances (0 to 99.99 tokens) so that sorting means something."""
    return (i * 7919) % 10_000 * 10_000


def load_agents(redis_url: str, count: int, prefix: str, partitions: int = 16,
                keyed: int | None = None) -> list[tuple[str, str]]:
    """Create ``count`` agents named ``<prefix><i:06d>``; returns (name, api_key) of each.

    Only the first ``keyed`` agents (all by default) get a key that authenticates: drawing
    a key whose lookup lands in the agent's partition takes P hashes; the others get the
    record of a random hash (api_key "")."""
    client = redis.Redis.from_url(redis_url)
    script = load_script("create_agent")
    sha = client.script_load(script.source)
    created: list[tuple[str, str]] = []
    try:
        pipe = client.pipeline(transaction=False)
        for i in range(count):
            name = f"{prefix}{i:06d}"
            k = keys.agent_keys(name, partitions)
            if keyed is None or i < keyed:
                api_key, key_hash = ids.new_api_key(k.partition, partitions)
            else:
                api_key, key_hash = "", secrets.token_hex(32)
            pipe.evalsha(sha, 5, k.agent_hash, k.keys, k.api_key_lookup(key_hash), k.events,
                         k.agents_index, name, ids.uuid7(), ids.uuid7(), str(grant_of(i)),
                         str(AMOUNT_MAX_MICROS), str(LOW_BALANCE_MICROS), ids.key_id(),
                         key_hash)
            created.append((name, api_key))
            if len(pipe) >= PIPELINE_CALLS:
                _check(pipe.execute())
        _check(pipe.execute())
    finally:
        client.close()
    return created


def _check(replies: list[list[int]]) -> None:
    bad = [r for r in replies if r[0] != 0]
    assert not bad, f"create_agent.lua refused: {bad[:3]}"
