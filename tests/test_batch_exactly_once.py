"""A batch with an Idempotency-Key is exactly-once as a whole: whatever failed or crashed in
between, a retry with the same key charges no item twice and answers what was charged.

Each check counts against the client's own record of what it sent (the items, their
tools' prices), never against what the server says it did.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gateway.store import keys
from tests.gateway_proc import Gateway, running_gateway
from tests.http_helpers import SEED_TOOLS, balance, error_of, new_agent, seed_tools, unique
from tests.servers import redis_server

PARTITIONS = 16


def price(tool: str) -> Decimal:
    return Decimal(SEED_TOOLS[tool]["price"])


def post_batch(client: httpx.Client, items: list[Any], key: str | None
               ) -> httpx.Response:
    # json.dumps writes big integers as they are (httpx's json= would too).
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["idempotency-key"] = key
    return client.post("/v1/charges", content=json.dumps({"charges": items}), headers=headers)


def ledger_entries(gw: Gateway, agent: str, kind: str = "charge") -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    with gw.admin() as admin:
        while True:
            params = {"limit": "1000", "kind": kind, **({"before": cursor} if cursor else {})}
            page = admin.get(f"/v1/agents/{agent}/ledger", params=params).json()
            entries += page["entries"]
            cursor = page["next_cursor"]
            if cursor is None:
                return entries


def wait_for_ledger(gw: Gateway, agent: str, count: int, timeout_s: float = 30) -> list[Any]:
    """The agent's charge rows once the writer has at least ``count`` of them."""
    deadline = time.monotonic() + timeout_s
    while True:
        entries = ledger_entries(gw, agent)
        if len(entries) >= count or time.monotonic() > deadline:
            return entries
        time.sleep(0.1)


def test_an_item_that_fails_inside_the_gateway_never_fails_the_batch(gateway: Gateway
                                                                        ) -> None:
    name, key = new_agent(gateway, "10")
    # A malformed item now refuses the whole batch up front (test_malformed_corpus.py); an
    # item the store refuses is refused alone, in the middle of the batch.
    items = [{"tool": "web_search"}, {"tool": "no_such_tool"}, {"tool": "web_browse"}]
    batch_key = unique("batch")
    with gateway.agent(key) as client:
        first = post_batch(client, items, batch_key)
        assert first.status_code == 200, first.text
        results = first.json()["results"]
        assert "charge_id" in results[0] and "charge_id" in results[2]
        assert "error" in results[1] and "charge_id" not in results[1]
        again = post_batch(client, items, batch_key)
    assert again.status_code == 200, again.text
    retried = again.json()["results"]
    assert [r.get("charge_id") for r in retried] == [r.get("charge_id") for r in results]
    assert Decimal(balance(gateway, key)) == 10 - price("web_search") - price("web_browse")
    rows = wait_for_ledger(gateway, name, 2)
    assert sorted(r["entry_id"] for r in rows) == sorted([results[0]["charge_id"],
                                                          results[2]["charge_id"]])


def test_a_retried_batch_answers_each_item_first_answer_and_reevaluates_refusals(
        gateway: Gateway) -> None:
    _, key = new_agent(gateway, "0.2")
    items = [{"tool": "web_browse"}, {"tool": "web_browse"}, {"tool": "web_search"}]
    batch_key = unique("batch")
    with gateway.agent(key) as client:
        first = post_batch(client, items, batch_key).json()["results"]
        assert "charge_id" in first[0] and first[1]["error"] == "balance_insufficient"
        assert first[0]["balance"] == "0.08" and first[2]["balance"] == "0.03"
    with gateway.admin() as admin:
        name = client_agent_name(gateway, key)
        assert admin.post(f"/v1/agents/{name}/fund", json={"amount": "1"}).status_code == 200
    with gateway.agent(key) as client:
        again = post_batch(client, items, batch_key)
    assert again.status_code == 200
    second = again.json()["results"]
    # Charged items answer their first answer (same id, same balance then); the refused
    # one was evaluated again and is charged now, once.
    assert second[0] == first[0] and second[2] == first[2]
    assert "charge_id" in second[1] and second[1]["charge_id"] not in (
        first[0]["charge_id"], first[2]["charge_id"])
    assert Decimal(balance(gateway, key)) == Decimal("1.2") - 2 * price("web_browse") - price(
        "web_search")


