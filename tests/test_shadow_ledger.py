"""Shadow limits in the ledger (SQLite and PostgreSQL): the shadow_refusal column of charges
and holds, and `iou recover` rebuilding the shadow limits and their sums from it."""

from __future__ import annotations

from gateway.ledger.recover import recover
from gateway.ledger.store import LedgerStore
from gateway.metering.engine import Engine
from tests.conftest import flush
from tests.ledger_helpers import writer_for


async def test_marks_reach_the_ledger_and_recover_rebuilds_the_sums(
        real_engine: Engine, real_redis_url: str, store: LedgerStore) -> None:
    engine = real_engine
    await engine.set_tool("sh_search", 50_000, "tool")
    await engine.set_tool("sh_cheap", 10_000, "tool")
    await engine.create_agent("sh-agent", 10_000_000)
    await engine.set_limits("sh-agent", {"shadow.per_call": 40_000,
                                         "shadow.calls.per_day": 3})
    # Over the shadow per-call cap three times, then the 4th and 5th calls of the day.
    charged = [await engine.charge("sh-agent", tool) for tool in ["sh_search"] * 3 + ["sh_cheap"]]
    held = await engine.hold("sh-agent", "sh_cheap")
    assert [c.shadow_refusal for c in charged] == ["per_call"] * 3 + ["calls_per_day"]
    assert held.shadow_refusal == "calls_per_day"
    sums = await engine.shadow_sums("sh-agent")
    assert sums == {"per_call": (3, 150_000), "calls_per_day": (2, 20_000)}

    await writer_for(engine, store).drain()
    rows = await store.entries("sh-agent", 10)
    assert [(e.kind, e.shadow_refusal) for e in reversed(rows)] == [
        ("grant", None), ("charge", "per_call"), ("charge", "per_call"),
        ("charge", "per_call"), ("charge", "calls_per_day"), ("hold", "calls_per_day")]

    await store.set_meta("partitions", str(engine.partitions))
    limits = (await engine.agent_state("sh-agent")).limits
    flush(real_redis_url)
    await engine.scripts.preload()
    await recover(engine, store)
    assert await engine.shadow_sums("sh-agent") == sums
    assert (await engine.agent_state("sh-agent")).limits == limits
    # The shadow call cap's counters were rebuilt too (the enforced limits have no wall):
    # the day's 6th call is still over it.
    again = await engine.charge("sh-agent", "sh_cheap")
    assert again.shadow_refusal == "calls_per_day"
