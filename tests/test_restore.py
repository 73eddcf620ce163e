"""iou recover writes through lua/restore.lua: the replays it rebuilds answer what the
first calls answered, warnings included."""

from __future__ import annotations

from gateway.ledger.recover import recover
from gateway.ledger.store import LedgerStore
from gateway.metering.engine import Engine
from tests.conftest import flush
from tests.helpers import T, setup_catalog
from tests.ledger_helpers import writer_for


async def _wipe_and_recover(engine: Engine, store: LedgerStore, url: str) -> None:
    await writer_for(engine, store).drain()
    await store.set_meta("partitions", str(engine.partitions))
    flush(url)
    await engine.scripts.preload()
    await recover(engine, store)


async def test_a_recovered_replay_keeps_its_warnings(real_engine: Engine, real_redis_url: str,
                                                    store: LedgerStore) -> None:
    engine = real_engine
    await setup_catalog(engine)
    await engine.create_agent("low-agent", grant_micros=T)
    await engine.set_limits("low-agent", {"low_balance": T})
    charged = await engine.charge("low-agent", "web_search", idempotency_key="c1")
    held = await engine.hold("low-agent", "llm_summarize", 100_000, idempotency_key="h1")
    assert charged.warnings == held.warnings == ("low_balance",)
    await _wipe_and_recover(engine, store, real_redis_url)
    again = await engine.charge("low-agent", "web_search", idempotency_key="c1")
    assert again.replayed and again.warnings == charged.warnings
    assert again.balance_micros == charged.balance_micros
    held_again = await engine.hold("low-agent", "llm_summarize", 100_000,
                                   idempotency_key="h1")
    assert held_again.replayed and held_again.warnings == held.warnings
    assert held_again.hold_id == held.hold_id


async def test_recovered_tools_carry_a_catalog_version(real_engine: Engine,
                                                       real_redis_url: str,
                                                       store: LedgerStore) -> None:
    engine = real_engine
    await setup_catalog(engine)
    before = {t.name: t.version for t in engine.tools()}
    await _wipe_and_recover(engine, store, real_redis_url)
    after = {t.name: t.version for t in engine.tools()}
    assert after.keys() == before.keys()
    assert all(v > 0 for v in after.values()), after
