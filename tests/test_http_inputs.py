"""Bad input: each case gets its contract code, and Redis is byte-for-byte unchanged."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.gateway_proc import ADMIN_TOKEN, Gateway
from tests.http_helpers import new_agent

J = {"content-type": "application/json"}
BIG = 70_000  # above IOU_BODY_BYTES_MAX (65,536)

# (name, method, path, who, body bytes, extra headers, status, code, field)
CASES: list[tuple[str, str, str, str, bytes, dict[str, str], int, str, str | None]] = [
    ("negative", "POST", "fund", "admin", b'{"amount": "-1"}', J, 422, "invalid_request", "amount"),
    ("zero", "POST", "fund", "admin", b'{"amount": "0"}', J, 422, "invalid_request", "amount"),
    ("nan string", "POST", "fund", "admin", b'{"amount": "NaN"}', J, 422, "invalid_request",
     "amount"),
    ("infinity string", "POST", "fund", "admin", b'{"amount": "Infinity"}', J, 422,
     "invalid_request", "amount"),
    ("exponent string", "POST", "fund", "admin", b'{"amount": "1e3"}', J, 422,
     "invalid_request", "amount"),
    ("exponent number", "POST", "fund", "admin", b'{"amount": 1e3}', J, 422, "invalid_request",
     "amount"),
    ("seven decimals", "POST", "fund", "admin", b'{"amount": "0.0000001"}', J, 422,
     "invalid_request", "amount"),
    ("seven decimals number", "POST", "fund", "admin", b'{"amount": 0.0000001}', J, 422,
     "invalid_request", "amount"),
    ("thousands separator", "POST", "fund", "admin", b'{"amount": "1,000"}', J, 422,
     "invalid_request", "amount"),
    ("arabic digits", "POST", "fund", "admin", '{"amount": "١٢"}'.encode(), J, 422,
     "invalid_request", "amount"),
    ("fullwidth digits", "POST", "fund", "admin", '{"amount": "１"}'.encode(), J, 422,
     "invalid_request", "amount"),
    ("boolean", "POST", "fund", "admin", b'{"amount": true}', J, 422, "invalid_request", "amount"),
    ("above max", "POST", "fund", "admin", b'{"amount": "1000000001"}', J, 422,
     "invalid_request", "amount"),
    ("null amount", "POST", "fund", "admin", b'{"amount": null}', J, 422, "invalid_request",
     "amount"),
    ("empty amount", "POST", "fund", "admin", b'{"amount": ""}', J, 422, "invalid_request",
     "amount"),
    ("trailing space", "POST", "fund", "admin", b'{"amount": "5 "}', J, 422, "invalid_request",
     "amount"),
    ("missing amount", "POST", "fund", "admin", b"{}", J, 422, "invalid_request", "amount"),
    ("unknown fund field", "POST", "fund", "admin", b'{"amount": "1", "x": 1}', J, 422,
     "invalid_request", "x"),
    ("NaN literal", "POST", "fund", "admin", b'{"amount": NaN}', J, 400, "malformed_json", None),
    ("Infinity literal", "POST", "charge", "agent", b'{"tool": Infinity}', J, 400,
     "malformed_json", None),
    ("not json", "POST", "charge", "agent", b"{tool:", J, 400, "malformed_json", None),
    ("duplicate keys", "POST", "charge", "agent", b'{"tool": "calc", "tool": "web_search"}',
     J, 400, "malformed_json", None),
    # The same in orjson's compact form (the parser's fast path takes those first).
    ("duplicate keys, compact", "POST", "charge", "agent",
     b'{"tool":"calc","tool":"web_search"}', J, 400, "malformed_json", None),
    ("nested duplicate keys, compact", "POST", "charge", "agent",
     b'{"tool":"calc","metadata":{"a":"1","a":"2"}}', J, 400, "malformed_json", None),
    ("compact array body", "POST", "charge", "agent", b'[{"tool":"calc"}]', J, 400,
     "malformed_json", None),
    ("invalid utf-8, compact", "POST", "charge", "agent", b'{"tool":"\xff"}', J, 400,
     "malformed_json", None),
    ("array body", "POST", "charge", "agent", b'[{"tool": "calc"}]', J, 400, "malformed_json",
     None),
    ("string body", "POST", "charge", "agent", b'"calc"', J, 400, "malformed_json", None),
    ("invalid utf-8", "POST", "charge", "agent", b'{"tool": "\xff"}', J, 400,
     "malformed_json", None),
    ("text/plain", "POST", "charge", "agent", b'{"tool": "web_search"}',
     {"content-type": "text/plain"}, 415, "unsupported_media_type", None),
    ("form media type", "POST", "charge", "agent", b"tool=web_search",
     {"content-type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type",
     None),
    ("too large", "POST", "charge", "agent", b'{"tool": "' + b"a" * BIG + b'"}', J, 413,
     "body_too_large", None),
    ("missing tool", "POST", "charge", "agent", b"{}", J, 422, "invalid_request", "tool"),
    ("tool wrong type", "POST", "charge", "agent", b'{"tool": 5}', J, 422, "invalid_request",
     "tool"),
    ("tool control char", "POST", "charge", "agent", b'{"tool": "web\\u0000search"}', J, 422,
     "invalid_request", "tool"),
    ("tool uppercase", "POST", "charge", "agent", b'{"tool": "Web_Search"}', J, 422,
     "invalid_request", "tool"),
    ("unknown charge field", "POST", "charge", "agent", b'{"tool": "web_search", "price": "0"}',
     J, 422, "invalid_request", "price"),
    ("client price on fixed tool", "POST", "charge", "agent",
     b'{"tool": "web_search", "cost": "0.01"}', J, 422, "invalid_request", "cost"),
    ("variable without cost", "POST", "charge", "agent", b'{"tool": "llm_summarize"}', J, 422,
     "invalid_request", "cost"),
    ("variable cost exponent", "POST", "charge", "agent",
     b'{"tool": "llm_summarize", "cost": 1e-2}', J, 422, "invalid_request", "cost"),
    ("variable cost negative", "POST", "charge", "agent",
     b'{"tool": "llm_summarize", "cost": "-0.01"}', J, 422, "invalid_request", "cost"),
    ("metadata not object", "POST", "charge", "agent", b'{"tool": "calc", "metadata": [1]}', J,
     422, "invalid_request", "metadata"),
    ("metadata too big", "POST", "charge", "agent",
     b'{"tool": "calc", "metadata": {"x": "' + b"m" * 3000 + b'"}}', J, 422,
     "invalid_request", "metadata"),
    ("idempotency key too long", "POST", "charge", "agent", b'{"tool": "web_search"}',
     {**J, "idempotency-key": "k" * 129}, 422, "invalid_request", "Idempotency-Key"),
    ("idempotency key empty", "POST", "charge", "agent", b'{"tool": "web_search"}',
     {**J, "idempotency-key": ""}, 422, "invalid_request", "Idempotency-Key"),
    ("batch not a list", "POST", "charges", "agent", b'{"charges": {"tool": "calc"}}', J, 422,
     "invalid_request", "charges"),
    ("batch empty", "POST", "charges", "agent", b'{"charges": []}', J, 422, "invalid_request",
     "charges"),
    ("hold ttl string", "POST", "holds", "agent",
     b'{"tool": "llm_summarize", "max_cost": "1", "ttl_s": "300"}', J, 422,
     "invalid_request", "ttl_s"),
    ("hold ttl zero", "POST", "holds", "agent",
     b'{"tool": "llm_summarize", "max_cost": "1", "ttl_s": 0}', J, 422, "invalid_request",
     "ttl_s"),
    ("hold max_cost zero", "POST", "holds", "agent",
     b'{"tool": "llm_summarize", "max_cost": "0"}', J, 422, "invalid_request", "max_cost"),
    ("agent name too long", "POST", "agents", "admin", b'{"name": "' + b"a" * 65 + b'"}', J,
     422, "invalid_request", "name"),
    ("agent name uppercase", "POST", "agents", "admin", b'{"name": "Bob"}', J, 422,
     "invalid_request", "name"),
    ("agent name with space", "POST", "agents", "admin", b'{"name": "a b"}', J, 422,
     "invalid_request", "name"),
    ("grant negative", "POST", "agents", "admin", b'{"name": "fine-name", "grant": "-5"}', J,
     422, "invalid_request", "grant"),
    ("limits bad amount", "PATCH", "limits", "admin", b'{"per_call": "abc"}', J, 422,
     "invalid_request", "per_call"),
    ("limits zero daily", "PATCH", "limits", "admin", b'{"daily": "0"}', J, 422,
     "invalid_request", "daily"),
    ("limits unknown field", "PATCH", "limits", "admin", b'{"yearly": "1"}', J, 422,
     "invalid_request", "yearly"),
    ("limits bad category", "PATCH", "limits", "admin",
     b'{"categories": {"LLM!": {"per_call": "1"}}}', J, 422, "invalid_request", None),
    ("limits bad webhook scheme", "PATCH", "limits", "admin",
     b'{"webhook_url": "file:///etc/passwd"}', J, 422, "invalid_request", "webhook_url"),
    ("tool pricing unknown", "PUT", "tool", "admin",
     b'{"price": "1", "category": "tool", "pricing": "weird"}', J, 422, "invalid_request",
     "pricing"),
    ("tool upstream scheme", "PUT", "tool", "admin",
     b'{"price": "1", "category": "tool", "upstream": "ftp://x"}', J, 422, "invalid_request",
     "upstream"),
    ("tool price negative", "PUT", "tool", "admin", b'{"price": "-1", "category": "tool"}', J,
     422, "invalid_request", "price"),
]


def _settled(client: redis.Redis) -> None:
    """Wait until the ledger writer has committed, acknowledged and trimmed every event."""
    deadline = time.monotonic() + 10
    while any(client.xlen(k) for k in client.keys("*:events")):
        assert time.monotonic() < deadline, "the ledger writer did not drain the streams"
        time.sleep(0.05)


def _ledger_rows(gateway: Gateway) -> list[Any]:
    db = sqlite3.connect(gateway.data_dir / "ledger.db")
    try:
        return db.execute("SELECT * FROM ledger_entries ORDER BY entry_id").fetchall()
    finally:
        db.close()


def _snapshot(client: redis.Redis) -> dict[Any, Any]:
    _settled(client)
    state: dict[Any, Any] = {}
    for key in sorted(client.keys("*")):
        if b":keyused:" in key:  # when a valid key was last used: not the call's state
            continue
        kind = client.type(key)
        if kind == b"hash":
            state[key] = client.hgetall(key)
        elif kind == b"stream":
            state[key] = client.xrange(key)
        elif kind == b"zset":
            state[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            state[key] = client.smembers(key)
        else:
            state[key] = client.get(key)
    return state


@pytest.fixture(scope="module")
def victim(gateway: Gateway) -> tuple[str, str]:
    return new_agent(gateway, "5", "victim")


@pytest.fixture(scope="module")
def redis_client(gateway_redis: tuple[str, subprocess.Popen[bytes]]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(gateway_redis[0])
    yield client
    client.close()


def _path(kind: str, agent: str) -> str:
    return {"fund": f"/v1/agents/{agent}/fund", "charge": "/v1/charge",
            "charges": "/v1/charges", "holds": "/v1/holds", "agents": "/v1/agents",
            "limits": f"/v1/agents/{agent}/limits", "tool": "/v1/tools/bad_input_tool"}[kind]


def test_at_least_forty_cases() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_changes_nothing(gateway: Gateway, victim: tuple[str, str],
                                   redis_client: redis.Redis,
                                   case: tuple[Any, ...]) -> None:
    _, method, kind, who, body, headers, status, code, field = case
    agent, api_key = victim
    token = ADMIN_TOKEN if who == "admin" else api_key
    before = _snapshot(redis_client)
    ledger_before = _ledger_rows(gateway)
    response = httpx.request(method, gateway.url + _path(kind, agent), content=body,
                             headers={**headers, "authorization": f"Bearer {token}"})
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["error"] == code and payload["message"]
    if field is not None:
        assert payload["field"] == field and payload["reason"]
    assert _snapshot(redis_client) == before
    assert _ledger_rows(gateway) == ledger_before


def test_chunked_body_over_limit_is_413(gateway: Gateway, victim: tuple[str, str],
                                        redis_client: redis.Redis) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"tool": "'
        for _ in range(20):
            yield b"x" * 4096
        yield b'"}'

    before = _snapshot(redis_client)
    response = httpx.post(gateway.url + "/v1/charge", content=chunks(),
                          headers={**J, "authorization": f"Bearer {victim[1]}"})
    assert response.status_code == 413 and response.json()["error"] == "body_too_large"
    assert _snapshot(redis_client) == before


def test_compact_bodies_parse_like_the_strict_parser() -> None:
    from gateway.api.body import _compact_object, parse_json_object
    from gateway.metering.errors import MalformedJson
    from gateway.metering.money import JsonNumber

    # Which parser answers: orjson for the compact form without numbers, else the strict one.
    assert _compact_object(b'{"tool":"calc"}') == {"tool": "calc"}
    for raw in (b'{"tool": "calc"}', b'{"cost":5}', b'{"a":"1","a":"1"}', b'{"t":"\\/"}'):
        assert _compact_object(raw) is None

    for raw in (b'{"tool":"calc"}', b'{"tool": "calc"}', b'{"cost":"0.5","tool":"llm"}',
                b'{"tool":"calc","metadata":{"q":"\xc3\xa9","x":[true,null]}}'):
        assert parse_json_object(raw) == json.loads(raw)
    number = parse_json_object(b'{"cost":5,"tool":"llm"}')["cost"]
    assert isinstance(number, JsonNumber) and number.text == "5"  # never a bare int/float
    nested = parse_json_object(b'{"metadata":{"n":1.25}}')["metadata"]["n"]
    assert isinstance(nested, JsonNumber)
    for raw in (b'{"a":"1","a":"1"}', b'{"m":{"a":"1","a":"2"}}', b'["x"]', b'{"a":NaN}'):
        with pytest.raises(MalformedJson):
            parse_json_object(raw)
