"""``metered`` with a variable price: once the tool has run it is paid. A cost function that
answers more than the hold (or something that is no amount, or raises) made the capture fail
and the hold be released: the tool had run for free. Now the whole hold is captured, as
invoke does when an upstream reports more than it held or nonsense; a cost function that
raises still raises (after the capture)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from gateway.sdk import AsyncClient, Client
from tests.gateway_proc import Gateway
from tests.http_helpers import balance, new_agent

MAX = "0.1"


def _broken(result: Any) -> Any:
    raise ValueError("price lookup failed")


COSTS: list[tuple[Any, str]] = [
    (lambda result: "5", "9.9"),                   # above the hold: the hold is captured
    (lambda result: "0.0000001", "9.9"),           # no amount (7 decimals)
    (lambda result: "-1", "9.9"),                  # no amount (negative)
    (lambda result: "0.04", "9.96"),               # a fair cost is captured as is
]


@pytest.mark.parametrize(("cost", "left"), COSTS)
def test_a_metered_tool_that_ran_is_paid(gateway: Gateway, cost: Any, left: str) -> None:
    _, key = new_agent(gateway, grant="10")
    runs: list[str] = []
    with Client(gateway.url, key, max_retries=0) as client:
        @client.metered("llm_summarize", max=MAX, cost=cost)
        def summarize(text: str) -> str:
            runs.append(text)
            return text.upper()

        assert summarize("page") == "PAGE"
    assert runs == ["page"]
    assert balance(gateway, key) == left


def test_a_fixed_price_tool_with_a_cost_function_pays_its_price(gateway: Gateway) -> None:
    _, key = new_agent(gateway, grant="10")
    with Client(gateway.url, key, max_retries=0) as client:
        @client.metered("web_search", cost=lambda result: "0.01")
        def search(query: str) -> str:
            return query

        assert search("q") == "q"
    assert balance(gateway, key) == "9.95"  # its catalog price, not what the function said


def test_a_cost_function_that_raises_still_pays_the_hold(gateway: Gateway) -> None:
    _, key = new_agent(gateway, grant="10")
    with Client(gateway.url, key, max_retries=0) as client:
        @client.metered("llm_summarize", max=MAX, cost=_broken)
        def summarize(text: str) -> str:
            return text

        with pytest.raises(ValueError, match="price lookup failed"):
            summarize("page")
    assert balance(gateway, key) == "9.9"


def test_async_metered_tools_are_paid_too(gateway: Gateway) -> None:
    _, key = new_agent(gateway, grant="10")

    async def run() -> None:
        async with AsyncClient(gateway.url, key, max_retries=0) as client:
            @client.metered("llm_summarize", max=MAX, cost=lambda result: Decimal("7"))
            async def summarize(text: str) -> str:
                return text

            assert await summarize("page") == "page"

        with Client(gateway.url, key, max_retries=0) as sync_client:
            @sync_client.metered("llm_summarize", max=MAX, cost=lambda result: "7")
            async def summarize_too(text: str) -> str:
                return text

            assert await summarize_too("page") == "page"

    asyncio.run(run())
    assert balance(gateway, key) == "9.8"
