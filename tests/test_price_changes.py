"""A price or category change applies to every call answered after the PUT returned, on
every worker: the scripts read each partition's copy of the catalog, never a worker's cache."""

from __future__ import annotations

import http.server
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import load_settings
from gateway.ledger.recover import recover
from gateway.metering import errors
from gateway.metering.engine import Engine
from gateway.store import keys
from gateway.store.resp import RedisConnection, parse_redis_url
from tests.conftest import PARTITIONS, make_engine
from tests.gateway_proc import Gateway, running_gateway
from tests.helpers import T, setup_catalog
from tests.http_helpers import new_agent, seed_tools
from tests.ledger_helpers import store_for, writer_for
from tests.servers import redis_server


async def started_engine(url: str) -> Engine:
    """An engine on the store as it is (make_engine flushes it first)."""
    settings = load_settings({"IOU_REDIS_URL": url, "IOU_PARTITIONS": str(PARTITIONS)})
    engine = Engine(RedisConnection(parse_redis_url(url)), settings)
    await engine.start(background=False)
    return engine


@pytest.fixture
async def two(real_redis_url: str) -> AsyncIterator[tuple[Engine, Engine]]:
    """Two engines on one Redis, like two workers; neither refreshes in the background."""
    first = await make_engine(real_redis_url)
    second = await started_engine(real_redis_url)
    yield first, second
    for eng in (first, second):
        await eng.stop()
        eng.conn.close()


async def test_other_worker_charges_the_new_price_and_category(
        two: tuple[Engine, Engine]) -> None:
    admin, worker = two
    await setup_catalog(admin)
    await worker.refresh_catalog()
    await admin.create_agent("p", grant_micros=10 * T)
    await admin.set_limits("p", {"categories.llm.per_call": 60_000})
    for price in (60_000, 70_000, 10_000):
        await admin.set_tool("web_search", price, "tool")
        charged = await worker.charge("p", "web_search")
        assert (charged.cost_micros, charged.category) == (price, "tool")
    await admin.set_tool("web_search", 70_000, "llm")  # now under the llm per-call cap
    with pytest.raises(errors.PerCallLimitExceeded) as info:
        await worker.charge("p", "web_search")
    assert info.value.details["category"] == "llm"
    await admin.set_tool("web_search", 50_000, "llm")
    assert (await worker.charge("p", "web_search")).category == "llm"
    assert (await worker.agent_state("p")).spent_today_by_category == {
        "tool": 140_000, "llm": 50_000}


async def test_other_worker_sees_pricing_changes_and_deletions(
        two: tuple[Engine, Engine]) -> None:
    admin, worker = two
    await setup_catalog(admin)
    await worker.refresh_catalog()
    await admin.create_agent("q", grant_micros=10 * T)
    await admin.set_tool("web_search", 50_000, "tool", pricing="variable")
    with pytest.raises(errors.InvalidRequest, match="cost"):
        await worker.charge("q", "web_search")
    assert (await worker.charge("q", "web_search", 7)).cost_micros == 7
    await admin.set_tool("web_search", 50_000, "tool")
    with pytest.raises(errors.InvalidRequest, match="cost"):
        await worker.charge("q", "web_search", 7)
    hold = await worker.hold("q", "web_search", T)
    assert hold.amount_micros == 50_000 and hold.fixed
    await admin.delete_tool("web_search")
    with pytest.raises(errors.NotFound, match="tool"):
        await worker.charge("q", "web_search")
    with pytest.raises(errors.NotFound, match="tool"):
        await worker.hold("q", "web_search")
    await admin.set_tool("brand_new", 30_000, "commerce")
    assert (await worker.charge("q", "brand_new")).cost_micros == 30_000


async def test_every_partition_holds_the_copy(two: tuple[Engine, Engine]) -> None:
    admin, _ = two
    await admin.set_tool("spread", 1_234, "tool")
    for p in range(admin.partitions):
        row = await admin.conn.call_or_raise(b"HGET", keys.tools_copy(p), b"spread")
        assert row is not None and row.decode().split()[1:] == ["1234", "tool", "fixed"]
    await admin.delete_tool("spread")
    for p in range(admin.partitions):
        row = await admin.conn.call_or_raise(b"HGET", keys.tools_copy(p), b"spread")
        assert row is not None and len(row.decode().split()) == 1  # a tombstone