def client_agent_name(gw: Gateway, api_key: str) -> str:
    with gw.agent(api_key) as client:
        name: str = client.get("/v1/balance").json()["agent"]
        return name


def test_same_key_other_batch_is_a_conflict_and_charges_nothing(gateway: Gateway) -> None:
    _, key = new_agent(gateway, "10")
    batch_key = unique("batch")
    with gateway.agent(key) as client:
        assert post_batch(client, [{"tool": "web_search"}], batch_key).status_code == 200
        other = post_batch(client, [{"tool": "web_browse"}], batch_key)
        assert other.status_code == 409 and error_of(other) == "idempotency_conflict"
        longer = post_batch(client, [{"tool": "web_search"}, {"tool": "web_search"}], batch_key)
        assert longer.status_code == 409
    assert Decimal(balance(gateway, key)) == 10 - price("web_search")


def test_a_batch_that_charged_nothing_keeps_no_binding(gateway: Gateway) -> None:
    """A refusal is not kept: after a batch whose every item was refused, the same key
    may carry the corrected batch."""
    _, key = new_agent(gateway, "10")
    batch_key = unique("batch")
    with gateway.agent(key) as client:
        refused = post_batch(client, [{"tool": "no_such_tool"}], batch_key).json()["results"]
        assert refused[0]["error"] == "not_found"
        fixed = post_batch(client, [{"tool": "web_search"}], batch_key)
        assert fixed.status_code == 200 and "charge_id" in fixed.json()["results"][0]
    assert Decimal(balance(gateway, key)) == 10 - price("web_search")


def test_a_client_key_never_meets_a_batch_item_key(gateway: Gateway) -> None:
    """Item keys are derived with a character no client can send: no client-chosen key
    (header or item field) replays or blocks a batch item, and the reverse."""
    _, key = new_agent(gateway, "10")
    with gateway.agent(key) as client:
        assert post_batch(client, [{"tool": "web_search"}] * 2, "k").status_code == 200
        for guess in ("k0", "k:0", "k#0", "k 0", "k.0", "k-0", "k[0]"):
            response = client.post("/v1/charge", json={"tool": "web_search"},
                                   headers={"idempotency-key": guess})
            assert response.status_code == 200 and response.headers.get(
                "idempotent-replayed") is None, response.text
        for raw in ("k\u00b70".encode(), b"k\xb70"):
            response = client.post("/v1/charge", json={"tool": "web_search"},
                                   headers=[(b"idempotency-key", raw)])
            assert response.status_code == 422
        item = post_batch(client, [{"tool": "web_search", "idempotency_key": "k\u00b70"}], None)
        assert item.status_code == 422
        assert item.json()["field"] == "charges[0].idempotency_key"
    charged = 2 + 7  # the batch, then the seven printable guesses (each its own first call)
    assert Decimal(balance(gateway, key)) == 10 - charged * price("web_search")


def test_an_item_with_its_own_key_keeps_it(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "10")
    with gateway.agent(key) as client:
        single = client.post("/v1/charge", json={"tool": "web_search"},
                             headers={"idempotency-key": "own"})
        items = [{"tool": "web_search", "idempotency_key": "own"}, {"tool": "web_search"}]
        batch_key = unique("batch")
        batch = post_batch(client, items, batch_key).json()["results"]
    assert batch[0]["charge_id"] == single.json()["charge_id"]
    assert Decimal(balance(gateway, key)) == 10 - 2 * price("web_search")
    rows = wait_for_ledger(gateway, name, 2)
    # The ledger names each item's key: its own, or the batch's key, "\u00b7", its index.
    assert {r["idempotency_key"] for r in rows} == {"own", f"{batch_key}\u00b71"}


@pytest.fixture(scope="module")
def faulty_gateway(gateway_redis: tuple[str, Any]) -> Iterator[Gateway]:
    """A gateway whose batch items with metadata {"iou_fault": "raise"} raise after being
    charged (the worst moment), the first time only."""
    with running_gateway(gateway_redis[0], fault="batch_item") as gw:
        seed_tools(gw)
        yield gw


