"""The ledger's numbered migrations and shared SQL (``?`` placeholders; PostgreSQL's
store rewrites them to ``$n``). Amounts are BIGINT micros in both engines."""

from __future__ import annotations

# Migration n is applied once, in order, inside a transaction; {json} is TEXT in SQLite
# and JSONB in PostgreSQL.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE ledger_entries (
            entry_id TEXT PRIMARY KEY,
            stream TEXT NOT NULL,
            stream_ms BIGINT NOT NULL,
            stream_seq BIGINT NOT NULL,
            at_ms BIGINT NOT NULL,
            kind TEXT NOT NULL,
            agent TEXT,
            tool TEXT,
            category TEXT,
            amount BIGINT,
            balance_after BIGINT,
            held BIGINT,
            idempotency_key TEXT,
            idempotency_hash TEXT,
            hold_id TEXT,
            expires_at_ms BIGINT,
            metadata {json},
            data {json})""",
        # An agent's events are all in one partition stream, whose ids are Redis-clock
        # milliseconds: this one index orders an agent's ledger by time, exactly.
        "CREATE INDEX ledger_agent_position ON ledger_entries (agent, stream_ms, stream_seq)",
        # Only hold-related rows carry a hold_id; most rows (charges) skip this index.
        "CREATE INDEX ledger_hold ON ledger_entries (hold_id) WHERE hold_id IS NOT NULL",
        """CREATE TABLE dead_letters (
            stream TEXT NOT NULL,
            stream_id TEXT NOT NULL,
            fields TEXT NOT NULL,
            error TEXT NOT NULL,
            at_ms BIGINT NOT NULL,
            PRIMARY KEY (stream, stream_id))""",
        """CREATE TABLE agents (
            agent TEXT PRIMARY KEY,
            created_at_ms BIGINT,
            created_pos TEXT NOT NULL DEFAULT '',
            frozen BOOLEAN NOT NULL DEFAULT FALSE,
            frozen_pos TEXT NOT NULL DEFAULT '',
            limits TEXT NOT NULL DEFAULT '{{}}',
            limits_pos TEXT NOT NULL DEFAULT '')""",
        """CREATE TABLE agent_keys (
            key_id TEXT PRIMARY KEY,
            agent TEXT NOT NULL,
            key_hash TEXT NOT NULL,
            revoked BOOLEAN NOT NULL,
            pos TEXT NOT NULL)""",
        """CREATE TABLE tools (
            tool TEXT PRIMARY KEY,
            price BIGINT NOT NULL,
            category TEXT NOT NULL,
            pricing TEXT NOT NULL,
            upstream TEXT,
            headers TEXT,
            deleted BOOLEAN NOT NULL,
            pos TEXT NOT NULL)""",
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ],
    [
        # The identity of the Redis store this ledger describes (gateway/ledger/identity.py):
        # one row, written once, compared with the id in Redis's meta hash.
        """CREATE TABLE store_identity (
            singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
            store_id TEXT NOT NULL,
            created_at_ms BIGINT NOT NULL)""",
    ],
    [
        # Usage (gateway/ledger/usage.py): what was paid, by agent and time, and by time
        # alone for all agents. Partial, over the paid rows only (the predicate is repeated
        # word for word by the queries), and covering: kind, tool, category and amount ride
        # in the index, so a usage report reads no table row.
        """CREATE INDEX ledger_usage_agent ON ledger_entries
            (agent, at_ms, kind, tool, category, amount) WHERE kind IN ('charge', 'capture')""",
        """CREATE INDEX ledger_usage_at ON ledger_entries
            (at_ms, kind, tool, category, amount) WHERE kind IN ('charge', 'capture')""",
    ],
    [
        # Refunds and debits (and transfers between a parent and its child): `ref` names the
        # refunded charge (a transfer: the other agent), `reason` the admin's words.
        "ALTER TABLE ledger_entries ADD COLUMN ref TEXT",
        "ALTER TABLE ledger_entries ADD COLUMN reason TEXT",
        # What was refunded of one charge (refunds read it before each refund).
        "CREATE INDEX ledger_ref ON ledger_entries (ref, amount) WHERE kind = 'refund'",
        # Usage subtracts refunds: the few refund rows by agent and time, covering.
        """CREATE INDEX ledger_refunds_at ON ledger_entries
            (at_ms, agent, tool, category, amount) WHERE kind = 'refund'""",
    ],
    [
        # Tasks (budget envelopes): the task a charge, hold, capture, release or expiry
        # counted against (NULL for calls naming none).
        "ALTER TABLE ledger_entries ADD COLUMN task TEXT",
    ],
    [
        # The verifiable ledger (gateway/ledger/chain.py): each row's link in its stream's
        # hash chain, set by the sealing pass; rows already here are chained from the
        # genesis hash by the first pass. The index serves the pass and `iou verify`.
        "ALTER TABLE ledger_entries ADD COLUMN prev_hash TEXT",
        "ALTER TABLE ledger_entries ADD COLUMN hash TEXT",
        "CREATE INDEX ledger_stream_position ON ledger_entries (stream, stream_ms, stream_seq)",
        """CREATE TABLE ledger_chain_heads (
            stream TEXT PRIMARY KEY,
            stream_ms BIGINT NOT NULL,
            stream_seq BIGINT NOT NULL,
            entry_id TEXT NOT NULL,
            hash TEXT NOT NULL,
            rows BIGINT NOT NULL)""",
    ],
    [
        # Shadow limits: the limit an agent's shadow limits would have refused a charge or hold
        # with (the call succeeded); NULL on every other row, so older rows' hashes hold.
        "ALTER TABLE ledger_entries ADD COLUMN shadow_refusal TEXT",
        # The few marked rows, for `iou recover` to rebuild the agents' shadow sums.
        """CREATE INDEX ledger_shadow ON ledger_entries (agent, shadow_refusal, amount)
            WHERE shadow_refusal IS NOT NULL""",
    ],
]

INSERT_ENTRY = """INSERT INTO ledger_entries (entry_id, stream, stream_ms, stream_seq, at_ms, kind,
    agent, tool, category, amount, balance_after, held, idempotency_key, idempotency_hash,
    hold_id, expires_at_ms, metadata, data, ref, reason, task, shadow_refusal)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (entry_id) DO NOTHING"""
# The same with the row's link in its stream's hash chain (a batch sealed as it is inserted).
INSERT_LINKED_ENTRY = """INSERT INTO ledger_entries (entry_id, stream, stream_ms, stream_seq, at_ms,
    kind, agent, tool, category, amount, balance_after, held, idempotency_key, idempotency_hash,
    hold_id, expires_at_ms, metadata, data, ref, reason, task, shadow_refusal, prev_hash, hash)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (entry_id) DO NOTHING"""

# Configuration upserts: each column group keeps the stream position of the event that set
# it, and only a later position may change it, so replays and out-of-order batches from
# several writers converge on the newest state.
UPSERT_AGENT_CREATED = """INSERT INTO agents (agent, created_at_ms, created_pos, limits, limits_pos)
    VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (agent) DO UPDATE SET created_at_ms = excluded.created_at_ms,
        created_pos = excluded.created_pos,
        limits = CASE WHEN agents.limits_pos < excluded.limits_pos THEN excluded.limits
                      ELSE agents.limits END,
        limits_pos = CASE WHEN agents.limits_pos < excluded.limits_pos
                          THEN excluded.limits_pos ELSE agents.limits_pos END
    WHERE agents.created_pos < excluded.created_pos"""
UPSERT_LIMITS = """INSERT INTO agents (agent, limits, limits_pos) VALUES (?, ?, ?)
    ON CONFLICT (agent) DO UPDATE SET limits = excluded.limits, limits_pos = excluded.limits_pos
    WHERE agents.limits_pos < excluded.limits_pos"""
UPSERT_FROZEN = """INSERT INTO agents (agent, frozen, frozen_pos) VALUES (?, ?, ?)
    ON CONFLICT (agent) DO UPDATE SET frozen = excluded.frozen, frozen_pos = excluded.frozen_pos
    WHERE agents.frozen_pos < excluded.frozen_pos"""
UPSERT_KEY = """INSERT INTO agent_keys (key_id, agent, key_hash, revoked, pos)
    VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (key_id) DO UPDATE SET revoked = excluded.revoked, pos = excluded.pos
    WHERE agent_keys.pos < excluded.pos"""
UPSERT_TOOL = """INSERT INTO tools (tool, price, category, pricing, upstream, headers, deleted, pos)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (tool) DO UPDATE SET price = excluded.price, category = excluded.category,
        pricing = excluded.pricing, upstream = excluded.upstream, headers = excluded.headers,
        deleted = excluded.deleted, pos = excluded.pos
    WHERE tools.pos < excluded.pos"""
INSERT_DEAD_LETTER = """INSERT INTO dead_letters (stream, stream_id, fields, error, at_ms)
    VALUES (?, ?, ?, ?, ?) ON CONFLICT (stream, stream_id) DO NOTHING"""

SELECT_IDENTITY = "SELECT store_id FROM store_identity WHERE singleton = 1"
CLAIM_IDENTITY = """INSERT INTO store_identity (singleton, store_id, created_at_ms)
    VALUES (1, ?, ?) ON CONFLICT (singleton) DO NOTHING"""

# Balance effect of each kind: a capture gives back its hold's amount minus the cost.
DELTA_SQL = """CASE kind WHEN 'grant' THEN amount WHEN 'fund' THEN amount
    WHEN 'release' THEN amount WHEN 'expire' THEN amount
    WHEN 'charge' THEN -amount WHEN 'hold' THEN -amount
    WHEN 'capture' THEN held - amount
    WHEN 'refund' THEN amount WHEN 'transfer_in' THEN amount
    WHEN 'debit' THEN -amount WHEN 'transfer_out' THEN -amount ELSE 0 END"""

OPEN_HOLDS = """SELECT h.agent, h.hold_id, h.tool, h.category, h.amount, h.at_ms, h.expires_at_ms
    FROM ledger_entries h WHERE h.kind = 'hold' AND NOT EXISTS (
        SELECT 1 FROM ledger_entries c WHERE c.hold_id = h.hold_id
        AND c.kind IN ('capture', 'release', 'expire'))"""

AGENT_TOTALS = f"""SELECT agent, SUM({DELTA_SQL}) FROM ledger_entries
    WHERE agent IS NOT NULL GROUP BY agent"""

LAST_BALANCES = """SELECT e.agent, e.balance_after FROM ledger_entries e
    JOIN (SELECT agent, MAX(stream_ms * 1000000 + stream_seq) AS position
          FROM ledger_entries WHERE balance_after IS NOT NULL GROUP BY agent) last
    ON e.agent = last.agent AND e.stream_ms * 1000000 + e.stream_seq = last.position
    WHERE e.balance_after IS NOT NULL"""

# Spent since a time (today's window): charges and captures, less the refunds of those
# same charges (a refund gives back to the window its charge was in).
SPENT_SINCE = """SELECT agent, category, SUM(amount) FROM (
        SELECT agent, category, amount FROM ledger_entries
        WHERE kind IN ('charge', 'capture') AND at_ms >= ?
        UNION ALL
        SELECT r.agent, r.category, -r.amount FROM ledger_entries r
        JOIN ledger_entries c ON c.entry_id = r.ref
        WHERE r.kind = 'refund' AND r.at_ms >= ? AND c.at_ms >= ?) spent
    GROUP BY agent, category"""

# The charge a refund names (a charge, batch item or capture: its entry id is the charge id),
# with what its refunds already gave back.
CHARGE_FOR_REFUND = """SELECT c.agent, c.tool, c.category, c.amount, c.at_ms,
        (SELECT COALESCE(SUM(r.amount), 0) FROM ledger_entries r
         WHERE r.kind = 'refund' AND r.ref = c.entry_id), c.task
    FROM ledger_entries c WHERE c.entry_id = ? AND c.kind IN ('charge', 'capture')"""

IDEMPOTENT_SINCE = """SELECT agent, idempotency_key, idempotency_hash, entry_id, kind, amount,
    balance_after, hold_id, expires_at_ms, held FROM ledger_entries
    WHERE idempotency_hash IS NOT NULL AND at_ms >= ?"""


# What each agent's shadow limits would have refused, by limit (the sums the scripts keep).
SHADOW_SUMS = """SELECT agent, shadow_refusal, COUNT(*), SUM(amount) FROM ledger_entries
    WHERE shadow_refusal IS NOT NULL GROUP BY agent, shadow_refusal"""


def position(stream_ms: int, stream_seq: int) -> str:
    """A stream position that sorts as text: zero-padded ms and sequence."""
    return f"{stream_ms:020d}-{stream_seq:020d}"

# The parent of each sub-agent: its creation event ('agent') names it (in data).
AGENT_PARENTS = """SELECT agent, data FROM ledger_entries
    WHERE kind = 'agent' AND CAST(data AS TEXT) LIKE '%"parent"%'"""
