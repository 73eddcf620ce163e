"""Races cannot overspend: 4 processes x 250 concurrent charges against exact budgets."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import Counter

import pytest

from gateway.config import load_settings
from gateway.metering import errors
from gateway.metering.engine import Engine
from gateway.store.connections import open_connection
from tests.helpers import T, events, setup_catalog

PROCESSES = 4
CALLS_PER_PROCESS = 250
COST = 70_000  # 0.07


async def _charge_many(url: str, agent: str, tool: str, cost: int | None) -> Counter[str]:
    settings = load_settings({"IOU_REDIS_URL": url, "IOU_PARTITIONS": "16"})
    engine = Engine(open_connection(url), settings)
    await engine.start(background=False)

    async def one() -> str:
        try:
            await engine.charge(agent, tool, cost_micros=cost)
            return "ok"
        except errors.GatewayError as exc:
            return str(exc.details.get("limit", exc.code))

    outcomes = Counter(await asyncio.gather(*(one() for _ in range(CALLS_PER_PROCESS))))
    engine.conn.close()
    return outcomes


def _worker(args: tuple[str, str, str, int | None]) -> Counter[str]:
    return asyncio.run(_charge_many(*args))


def run_processes(url: str, agent: str, tool: str, cost: int | None) -> Counter[str]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        parts = pool.map(_worker, [(url, agent, tool, cost)] * PROCESSES)
    return sum(parts, Counter())


async def prepare(engine: Engine, balance: int) -> None:
    await setup_catalog(engine)
    await engine.set_tool("api_call", COST, "tool")
    await engine.create_agent("racer", grant_micros=balance)


async def test_balance_covers_exactly_300(real_engine: Engine) -> None:
    engine = real_engine
    await prepare(engine, 300 * COST)
    url = _url(engine)
    outcomes = await asyncio.to_thread(run_processes, url, "racer", "api_call", None)
    assert outcomes == Counter({"ok": 300, "balance_insufficient": 700})
    assert (await engine.agent_state("racer")).balance_micros == 0
    charges = [e for e in await events(engine, "racer") if e["kind"] == "charge"]
    assert len(charges) == 300 and len({e["id"] for e in charges}) == 300


async def test_daily_cap_edge(real_engine: Engine) -> None:
    engine = real_engine
    await prepare(engine, 1000 * T)
    await engine.set_limits("racer", {"daily": 300 * COST})
    outcomes = await asyncio.to_thread(run_processes, _url(engine), "racer", "api_call", None)
    assert outcomes == Counter({"ok": 300, "daily": 700})
    state = await engine.agent_state("racer")
    assert state.spent_today_micros == 300 * COST
    assert state.balance_micros == 1000 * T - 300 * COST


async def test_category_daily_cap_edge(real_engine: Engine) -> None:
    engine = real_engine
    await prepare(engine, 1000 * T)
    await engine.set_limits("racer", {"categories.llm.daily": 300 * COST})
    outcomes = await asyncio.to_thread(run_processes, _url(engine), "racer", "llm_summarize",
                                       COST)
    assert outcomes == Counter({"ok": 300, "category_daily": 700})
    assert (await engine.agent_state("racer")).spent_today_by_category == {"llm": 300 * COST}


async def test_one_idempotency_key_100_parallel(engine: Engine) -> None:
    await prepare(engine, T)
    results = await asyncio.gather(*(engine.charge("racer", "api_call", idempotency_key="once")
                                     for _ in range(100)))
    assert sum(not r.replayed for r in results) == 1
    assert sum(r.replayed for r in results) == 99
    assert len({r.charge_id for r in results}) == 1
    assert len({r.balance_micros for r in results}) == 1
    assert (await engine.agent_state("racer")).balance_micros == T - COST
    with pytest.raises(errors.IdempotencyConflict):
        await engine.charge("racer", "web_search", idempotency_key="once")


def _url(engine: Engine) -> str:
    return engine.conn.url
