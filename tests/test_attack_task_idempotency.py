"""Attack: concurrent retries of one keyed ``POST /v1/tasks`` open one task, not one each.

The contract: a retry with the same Idempotency-Key and body returns the first successful
answer. Retries sent together (a client that timed out and retried while the first was
still running) must not open a second task."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.gateway_proc import Gateway

TWINS = 8


def _agent(gw: Gateway) -> tuple[str, str]:
    name = f"atk-task-{uuid.uuid4().hex[:8]}"
    with gw.admin() as admin:
        r = admin.post("/v1/agents", json={"name": name, "grant": "5"})
    assert r.status_code == 201, r.text
    return name, r.json()["api_key"]


def test_concurrent_keyed_task_opens_open_one_task(gateway: Gateway) -> None:
    name, key = _agent(gateway)
    idem = uuid.uuid4().hex

    def open_task(_: int) -> httpx.Response:
        with gateway.agent(key) as client:
            return client.post("/v1/tasks", json={"budget": "1"},
                               headers={"idempotency-key": idem})

    with ThreadPoolExecutor(TWINS) as pool:
        answers = list(pool.map(open_task, range(TWINS)))
    assert all(r.status_code == 201 for r in answers), [r.text for r in answers]
    assert len({r.json()["task_id"] for r in answers}) == 1
    with gateway.admin() as admin:
        listed = admin.get(f"/v1/agents/{name}/tasks").json()["tasks"]
    assert len(listed) == 1, listed
    # A later retry answers the same task; another body under the key is a conflict.
    again = open_task(0)
    assert again.json()["task_id"] == answers[0].json()["task_id"]
    with gateway.agent(key) as client:
        other = client.post("/v1/tasks", json={"budget": "2"}, headers={"idempotency-key": idem})
    assert other.status_code == 409 and other.json()["error"] == "idempotency_conflict"
