"""The core on a real 3-master Redis Cluster: races, holds, idempotency, ledger drain,
and a resharding step under load that no caller notices."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.crc import key_slot

from gateway import errors, keys
from gateway.config import load_settings
from gateway.connections import open_connection
from gateway.engine import Engine
from gateway.ledger.reconcile import reconcile
from gateway.ledger.store import LedgerStore
from tests.cluster import Cluster, redis_cluster, run
from tests.helpers import T, setup_catalog
from tests.ledger_helpers import writer_for

# The same tests as on one server, collected again here with the cluster engine below.
from tests.test_concurrency import (  # noqa: F401
    test_balance_covers_exactly_300,
    test_category_daily_cap_edge,
    test_daily_cap_edge,
    test_one_idempotency_key_100_parallel,
)
from tests.test_fixed_prices import (  # noqa: F401
    test_capture_of_a_fixed_hold_charges_exactly_the_price,
    test_capture_replay_answers_the_cost,
    test_hold_below_the_price_is_refused,
)
from tests.test_holds import (  # noqa: F401
    test_capture_exactly_the_hold_and_above,
    test_expired_but_unswept_hold_cannot_be_captured,
    test_hold_capture_returns_the_rest,
    test_hold_of_another_agent_is_not_found,
    test_hold_refusals,
    test_second_capture_and_capture_after_release_refused,
)
from tests.test_ledger import (  # noqa: F401
    store,
    test_every_event_once_and_reconcile_clean,
    test_poisoned_entry_goes_to_dead_letters,
)
from tests.test_scripts import (  # noqa: F401
    test_daily_cap_exact_and_over,
    test_fund_and_overflow,
    test_idempotency_keys_scoped_per_agent,
    test_idempotent_replay_and_conflict,
    test_keys_add_authenticate_revoke,
    test_low_balance_crossing_reported_once,
    test_one_micro_short,
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with redis_cluster() as c:
        yield c


async def cluster_engine(cluster: Cluster) -> Engine:
    for port in cluster.ports:
        client = cluster.client(port)
        client.flushall()
        client.close()
    engine = Engine(open_connection(cluster.url), load_settings({"IOU_REDIS_URL": cluster.url}))
    await engine.start(background=False)
    return engine


@pytest.fixture
async def engine(cluster: Cluster) -> AsyncIterator[Engine]:
    eng = await cluster_engine(cluster)
    yield eng
    eng.conn.close()


@pytest.fixture
async def real_engine(cluster: Cluster) -> AsyncIterator[Engine]:
    eng = await cluster_engine(cluster)
    yield eng
    eng.conn.close()


@pytest.fixture(params=["sqlite"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    return f"sqlite:///{tmp_path}/ledger.db"


def agents_in_partition(partition: int, count: int, partitions: int) -> list[str]:
    names: list[str] = []
    i = 0
    while len(names) < count:
        name = f"shard-{i}"
        if keys.partition_of(name, partitions) == partition:
            names.append(name)
        i += 1
    return names


def node_id(cluster: Cluster, port: int) -> str:
    reply = run(cluster, port, "CLUSTER", "MYID")
    assert isinstance(reply, bytes)
    return reply.decode()


def keys_in_slot(cluster: Cluster, port: int, slot: int) -> int:
    count = run(cluster, port, "CLUSTER", "COUNTKEYSINSLOT", slot)
    assert isinstance(count, int)
    return count


def migrate_slot(cluster: Cluster, slot: int) -> tuple[int, int]:
    """Move one slot to another master, the way redis-cli --cluster reshard does."""
    owner = next(p for p in cluster.ports if keys_in_slot(cluster, p, slot) > 0)
    target = next(p for p in cluster.ports if p != owner)
    run(cluster, target, "CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(cluster, owner))
    run(cluster, owner, "CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(cluster, target))
    while moving := run(cluster, owner, "CLUSTER", "GETKEYSINSLOT", slot, 10):
        assert isinstance(moving, list)
        run(cluster, owner, "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *moving)
    for port in cluster.ports:
        run(cluster, port, "CLUSTER", "SETSLOT", slot, "NODE", node_id(cluster, target))
    return owner, target


async def test_price_change_reaches_every_partition_at_once(cluster: Cluster) -> None:
    """Agents on every master pay the new price from their own partition's copy, through a
    second engine whose in-memory catalog never reloaded."""
    admin = await cluster_engine(cluster)
    worker = Engine(open_connection(cluster.url), load_settings({"IOU_REDIS_URL": cluster.url}))
    await worker.start(background=False)
    try:
        await setup_catalog(admin)
        names = [agents_in_partition(p, 1, admin.partitions)[0]
                 for p in range(admin.partitions)]
        for name in names:
            await admin.create_agent(name, grant_micros=10 * T)
        for price, category in ((70_000, "llm"), (30_000, "tool")):
            await admin.set_tool("web_search", price, category)
            for name in names:
                charged = await worker.charge(name, "web_search")
                assert (charged.cost_micros, charged.category) == (price, category)
        await admin.delete_tool("web_search")
        with pytest.raises(errors.NotFound):
            await worker.charge(names[-1], "web_search")
    finally:
        admin.conn.close()
        worker.conn.close()


async def test_resharding_under_load_reaches_no_caller(
        cluster: Cluster, store: LedgerStore) -> None:  # noqa: F811 (the imported fixture)
    engine = await cluster_engine(cluster)
    await setup_catalog(engine)
    names = agents_in_partition(3, 10, engine.partitions)
    await asyncio.gather(*(engine.create_agent(n, grant_micros=T) for n in names))
    slot = key_slot(keys.tag(3).encode() + b"x")
    outcomes: list[str] = []

    async def load() -> None:
        for _ in range(40):  # 40 waves x 10 agents x 0.05 = 2 tokens of demand per agent
            results = await asyncio.gather(*(engine.charge(n, "web_search") for n in names),
                                           return_exceptions=True)
            for r in results:
                if isinstance(r, errors.BalanceInsufficient):
                    outcomes.append("insufficient")
                elif isinstance(r, Exception):
                    outcomes.append(f"error: {r!r}")
                else:
                    outcomes.append("ok")
            await asyncio.sleep(0.01)

    running = asyncio.create_task(load())
    await asyncio.sleep(0.1)
    owner, target = await asyncio.to_thread(migrate_slot, cluster, slot)
    await running
    assert owner != target
    assert keys_in_slot(cluster, target, slot) > 0 and keys_in_slot(cluster, owner, slot) == 0
    assert engine.conn.redirects > 0  # type: ignore[attr-defined]  # the load saw it move
    assert [o for o in outcomes if o.startswith("error")] == []
    assert outcomes.count("ok") == 10 * 20  # exactly 1 token each, 0.05 a call
    for name in names:
        assert (await engine.agent_state(name)).balance_micros == 0
    assert await reconcile(engine, store, writer_for(engine, store)) == []
    engine.conn.close()


def test_gateway_and_writer_on_the_cluster(cluster: Cluster) -> None:
    import time

    from tests.gateway_proc import running_gateway
    from tests.http_helpers import new_agent, seed_tools

    for port in cluster.ports:
        cluster.client(port).flushall()
    with running_gateway(cluster.url) as gw:
        seed_tools(gw)
        name, key = new_agent(gw, "1")
        with gw.agent(key) as agent:
            for _ in range(3):
                assert agent.post("/v1/charge", json={"tool": "web_search"}).status_code == 200
        with gw.admin() as admin:
            deadline = time.monotonic() + 10
            while len(admin.get(f"/v1/agents/{name}/ledger").json()["entries"]) < 4:
                assert time.monotonic() < deadline, "the writer did not commit on the cluster"
                time.sleep(0.1)
            assert admin.get(f"/v1/agents/{name}").json()["balance"] == "0.85"
            assert admin.get("/readyz").json()["ready"] is True
