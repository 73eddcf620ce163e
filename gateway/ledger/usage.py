"""Usage for people who pay: what was spent, by tool or category, per hour or per UTC day.

Computed from the ledger (the durable record, not Redis), so it covers any past range and
never loads the charge path. Only what an agent paid counts: ``charge`` rows (their amount
is the cost) and ``capture`` rows (the amount captured; the hold and release rows around it
move no money for good), less what refunds gave back of them (in the refunded charge's
bucket). Migration 3 adds partial indexes over exactly those rows, by
agent and time and by time alone, which also carry tool, category and amount so that the
query reads the index alone. Amounts are integer micros; bucket starts are Unix ms.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.ledger.store import LedgerStore

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
PERIOD_MS = {"hour": HOUR_MS, "day": DAY_MS}
GROUPS = ("tool", "category")
# The predicate of the partial indexes in migration 3, word for word: a query uses a
# partial index only when its WHERE clause repeats the index's.
PAID_KINDS_SQL = "kind IN ('charge', 'capture')"


@dataclass(frozen=True)
class UsageRow:
    start_ms: int  # the bucket's first ms (UTC hour or day)
    key: str  # the tool or category
    calls: int
    amount_micros: int


def usage_query(by: str, period: str, agent: str | None, since_ms: int, until_ms: int
                ) -> tuple[str, list[object]]:
    """SQL (``?`` placeholders) and parameters: paid calls and amounts per bucket and key,
    in [since_ms, until_ms), oldest bucket first."""
    assert by in GROUPS and period in PERIOD_MS
    width_ms = PERIOD_MS[period]
    where = [PAID_KINDS_SQL, "at_ms >= ?", "at_ms < ?"]
    params: list[object] = [width_ms, width_ms, since_ms, until_ms]
    if agent is not None:
        where.insert(1, "agent = ?")
        params.insert(2, agent)
    # Integer division on BIGINT in both engines: the bucket's start without a float.
    sql = (f"SELECT (at_ms / ?) * ? AS bucket, {by}, COUNT(*), SUM(amount) "
           f"FROM ledger_entries WHERE {' AND '.join(where)} "
           f"GROUP BY bucket, {by} ORDER BY bucket, {by}")
    return sql, params


def refunds_query(by: str, period: str, agent: str | None, since_ms: int, until_ms: int
                  ) -> tuple[str, list[object]]:
    """SQL and parameters: what refunds gave back of the charges in [since_ms, until_ms),
    per bucket and key of the refunded charge (a refund lowers its charge's bucket, so a
    bucket's net amount is what its calls finally cost, never below zero)."""
    assert by in GROUPS and period in PERIOD_MS
    width_ms = PERIOD_MS[period]
    where = ["r.kind = 'refund'", "c.at_ms >= ?", "c.at_ms < ?"]
    params: list[object] = [width_ms, width_ms, since_ms, until_ms]
    if agent is not None:
        where.append("r.agent = ?")
        params.append(agent)
    sql = (f"SELECT (c.at_ms / ?) * ? AS bucket, c.{by}, SUM(r.amount) "
           "FROM ledger_entries r JOIN ledger_entries c ON c.entry_id = r.ref "
           f"WHERE {' AND '.join(where)} GROUP BY bucket, c.{by}")
    return sql, params


async def usage(store: LedgerStore, by: str, period: str, agent: str | None,
                since_ms: int, until_ms: int) -> list[UsageRow]:
    """Paid calls and their amounts net of refunds, per bucket and key."""
    sql, params = usage_query(by, period, agent, since_ms, until_ms)
    rows = await store.query(sql, params)
    refunded: dict[tuple[int, str], int] = {}
    sql, params = refunds_query(by, period, agent, since_ms, until_ms)
    for r in await store.query(sql, params):
        refunded[(int(r[0]), str(r[1] or ""))] = int(r[2] or 0)
    out = []
    for r in rows:
        start_ms, key = int(r[0]), str(r[1] or "")
        amount = int(r[3] or 0) - refunded.get((start_ms, key), 0)
        out.append(UsageRow(start_ms, key, int(r[2]), amount))
    return out
