"""Metadata that Redis accepts is storable in both ledgers, or refused before it is charged.

Each accepted edge case goes through the real ledger writer into SQLite and PostgreSQL
(JSONB) with no dead letter and its metadata intact; each refused one is a 422
``invalid_request`` naming the field, with nothing written anywhere.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.gateway_proc import Gateway, running_gateway
from tests.http_helpers import new_agent, seed_tools
from tests.ledger_helpers import store_for
from tests.pg import Postgres, reset_database
from tests.raw_http import redis_snapshot
from tests.servers import redis_server

J = {"content-type": "application/json"}
DEEP = 20_000

# Metadata texts (as sent on the wire) that both ledgers store as they are.
ACCEPTED: list[tuple[str, str]] = [
    ("control char other than NUL", '{"note": "a\\u0001b"}'),
    ("escaped surrogate pair", '{"emoji": "\\ud83d\\ude00"}'),
    ("raw emoji", '{"emoji": "😀"}'),
    ("unicode key", '{"ключ": "значение"}'),
    ("empty key", '{"": "empty key"}'),
    ("line separator", '{"ls": "\\u2028"}'),
    ("int64 max", '{"n": 9223372036854775807}'),
    ("int64 min", '{"n": -9223372036854775808}'),
    ("large finite float", '{"x": 1.5e300}'),
    ("small finite float", '{"x": 1e-300}'),
    ("negative zero", '{"x": -0.0}'),
    ("nulls, booleans, arrays", '{"a": [null, true, false, [1, 2.5, "s"]], "b": {}}'),
    ("nested 28 deep (31 in a batch body)", '{"m": ' + '{"a": ' * 27 + "1" + "}" * 27 + "}"),
]

# (name, metadata text, reason fragment): refused with 422 before anything is charged.
REFUSED: list[tuple[str, str, str]] = [
    ("NUL in a value", '{"note": "a\\u0000b"}', "NUL"),
    ("NUL in a key", '{"a\\u0000b": "x"}', "NUL"),
    ("NUL in a nested list", '{"l": ["ok", "\\u0000"]}', "NUL"),
    ("lone high surrogate", '{"s": "\\ud800"}', "surrogate"),
    ("lone low surrogate", '{"s": "x\\udc00"}', "surrogate"),
    ("reversed surrogate pair", '{"s": "\\ude00\\ud83d"}', "surrogate"),
    ("surrogate in a key", '{"\\ud800": 1}', "surrogate"),
    ("integer above 64 bits", '{"n": 18446744073709551616}', "64-bit"),
    ("integer just above int64", '{"n": 9223372036854775808}', "64-bit"),
    ("integer just below int64", '{"n": -9223372036854775809}', "64-bit"),
    ("integer with 5000 digits", '{"n": ' + "9" * 5000 + "}", "digits"),
    ("float overflowing a double", '{"x": 1e400}', "finite"),
    ("float underflowing a double", '{"x": 1e-400}', "finite"),
    ("float with 400 digits", '{"x": 0.' + "1" * 400 + "}", "digits"),
    ("nested 40 deep", '{"m": ' + '{"a": ' * 39 + "1" + "}" * 39 + "}", "deep"),
    ("nested 20,000 deep", '{"m": ' + "[" * DEEP + "]" * DEEP + "}", "deep"),
]


def _settle(client: redis.Redis) -> None:
    deadline = time.monotonic() + 15
    while any(client.xlen(k) for k in client.keys("*:events")):
        assert time.monotonic() < deadline, "the ledger writer did not drain the streams"
        time.sleep(0.05)


def _snapshot(client: redis.Redis) -> dict[Any, Any]:
    _settle(client)
    return redis_snapshot(client)


async def _ledger(ledger_url: str, agent: str) -> tuple[list[Any], int]:
    store = store_for(ledger_url)
    try:
        return list(await store.entries(agent, 1000)), await store.count("dead_letters")
    finally:
        await store.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Gateway, redis.Redis, str]]:
    """A gateway whose writer streams into this ledger (SQLite file or PostgreSQL)."""
    if request.param == "sqlite":
        ledger_url = f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'ledger.db'}"
    else:
        server: Postgres = request.getfixturevalue("pg_server")
        reset_database(server.dsn)
        ledger_url = server.dsn
    with redis_server() as (redis_url, _), \
            running_gateway(redis_url, IOU_LEDGER_URL=ledger_url) as gw:
        seed_tools(gw)
        with gw.admin() as admin:
            hold_tool = {"price": "0.5", "category": "llm", "pricing": "variable"}
            assert admin.put("/v1/tools/meta_var", json=hold_tool).status_code == 200
        client = redis.Redis.from_url(redis_url)
        try:
            yield gw, client, ledger_url
        finally:
            client.close()


def _post(gw: Gateway, token: str, path: str, body: str) -> httpx.Response:
    return httpx.post(gw.url + path, content=body.encode("utf-8", "surrogatepass"),
                      headers={**J, "authorization": f"Bearer {token}"}, timeout=30)


def _routes(agent: str, meta: str) -> list[tuple[str, str, str, str]]:
    """(label, who, path, body) for every route that takes metadata."""
    return [
        ("charge", "agent", "/v1/charge", '{"tool": "web_search", "metadata": ' + meta + "}"),
        ("batch", "agent", "/v1/charges",
         '{"charges": [{"tool": "web_search", "metadata": ' + meta + "}]}"),
        ("hold", "agent", "/v1/holds",
         '{"tool": "meta_var", "max_cost": "0.5", "metadata": ' + meta + "}"),
        ("fund", "admin", f"/v1/agents/{agent}/fund", '{"amount": "1", "metadata": ' + meta + "}"),
    ]


def _token(gw: Gateway, who: str, api_key: str) -> str:
    from tests.gateway_proc import ADMIN_TOKEN
    return ADMIN_TOKEN if who == "admin" else api_key


def test_accepted_edge_cases_reach_both_ledgers_intact(
        stack: tuple[Gateway, redis.Redis, str]) -> None:
    gw, client, ledger_url = stack
    agent, api_key = new_agent(gw, "100", "meta")
    sent: list[Any] = []
    for _, meta in ACCEPTED:
        for label, who, path, body in _routes(agent, meta):
            response = _post(gw, _token(gw, who, api_key), path, body)
            assert response.status_code in (200, 201), (label, meta, response.text)
            if label == "batch":
                assert "charge_id" in response.json()["results"][0], response.text
            sent.append(json.loads(meta))
            if label == "hold":  # a capture carries metadata too
                hold_id = response.json()["hold_id"]
                capture = _post(gw, api_key, f"/v1/holds/{hold_id}/capture",
                                '{"cost": "0.1", "metadata": ' + meta + "}")
                assert capture.status_code == 200, (meta, capture.text)
                sent.append(json.loads(meta))
    _settle(client)
    entries, dead = asyncio.run(_ledger(ledger_url, agent))
    assert dead == 0
    stored = [_numbers_as_floats(json.loads(e.metadata)) for e in entries if e.metadata]
    assert sorted(map(repr, stored)) == sorted(map(repr, map(_numbers_as_floats, sent)))


def _numbers_as_floats(value: Any) -> Any:
    """JSON compared by value: JSONB prints 1.5e300 as its 301 digits, which read back as
    an int equal to the same double."""
    if isinstance(value, dict):
        return {k: _numbers_as_floats(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_numbers_as_floats(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) + 0.0
    return value


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_unstorable_metadata_is_refused_before_anything_is_written(
        stack: tuple[Gateway, redis.Redis, str], case: tuple[str, str, str]) -> None:
    gw, client, ledger_url = stack
    _, meta, reason = case
    agent, api_key = new_agent(gw, "100", "meta")
    hold = _post(gw, api_key, "/v1/holds", '{"tool": "meta_var", "max_cost": "0.5"}')
    assert hold.status_code == 201, hold.text
    capture = ("capture", "agent", f"/v1/holds/{hold.json()['hold_id']}/capture",
               '{"cost": "0.1", "metadata": ' + meta + "}")
    before = _snapshot(client)
    entries_before = asyncio.run(_ledger(ledger_url, agent))
    for label, who, path, body in [*_routes(agent, meta), capture]:
        response = _post(gw, _token(gw, who, api_key), path, body)
        assert response.headers["content-type"] == "application/json", (label, response.text)
        payload = response.json()
        if label == "batch" and response.status_code == 200:
            payload = payload["results"][0]  # the batch refuses the item alone
            assert payload["field"] == "charges[0].metadata", payload
        else:
            assert response.status_code == 422, (label, response.text)
        assert payload["error"] == "invalid_request", (label, payload)
        assert "metadata" in payload["field"] or payload["field"] == "charges", (label, payload)
        assert reason in payload["reason"], (label, payload)
    assert _snapshot(client) == before
    assert asyncio.run(_ledger(ledger_url, agent)) == entries_before
