"""Bad numbers passed straight to the scripts (bypassing Python) are refused, nothing changes."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.metering import ids
from gateway.metering.engine import Engine
from gateway.store.codes import Code
from tests.helpers import T, setup_catalog, snapshot

BAD_NUMBERS = ["nan", "NaN", "inf", "-inf", "1e3", "0x10", "1.5", "0.1", "-5", " 5 ", "5 ",
               "9007199254740992", "99999999999999999999", "", "+5", "1_000", "abc"]


async def ready(engine: Engine) -> str:
    await setup_catalog(engine)
    await engine.create_agent("raw", grant_micros=T)
    await engine.hold("raw", "llm_summarize", 100_000)
    return "raw"


def charge_args(engine: Engine, cost: str) -> tuple[list[str], list[str]]:
    k = engine.agent_keys("raw")
    return ([k.agent_hash, k.window, k.idempotency("x"), k.events, k.webhooks, k.tools],
            ["raw", ids.uuid7(), "llm_summarize", cost, str(engine.settings.amount_max_micros),
             "", "", ""])


async def run(engine: Engine, name: str, keys: list[str], args: list[str]) -> list[Any]:
    return await engine.scripts.run(name, keys, args)


@pytest.mark.parametrize("bad", BAD_NUMBERS)
async def test_charge_refuses_bad_cost(engine: Engine, bad: str) -> None:
    await ready(engine)
    before = await snapshot(engine)
    reply = await run(engine, "charge", *charge_args(engine, bad))
    # '' is "no cost given", which a tool priced variable refuses.
    assert reply[:2] == ([Code.COST_REQUIRED] if bad == "" else [Code.BAD_ARGUMENT, 4])
    assert await snapshot(engine) == before


@pytest.mark.parametrize("bad", ["nan", "inf", "1e3", "0x10", "0.5", "-1", "0",
                                 "9007199254740992"])
async def test_fund_hold_capture_refuse_bad_amounts(engine: Engine, bad: str) -> None:
    await ready(engine)
    k = engine.agent_keys("raw")
    amax = str(engine.settings.amount_max_micros)
    before = await snapshot(engine)
    fund = await run(engine, "fund", [k.agent_hash, k.idempotency("x"), k.events],
                     ["raw", ids.uuid7(), bad, amax, str(2**53 - 1), "fund", "", "", ""])
    assert fund[:2] == [Code.BAD_ARGUMENT, 3]
    hold_id = ids.hold_id()
    hold_keys = [k.agent_hash, k.window, k.hold(hold_id), k.holds, k.idempotency("x"),
                 k.events, k.webhooks, k.tools]
    hold = await run(engine, "hold", hold_keys,
                     ["raw", ids.uuid7(), hold_id, "llm_summarize", bad, amax, "1000",
                      "3600000", "", "", ""])
    assert hold[:2] == [Code.BAD_ARGUMENT, 5]
    ttl = await run(engine, "hold", hold_keys,
                    ["raw", ids.uuid7(), hold_id, "llm_summarize", "1000", amax, bad,
                     "3600000", "", "", ""])
    assert ttl[:2] == [Code.BAD_ARGUMENT, 7]
    limits = await run(engine, "set_limits", [k.agent_hash, k.events],
                       ["raw", ids.uuid7(), amax, "{}", "dl", bad])
    assert limits[:2] == [Code.BAD_ARGUMENT, 5]
    if bad != "0":
        cap = await run(engine, "capture", [k.agent_hash, k.window, k.hold(hold_id), k.holds,
                                            k.idempotency("x"), k.events, k.tools],
                        ["raw", ids.uuid7(), hold_id, bad, amax, "", "", ""])
        assert cap[:2] == [Code.BAD_ARGUMENT, 4]
    assert await snapshot(engine) == before


async def test_amount_above_max_refused_by_script(engine: Engine) -> None:
    await ready(engine)
    before = await snapshot(engine)
    keys, args = charge_args(engine, str(engine.settings.amount_max_micros + 1))
    assert (await run(engine, "charge", keys, args))[:2] == [Code.BAD_ARGUMENT, 4]
    assert await snapshot(engine) == before
