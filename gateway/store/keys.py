"""Every Redis key name, and the partition rule. No other module builds key strings.

An agent lives in partition ``p = crc32(agent) % P``; every key of that agent carries the
hash tag ``{pNN}`` so that one script touches one cluster slot. Layout (type, TTL, owner):

- ``iou:meta``                         hash  no TTL   partitions count, schema version
- ``iou:readyz``                       string no TTL  /readyz write probe, always "1"
- ``iou:{pNN}:agent:<agent>``          hash  no TTL   balance, held, frozen, limits (charge.lua ...)
- ``iou:{pNN}:win:<agent>``            hash  48 h     UTC day window: spent, held
- ``iou:{pNN}:walls:<agent>``        hash  35 d     rolling-hour, week, month and call counters
  (only for agents with walls beyond the balance: x = '1' in the agent hash; see _lib.lua)
- ``iou:{pNN}:task:<agent>:<task_id>`` hash  ttl + 24 h (24 h after closing)   one task (budget
  envelope): budget, spent, held, calls, exp, state, counters by tool and category, open holds
  (task_open.lua, charge.lua, hold.lua, task_close.lua; see _lib.lua's tasks section)
- ``iou:{pNN}:tasks:<agent>``          zset  8 d      the agent's task ids by creation ms (listing)
- ``iou:{pNN}:loop:<agent>:<digest>`` list  the loop's window   times (ms) of the last
  accepted calls of one tool with the same arguments (only for agents with a ``loop`` limit;
  the digest is gateway/metering/inputs.py loop_digest's)
- ``iou:{pNN}:idem:<agent>:<sha>``     string 24 h    first answer of an idempotent call
- ``iou:{pNN}:children:<agent>``     set   no TTL   the agent's sub-agents (child_create.lua)
- ``iou:{pNN}:refunded:<charge_id>``  string 30 d after the last refund: micros refunded of
  one charge, in its agent's slot (refund.lua; absent: the ledger's sum is the start)
- ``iou:{pNN}:hold:<hold_id>``         hash  24 h after closing   one hold
- ``iou:{pNN}:holds``                  zset  no TTL   open holds by expiry ms (expire_holds)
- ``iou:{pNN}:agents``                 zset  no TTL   agent names of the partition (listing)
- ``iou:{pNN}:keys:<agent>``           hash  no TTL   key_id -> sha256 of the agent key
- ``iou:{pNN}:apikey:<sha256>``        hash  no TTL   agent, key_id, created ms of one key
- ``iou:{pNN}:events``                 stream trimmed by the ledger writer (XTRIM MINID) only
- ``iou:{pNN}:webhooks``               stream webhook outbox, consumer group "webhooks"
- ``iou:{pNN}:depleted:<agent>``       string 60 s    balance.depleted sent this minute
- ``iou:{pNN}:hidem:<scope>:<sha>``    string 24 h    HTTP idempotency record (digest, answer)
- ``iou:{pNN}:tools``                  hash  no TTL   the partition's copy of the catalog, read by
  charge.lua/hold.lua/capture.lua: tool -> "<version> <price> <category> <pricing>", or
  "<version>" alone once deleted (tool_copy.lua; the version orders racing changes)
- ``iou:{tools}:tool:<name>``          hash  no TTL   one catalog entry
- ``iou:{tools}:names``                set   no TTL   catalog names
- ``iou:{tools}:version``              string no TTL  bumped on every catalog change
- ``iou:{tools}:events``               stream         catalog change events
- ``iou:{pNN}:keyused:<agent>``        hash  no TTL   sha256 of a key -> its last use, ms
- ``iou:{auth}:fail:all``              string window  failed authentications, everyone
- ``iou:{auth}:fail:client:<address>`` string window  failed authentications of one client
- ``iou:{auth}:fail:cred:<sha256>``    string window  failures of one presented credential
- ``iou:test:clock_offset_ms``         string no TTL  the test clock's offset (IOU_TEST_CLOCK only)
- ``iou:{mcp}:servers``                hash  no TTL   upstream MCP servers: name -> JSON {url,
  headers (sealed), tools, updated_ms} (gateway/store/mcp_servers.py)
"""

from __future__ import annotations

import functools
import hashlib
import zlib
from dataclasses import dataclass

META = "iou:meta"
# Counters for /metrics kept by processes Prometheus does not scrape (the ledger writers):
# bookkeeping, not money, so apart from the store's meta.
STATS = "iou:stats"
READY_PROBE = "iou:readyz"
# Where the test clock's offset (ms, may be negative) lives; read only with IOU_TEST_CLOCK.
TEST_CLOCK_KEY = "iou:test:clock_offset_ms"
# `iou replay`'s scratch server only: the absolute time (Unix ms) its scripts read as now.
REPLAY_CLOCK_KEY = "iou:replay:now_ms"
AGENT_KEYS_CACHED_MAX = 100_000
TOOLS_TAG = "iou:{tools}:"
# One hash, one field per upstream MCP server: each change is one atomic HSET/HDEL.
MCP_SERVERS = "iou:{mcp}:servers"


