from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from gateway.config import load_settings
from gateway.ledger.store import LedgerStore
from gateway.metering.engine import Engine
from gateway.store.resp import RedisConnection, parse_redis_url
from tests.gateway_proc import Gateway, running_gateway
from tests.helpers import setup_catalog
from tests.http_helpers import seed_tools
from tests.ledger_helpers import store_for
from tests.pg import Postgres, postgres_server, reset_database
from tests.script_helpers import Lua
from tests.servers import fake_server, redis_server

PARTITIONS = 16


@pytest.fixture(scope="session")
def real_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def real_redis_url(real_redis: tuple[str, subprocess.Popen[bytes]]) -> str:
    return real_redis[0]


@pytest.fixture(scope="session")
def fake_redis_url() -> Iterator[str]:
    with fake_server() as url:
        yield url


@pytest.fixture(params=["redis", "fakeredis"])
def backend_url(request: pytest.FixtureRequest) -> str:
    """Both backends: the script tests must pass on fakeredis too (the fallback's parity)."""
    name = "real_redis_url" if request.param == "redis" else "fake_redis_url"
    url: str = request.getfixturevalue(name)
    return url


def flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()


async def make_engine(url: str, **env: str) -> Engine:
    flush(url)
    settings = load_settings({"IOU_REDIS_URL": url, "IOU_PARTITIONS": str(PARTITIONS), **env})
    engine = Engine(RedisConnection(parse_redis_url(url)), settings)
    await engine.start(background=False)
    return engine


@pytest.fixture
async def engine(backend_url: str) -> AsyncIterator[Engine]:
    eng = await make_engine(backend_url)
    yield eng
    await eng.stop()
    eng.conn.close()


@pytest.fixture
async def real_engine(real_redis_url: str) -> AsyncIterator[Engine]:
    eng = await make_engine(real_redis_url)
    yield eng
    await eng.stop()
    eng.conn.close()


@pytest.fixture
def lua(real_redis_url: str) -> Iterator[Lua]:
    """The production scripts, called straight on the session's Redis (emptied first)."""
    client = redis.Redis.from_url(real_redis_url, decode_responses=True)
    client.flushall()
    lua = Lua(client)
    lua.seed_tools()
    yield lua
    client.close()


@pytest.fixture
def clocked_lua(real_redis_url: str) -> Iterator[Lua]:
    """Like ``lua``, with the test clock (IOU_TEST_CLOCK's offset key) in the scripts."""
    client = redis.Redis.from_url(real_redis_url, decode_responses=True)
    client.flushall()
    lua = Lua(client, clock=True)
    lua.seed_tools()
    yield lua
    client.close()


@pytest.fixture
async def clocked(real_redis_url: str) -> AsyncIterator[Engine]:
    """An engine whose scripts read the test clock (IOU_TEST_CLOCK), with the seed catalog."""
    eng = await make_engine(real_redis_url, IOU_TEST_CLOCK="1")
    await setup_catalog(eng)
    yield eng
    await eng.stop()
    eng.conn.close()


@pytest.fixture
def redis_client(real_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(real_redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def gateway_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Redis of its own for each HTTP test module, so snapshots see only that module."""
    with redis_server() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(gateway_redis: tuple[str, subprocess.Popen[bytes]]) -> Iterator[Gateway]:
    with running_gateway(gateway_redis[0], IOU_UPSTREAM_TIMEOUT_S="2") as gw:
        seed_tools(gw)
        yield gw


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


@pytest.fixture
async def store(ledger_url: str) -> AsyncIterator[LedgerStore]:
    """A migrated ledger store on each of ledger_url's databases, closed afterwards."""
    s = store_for(ledger_url)
    await s.migrate()
    yield s
    await s.close()


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Both ledger stores: a fresh SQLite file, or a freshly emptied PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    server: Postgres = request.getfixturevalue("pg_server")
    reset_database(server.dsn)
    return server.dsn