def test_an_item_that_raises_after_its_charge_is_replayed_by_the_retry(
        faulty_gateway: Gateway) -> None:
    gw = faulty_gateway
    _, key = new_agent(gw, "10")
    items = [{"tool": "web_search"}, {"tool": "web_browse", "metadata": {"iou_fault": "raise"}},
             {"tool": "web_search"}]
    batch_key = unique("batch")
    with gw.agent(key) as client:
        first = post_batch(client, items, batch_key)
        assert first.status_code == 200
        failed = first.json()["results"][1]
        assert failed["error"] == "internal" and "Idempotency-Key" in failed["message"]
        again = post_batch(client, items, batch_key).json()["results"]
    assert "charge_id" in again[1]
    assert again[0] == first.json()["results"][0] and again[2] == first.json()["results"][2]
    expected = 10 - 2 * price("web_search") - price("web_browse")
    assert Decimal(balance(gw, key)) == expected
    assert "batch item 1 failed" in gw.log_text()


# ---- the gateway killed with SIGKILL in the middle of keyed batches ----------------------

BATCHES = 8
ITEMS_PER_BATCH = 250


def child_pids(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def agent_balance_micros(client: redis.Redis, agent: str) -> int:
    return int(client.hget(keys.agent_keys(agent, PARTITIONS).agent_hash, "bal") or 0)


def send_all(gw: Gateway, api_key: str, batches: list[list[dict[str, Any]]],
             batch_keys: list[str]) -> list[httpx.Response | None]:
    """Each batch from its own thread; None where the connection broke."""
    def send(i: int) -> httpx.Response | None:
        try:
            with gw.agent(api_key) as client:
                return post_batch(client, batches[i], batch_keys[i])
        except httpx.HTTPError:
            return None

    with concurrent.futures.ThreadPoolExecutor(len(batches)) as pool:
        return list(pool.map(send, range(len(batches))))


def test_gateway_killed_mid_batch_then_retried_charges_every_item_once(tmp_path: Path) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    tools = ["web_search", "web_browse", "email_send"]
    batches: list[list[dict[str, Any]]] = [
        [{"tool": tools[(b + i) % 3], "metadata": {"b": b, "i": i}}
         for i in range(ITEMS_PER_BATCH)] for b in range(BATCHES)]
    batch_keys = [unique(f"kill-{b}") for b in range(BATCHES)]
    owed = sum((price(item["tool"]) for batch in batches for item in batch), Decimal(0))
    with redis_server() as (redis_url, _), redis.Redis.from_url(redis_url) as store:
        with running_gateway(redis_url, IOU_LEDGER_URL=ledger_url) as first:
            seed_tools(first)
            name, api_key = new_agent(first, "1000")
            start = agent_balance_micros(store, name)
            writers = child_pids(first.process.pid)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                sent = pool.submit(send_all, first, api_key, batches, batch_keys)
                deadline = time.monotonic() + 20
                while agent_balance_micros(store, name) == start:
                    assert time.monotonic() < deadline, "no batch was charged"
                    time.sleep(0.001)
                first.process.send_signal(signal.SIGKILL)
                first.process.wait()
                for pid in writers:  # the orphaned writer finishes its batch and stops
                    os.kill(pid, signal.SIGTERM)
                answers = sent.result()
        charged_before = start - agent_balance_micros(store, name)
        assert charged_before > 0, "the kill came before any charge"
        print(f"killed after {charged_before} micros of {owed * 10**6} were charged")
        with running_gateway(redis_url, IOU_LEDGER_URL=ledger_url) as second:
            retried = send_all(second, api_key, batches, batch_keys)
            assert all(r is not None and r.status_code == 200 for r in retried)
            results = [r.json()["results"] for r in retried if r is not None]
            ids = [item["charge_id"] for batch in results for item in batch]
            assert len(set(ids)) == BATCHES * ITEMS_PER_BATCH
            for answer, again in zip(answers, results, strict=True):
                if answer is not None and answer.status_code == 200:
                    assert answer.json()["results"] == again  # the first answers, replayed
            assert Decimal(balance(second, api_key)) == 1000 - owed
            rows = wait_for_ledger(second, name, BATCHES * ITEMS_PER_BATCH)
            assert sorted(r["entry_id"] for r in rows) == sorted(ids)
            assert len({r["idempotency_key"] for r in rows}) == len(rows)