def partition_of(name: str, partitions: int) -> int:
    """The partition of an agent: crc32 of its UTF-8 name modulo the store's partition count."""
    return zlib.crc32(name.encode()) % partitions


def tag(partition: int) -> str:
    """The key prefix of one partition, hash tag included, e.g. ``iou:{p07}:``."""
    return f"iou:{{p{partition:02d}}}:"


def events(partition: int) -> str:
    return tag(partition) + "events"


def agents_index(partition: int) -> str:
    return tag(partition) + "agents"


def webhooks(partition: int) -> str:
    return tag(partition) + "webhooks"


def holds_index(partition: int) -> str:
    return tag(partition) + "holds"


def tools_copy(partition: int) -> str:
    """The partition's copy of the catalog (the scripts cannot read ``{tools}`` on a cluster)."""
    return tag(partition) + "tools"


def api_key_hash(api_key: str) -> str:
    """The stored form of an agent key: hex sha256 (keys are 256-bit random, no salt needed)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def api_key_partition(key_hash: str, partitions: int) -> int:
    """The partition whose slot stores the lookup record of a key hash."""
    return zlib.crc32(key_hash.encode()) % partitions


def api_key_lookup(key_hash: str, partitions: int) -> str:
    return tag(api_key_partition(key_hash, partitions)) + "apikey:" + key_hash


def short_digest(text: str) -> str:
    """The digest that names a caller's text (an idempotency key, a presented credential)
    in a key name: any text maps to a short, safe name (32 hex characters of its sha256)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def http_idempotency(scope: str, digest: str, partitions: int) -> str:
    """The HTTP idempotency record of one caller scope ("admin" or "agent:<name>")."""
    return tag(partition_of(scope, partitions)) + f"hidem:{scope}:{digest}"


def tool(name: str) -> str:
    return TOOLS_TAG + "tool:" + name


AUTH_TAG = "iou:{auth}:"
AUTH_FAILURES_ALL = AUTH_TAG + "fail:all"


def auth_failures_client(address: str) -> str:
    return AUTH_TAG + "fail:client:" + address


def auth_failures_credential(token_digest: str) -> str:
    return AUTH_TAG + "fail:cred:" + token_digest


TOOL_NAMES = TOOLS_TAG + "names"
TOOLS_VERSION = TOOLS_TAG + "version"
TOOL_EVENTS = TOOLS_TAG + "events"


@dataclass(frozen=True)
class AgentKeys:
    """The precomputed key names of one agent (built once, reused on every call)."""

    agent: str
    partition: int
    prefix: str
    agent_hash: str
    window: str
    walls: str
    keys: str
    events: str
    holds: str
    webhooks: str
    agents_index: str
    tools: str

    def idempotency(self, idempotency_key: str) -> str:
        return f"{self.prefix}idem:{self.agent}:{idempotency_key}"

    def hold(self, hold_id: str) -> str:
        return self.prefix + "hold:" + hold_id

    def task(self, task_id: str) -> str:
        """One task of the agent: another agent's task id names another key."""
        return f"{self.prefix}task:{self.agent}:{task_id}"

    def tasks(self) -> str:
        """The agent's task ids, scored by creation ms."""
        return f"{self.prefix}tasks:{self.agent}"

    def children(self) -> str:
        """The names of the agent's sub-agents (they share its partition)."""
        return f"{self.prefix}children:{self.agent}"

    def refunded(self, charge_id: str) -> str:
        """What was refunded of one of the agent's charges (refund.lua)."""
        return self.prefix + "refunded:" + charge_id

    def api_key_lookup(self, key_hash: str) -> str:
        return self.prefix + "apikey:" + key_hash

    def loop(self, digest: str) -> str:
        """The loop breaker's list of one tool and arguments (a 32-hex digest of both)."""
        return f"{self.prefix}loop:{self.agent}:{digest}"

    def depleted(self) -> str:
        return f"{self.prefix}depleted:{self.agent}"

    def keys_used(self) -> str:
        """When each of the agent's keys was last used (field: the key's hash)."""
        return f"{self.prefix}keyused:{self.agent}"


@functools.lru_cache(maxsize=AGENT_KEYS_CACHED_MAX)
def agent_keys(agent: str, partitions: int) -> AgentKeys:
    p = partition_of(agent, partitions)
    prefix = tag(p)
    return AgentKeys(
        agent=agent,
        partition=p,
        prefix=prefix,
        agent_hash=f"{prefix}agent:{agent}",
        window=f"{prefix}win:{agent}",
        walls=f"{prefix}walls:{agent}",
        keys=f"{prefix}keys:{agent}",
        events=prefix + "events",
        holds=prefix + "holds",
        webhooks=prefix + "webhooks",
        agents_index=prefix + "agents",
        tools=prefix + "tools",
    )
