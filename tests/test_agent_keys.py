"""GET /v1/agents/{agent}/keys: ids, creation and last use of an agent's keys, never a key
or its hash; the admin and the agent itself only; "last used" written at most once a minute
per key and process."""

from __future__ import annotations

import datetime
import hashlib
import time
from typing import Any

import redis

from tests.gateway_proc import Gateway
from tests.http_helpers import error_of, new_agent, unique


def listing(gw: Gateway, agent: str, token: str | None = None) -> Any:
    client = gw.admin() if token is None else gw.agent(token)
    with client:
        return client.get(f"/v1/agents/{agent}/keys")


def parse_iso(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_keys_are_listed_with_creation_and_last_use(gateway: Gateway) -> None:
    started = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=2)
    name, first = new_agent(gateway, "1")
    with gateway.admin() as admin:
        added = admin.post(f"/v1/agents/{name}/keys").json()
    second_id, second = added["key_id"], added["api_key"]
    answer = listing(gateway, name)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert list(body) == ["keys"]
    assert [set(k) for k in body["keys"]] == [{"key_id", "created_at", "last_used_at"}] * 2
    assert body["keys"][1]["key_id"] == second_id  # oldest first
    for key in body["keys"]:
        assert started <= parse_iso(key["created_at"]) <= started + datetime.timedelta(seconds=60)
        assert key["last_used_at"] is None  # neither key was used yet
    for secret in (first, second):  # never a key, nor its stored hash
        assert secret not in answer.text
        assert hashlib.sha256(secret.encode()).hexdigest() not in answer.text
    with gateway.agent(first) as agent:
        assert agent.get("/v1/balance").status_code == 200
    deadline = time.monotonic() + 5
    while (used := listing(gateway, name).json()["keys"])[0]["last_used_at"] is None:
        assert time.monotonic() < deadline  # written off the request's path
        time.sleep(0.05)
    assert parse_iso(used[0]["last_used_at"]) >= parse_iso(used[0]["created_at"])
    assert used[1]["last_used_at"] is None
    with gateway.admin() as admin:
        assert admin.delete(f"/v1/agents/{name}/keys/{second_id}").status_code == 204
    assert [k["key_id"] for k in listing(gateway, name).json()["keys"]] == [used[0]["key_id"]]


def test_only_the_admin_and_the_agent_itself_may_list(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "1")
    _, other_key = new_agent(gateway, "1")
    assert listing(gateway, name, key).status_code == 200  # the agent itself: 200
    refused = listing(gateway, name, other_key)  # another agent: 403
    assert refused.status_code == 403 and error_of(refused) == "forbidden"
    missing = listing(gateway, "no-such-agent", key)  # an agent asking for a stranger: 403
    assert missing.status_code == 403 and error_of(missing) == "forbidden"
    unknown = listing(gateway, "no-such-agent")  # the admin: 404
    assert unknown.status_code == 404 and error_of(unknown) == "not_found"
    assert listing(gateway, "Bad Name").status_code == 422
    assert listing(gateway, name, "iou_" + "x" * 43).status_code == 401


def test_last_use_is_written_at_most_once_a_minute(
        gateway: Gateway, gateway_redis: tuple[str, Any]) -> None:
    name, key = new_agent(gateway, "1")
    client: Any = redis.Redis.from_url(gateway_redis[0], decode_responses=True)
    digest = hashlib.sha256(key.encode()).hexdigest()
    used_key = next(client.scan_iter(f"iou:*:agent:{name}")).replace(":agent:", ":keyused:")
    with gateway.agent(key) as agent:
        agent.get("/v1/balance")
        deadline = time.monotonic() + 5
        while (first := client.hget(used_key, digest)) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for _ in range(30):  # over more than a second: same worker, same minute
            assert agent.post("/v1/charge", json={"tool": "calc"}).status_code == 200
            time.sleep(0.05)
    assert client.hget(used_key, digest) == first  # not rewritten per request
    client.close()


def test_keys_created_with_an_idempotency_key_have_a_creation_time(gateway: Gateway) -> None:
    # Such keys get ids derived from the request (the same on a retry), not from the clock.
    name = unique("keyed")
    with gateway.admin() as admin:
        created = admin.post("/v1/agents", json={"name": name},
                             headers={"idempotency-key": unique("create")})
        assert created.status_code == 201
        added = admin.post(f"/v1/agents/{name}/keys",
                           headers={"idempotency-key": unique("add")})
        assert added.status_code == 201
    keys = listing(gateway, name).json()["keys"]
    assert {k["key_id"] for k in keys} == {created.json()["key_id"], added.json()["key_id"]}
    now = datetime.datetime.now(datetime.UTC)
    for key in keys:
        assert key["created_at"] is not None, key
        assert abs((parse_iso(key["created_at"]) - now).total_seconds()) < 60