async def test_start_fills_copies_missing_for_an_older_catalog(real_redis_url: str) -> None:
    eng = await make_engine(real_redis_url)
    try:
        await setup_catalog(eng)
        await eng.create_agent("old", grant_micros=T)
        for p in range(eng.partitions):  # a store written before the copies existed
            await eng.conn.call_or_raise(b"DEL", keys.tools_copy(p))
        later = await started_engine(real_redis_url)
        try:
            assert (await later.charge("old", "web_search")).cost_micros == 50_000
        finally:
            await later.stop()
            later.conn.close()
    finally:
        await eng.stop()
        eng.conn.close()


async def test_recover_rewrites_the_copies_from_the_ledger(real_engine: Engine,
                                                          tmp_path: Path) -> None:
    """iou recover --force over a store whose copies hold a newer, wrong price."""
    engine = real_engine
    store = store_for(f"sqlite:///{tmp_path / 'ledger.db'}")
    await store.migrate()
    try:
        await setup_catalog(engine)
        await engine.create_agent("r", grant_micros=T)
        await writer_for(engine, store).drain()
        for p in range(engine.partitions):
            await engine.conn.call_or_raise(b"HSET", keys.tools_copy(p), b"web_search",
                                            b"9999999999999999 1 tool fixed")
        await recover(engine, store, force=True)
        assert (await engine.charge("r", "web_search")).cost_micros == 50_000
    finally:
        await store.close()


class _Upstream(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def ok_upstream() -> Iterator[str]:
    """An upstream on loopback that answers every POST 200 {}."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def upstream() -> Iterator[str]:
    with ok_upstream() as url:
        yield url


def _post(gw: Gateway, key: str, path: str) -> httpx.Response:
    """One request on a connection of its own: each lands on either worker, and no idle
    keep-alive connection can be closed under it by a loaded machine."""
    return httpx.post(gw.url + path, json={}, timeout=30,
                      headers={"authorization": f"Bearer {key}"})


def _charge(gw: Gateway, key: str, tool: str) -> httpx.Response:
    return httpx.post(gw.url + "/v1/charge", json={"tool": tool}, timeout=30,
                      headers={"authorization": f"Bearer {key}"})


def test_two_workers_never_answer_a_stale_price(upstream: str) -> None:
    """After each PUT returns, the next charges and invokes (spread over both workers)
    cost the new price, the charges in the new category."""
    with redis_server() as (url, _), running_gateway(url, workers=2) as gw:
        seed_tools(gw)
        agents = [new_agent(gw, "1000")[1] for _ in range(6)]
        stale = []
        with gw.admin() as admin:
            for i in range(20):
                price, category = Decimal(f"0.{i + 11}"), ("llm", "tool")[i % 2]
                put = admin.put("/v1/tools/moving", json={
                    "price": str(price), "category": category, "upstream": upstream})
                assert put.status_code == 200
                for key in agents:
                    body = _charge(gw, key, "moving").json()
                    if (Decimal(body["cost"]), body["category"]) != (price, category):
                        stale.append(("charge", price, category, body))
                    invoked = _post(gw, key, "/v1/tools/moving/invoke")
                    paid = Decimal(body["balance"]) - Decimal(invoked.headers["x-iou-balance"])
                    if paid != price:
                        stale.append(("invoke", price, category, paid))
        assert stale == []


def test_two_workers_unknown_tool_right_after_delete() -> None:
    with redis_server() as (url, _), running_gateway(url, workers=2) as gw:
        seed_tools(gw)
        agents = [new_agent(gw, "10")[1] for _ in range(4)]
        with gw.admin() as admin:
            assert admin.put("/v1/tools/brief", json={"price": "0.5",
                                                      "category": "tool"}).status_code == 200
            assert [_charge(gw, k, "brief").status_code for k in agents] == [200] * 4
            assert admin.delete("/v1/tools/brief").status_code == 204
        after = [_charge(gw, k, "brief").status_code for k in agents * 5]
        assert after == [404] * 20
