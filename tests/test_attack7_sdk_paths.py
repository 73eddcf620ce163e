"""The SDK quotes every path segment it builds from a caller's value (agent names, tool names,
hold, task and charge ids): an agent may be named `.` or `..` (the contract's alphabet allows
dots), which unquoted are dot segments that the URL collapses onto another route, and a
mistyped id holding `/`, `?` or `#` must reach the route it names (and its 404 or 422), never
another route."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from gateway.sdk import AsyncClient, Client, InvalidRequest, NotFound
from tests.gateway_proc import ADMIN_TOKEN, Gateway
from tests.http_helpers import unique

DOT_NAMES = [".", ".."]


@pytest.fixture(scope="module")
def admin(gateway: Gateway) -> Iterator[Client]:
    with Client(gateway.url, ADMIN_TOKEN) as client:
        yield client


def _create(admin: Client, name: str) -> str:
    """The agent ``name`` (created once per gateway) and a key of it."""
    created = admin.request("POST", "/v1/agents", {"name": name, "grant": "5"})
    return str(created["api_key"])


@pytest.fixture(scope="module")
def dot_keys(admin: Client) -> dict[str, str]:
    return {name: _create(admin, name) for name in DOT_NAMES}


@pytest.mark.parametrize("name", DOT_NAMES)
def test_agents_named_with_dots_are_reached(admin: Client, dot_keys: dict[str, str],
                                            name: str) -> None:
    limits = admin.limits(name, {"daily": "3"})
    assert limits["daily"] == "3"
    assert admin.limits(name)["daily"] == "3"
    assert admin.shadow(name)["agent"] == name
    debit = admin.debit(name, "1", reason="test")
    assert str(debit.balance) == "4"
    deadline = time.monotonic() + 30  # the ledger writer lags the calls a little
    while {e.kind for e in admin.ledger(name)} < {"grant", "debit"}:
        assert time.monotonic() < deadline, "the grant and the debit reach the ledger"
        time.sleep(0.1)
    assert admin.tasks.list(name) == []
    try:
        child = admin.create_child(name, unique("kid"), "1")
    except InvalidRequest as exc:  # a child lives in its parent's partition: take the name
        child = admin.create_child(name, exc.message.split("'")[1], "1")  # it suggests
    back = admin.reclaim(child.agent)
    assert str(back.amount) == "1"


async def test_the_async_client_quotes_too(gateway: Gateway, dot_keys: dict[str, str]) -> None:
    async with AsyncClient(gateway.url, ADMIN_TOKEN) as admin:
        assert (await admin.shadow(".."))["agent"] == ".."
        assert (await admin.limits("."))["per_call"] is None


@pytest.mark.parametrize("bad", ["hold_x/../../v1/balance", "hold_x?q=1", "hold_x#frag"])
def test_a_mangled_id_reaches_its_own_route(gateway: Gateway, admin: Client, bad: str) -> None:
    key = _create(admin, unique("mangled"))
    with Client(gateway.url, key, max_retries=0) as iou:
        with pytest.raises((NotFound, InvalidRequest)):
            iou.release(bad)
        with pytest.raises((NotFound, InvalidRequest)):
            iou.tasks.get(bad.replace("hold_", "task_"))
        with pytest.raises((NotFound, InvalidRequest)):
            iou.invoke("web_search#x", {})
        assert str(iou.status().balance) == "5"


def test_a_tool_name_with_a_query_mark_is_not_a_query(gateway: Gateway) -> None:
    asyncio.run(_no_query(gateway))


async def _no_query(gateway: Gateway) -> None:
    async with AsyncClient(gateway.url, ADMIN_TOKEN) as admin:
        with pytest.raises((NotFound, InvalidRequest)):
            await admin.refund("ch?x=1")


@pytest.mark.parametrize("name", DOT_NAMES)
def test_the_cli_reaches_agents_named_with_dots(gateway: Gateway, admin: Client,
                                               dot_keys: dict[str, str], name: str) -> None:
    before = Decimal(admin.request("GET", f"/v1/agents/{name.replace('.', '%2E')}")["balance"])
    environ = {**os.environ, "IOU_URL": gateway.url}
    for args in (["fund", "--agent", name, "--amount", "2"],
                 ["limits", "--agent", name, "--per-call", "0.5"], ["status", "--agent", name],
                 ["ledger", "--agent", name], ["freeze", "--agent", name],
                 ["unfreeze", "--agent", name]):
        done = subprocess.run([sys.executable, "-m", "gateway.cli.main", "--token",
                               ADMIN_TOKEN, *args], env=environ, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    after = admin.request("GET", f"/v1/agents/{name.replace('.', '%2E')}")
    assert Decimal(after["balance"]) == before + 2
    assert after["limits"]["per_call"] == "0.5" and after["frozen"] is False
