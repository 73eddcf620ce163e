"""Tasks (budget envelopes) over HTTP: open, show, close, the admin listing, the ``task`` field
on charges, batch items and holds, the X-IOU-Task header on invoke, and the refusals."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from decimal import Decimal

import httpx

from tests.gateway_proc import Gateway
from tests.http_helpers import new_agent
from tests.test_price_changes import ok_upstream


def open_task(agent: httpx.Client, body: dict[str, object]) -> dict[str, object]:
    opened = agent.post("/v1/tasks", json=body)
    assert opened.status_code == 201, opened.text
    task: dict[str, object] = opened.json()
    return task


def test_open_charge_batch_hold_close(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "10", "tasks")
    with gateway.agent(key) as agent:
        task = open_task(agent, {"budget": "1", "name": "research", "ttl_s": 600,
                                 "max_calls": {"web_browse": 2}})
        tid = str(task["task_id"])
        assert (task["budget"], task["spent"], task["held"], task["calls"], task["state"]) == (
            "1", "0", "0", 0, "open")
        assert task["max_calls"] == {"web_browse": 2} and task["name"] == "research"
        assert agent.post("/v1/charge", json={"tool": "web_search", "task": tid}
                          ).status_code == 200
        batch = agent.post("/v1/charges", json={"charges": [
            {"tool": "web_browse", "task": tid}, {"tool": "web_browse", "task": tid},
            {"tool": "web_browse", "task": tid}, {"tool": "web_search"}]}).json()["results"]
        assert [r.get("error") for r in batch] == [None, None, "limit_exceeded", None]
        assert batch[2]["limit"] == "task_calls" and batch[2]["max"] == 2
        held = agent.post("/v1/holds", json={"tool": "llm_summarize", "max_cost": "0.5",
                                             "task": tid})
        assert held.status_code == 201, held.text
        over = agent.post("/v1/charge", json={"tool": "llm_summarize", "cost": "0.22",
                                               "task": tid})
        assert over.status_code == 403
        assert over.json() | {"message": ""} == {
            "error": "limit_exceeded", "message": "", "limit": "task_budget", "task": tid,
            "max": "1", "spent": "0.79"}
        shown = agent.get(f"/v1/tasks/{tid}").json()
        assert (shown["spent"], shown["held"], shown["calls"], shown["remaining"]) == (
            "0.29", "0.5", 4, "0.21")
        assert shown["spent_by_tool"] == {"web_browse": "0.24", "web_search": "0.05"}
        assert shown["calls_by_category"] == {"llm": 1, "tool": 3}
        closed = agent.post(f"/v1/tasks/{tid}/close")
        assert closed.status_code == 200, closed.text
        summary = closed.json()
        assert (summary["state"], summary["held"], summary["spent"]) == ("closed", "0", "0.29")
        assert summary["holds_released"] == 1 and summary["closed_at"] is not None
        assert agent.get("/v1/balance").json()["balance"] == "9.66"  # 10 - 0.29 - 0.05
        again = agent.post(f"/v1/tasks/{tid}/close")
        assert again.status_code == 200 and again.json()["holds_released"] == 0
        after = agent.post("/v1/charge", json={"tool": "web_search", "task": tid})
        assert after.status_code == 409
        assert after.json() | {"message": ""} == {"error": "task_closed", "message": "",
                                                   "task": tid, "state": "closed"}
        hold_after = agent.post("/v1/holds", json={"tool": "web_search", "task": tid})
        assert hold_after.status_code == 409
    with gateway.admin() as admin:
        listed = admin.get(f"/v1/agents/{name}/tasks")
        assert listed.status_code == 200
        assert [t["task_id"] for t in listed.json()["tasks"]] == [tid]
        assert admin.get("/v1/agents/nobody-here/tasks").status_code == 404
        assert admin.get(f"/v1/agents/{name}/tasks?limit=0").status_code == 422
    with gateway.agent(key) as agent:
        assert agent.get(f"/v1/agents/{name}/tasks").status_code == 200  # its own


def test_another_agents_task_is_not_found(gateway: Gateway) -> None:
    owner_name, owner = new_agent(gateway, "10", "tasks")
    _, other = new_agent(gateway, "10", "tasks")
    with gateway.agent(owner) as agent:
        tid = str(open_task(agent, {"budget": "1"})["task_id"])
    with gateway.agent(other) as agent:
        for response in (agent.get(f"/v1/tasks/{tid}"), agent.post(f"/v1/tasks/{tid}/close"),
                         agent.post("/v1/charge", json={"tool": "web_search", "task": tid}),
                         agent.post("/v1/holds", json={"tool": "web_search", "task": tid}),
                         agent.get("/v1/tasks/task_nope"),
                         agent.post("/v1/charge", json={"tool": "web_search",
                                                        "task": "anything"})):
            assert response.status_code == 404, response.text
            assert response.json()["error"] == "not_found"
        assert agent.get(f"/v1/agents/{owner_name}/tasks").status_code == 403
        assert agent.get("/v1/balance").json()["balance"] == "10"
    with gateway.agent(owner) as agent:
        assert agent.get(f"/v1/tasks/{tid}").json()["calls"] == 0


def test_open_refuses_bad_bodies(gateway: Gateway) -> None:
    _, key = new_agent(gateway, "10", "tasks")
    with gateway.agent(key) as agent:
        for body, field in (({}, "budget"), ({"budget": "0"}, "budget"),
                            ({"budget": "1", "ttl_s": 604_801}, "ttl_s"),
                            ({"budget": "1", "ttl_s": 0}, "ttl_s"),
                            ({"budget": "1", "name": ""}, "name"),
                            ({"budget": "1", "name": "x" * 129}, "name"),
                            ({"budget": "1", "max_calls": {"web": 0}}, "max_calls.web"),
                            ({"budget": "1", "max_calls": {"Web": 1}}, "max_calls.Web"),
                            ({"budget": "1", "max_calls": {"web": "3"}}, "max_calls.web"),
                            ({"budget": "1", "max_calls": [1]}, "max_calls"),
                            ({"budget": "1", "other": 1}, "other")):
            refused = agent.post("/v1/tasks", json=body)
            assert refused.status_code == 422, (body, refused.text)
            assert refused.json()["field"] == field, (body, refused.text)
        for bad in ({"tool": "web_search", "task": 5}, {"tool": "web_search", "task": ""}):
            assert agent.post("/v1/charge", json=bad).status_code == 422
        assert agent.post("/v1/holds", json={"tool": "web_search", "task": 5}
                          ).status_code == 422
    with gateway.admin() as admin:
        assert admin.post("/v1/tasks", json={"budget": "1"}).status_code == 403


def test_open_is_idempotent_with_a_key(gateway: Gateway) -> None:
    _, key = new_agent(gateway, "10", "tasks")
    with gateway.agent(key) as agent:
        first = agent.post("/v1/tasks", json={"budget": "1"}, headers={"idempotency-key": "t1"})
        again = agent.post("/v1/tasks", json={"budget": "1"}, headers={"idempotency-key": "t1"})
        assert first.status_code == again.status_code == 201
        assert first.json()["task_id"] == again.json()["task_id"]
        assert again.headers.get("idempotent-replayed") == "true"


def test_require_task_over_http(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "10", "tasks")
    with gateway.admin() as admin:
        patched = admin.patch(f"/v1/agents/{name}/limits", json={"require_task": True})
        assert patched.status_code == 200 and patched.json()["require_task"] is True
        assert admin.patch(f"/v1/agents/{name}/limits", json={"require_task": "yes"}
                           ).status_code == 422
    with gateway.agent(key) as agent:
        refused = agent.post("/v1/charge", json={"tool": "web_search"})
        assert refused.status_code == 403
        assert refused.json()["limit"] == "task_required"
        assert agent.post("/v1/charge", json={"tool": "calc"}).status_code == 200  # free
        tid = open_task(agent, {"budget": "1"})["task_id"]
        assert agent.post("/v1/charge", json={"tool": "web_search", "task": tid}
                          ).status_code == 200
    with gateway.admin() as admin:
        cleared = admin.patch(f"/v1/agents/{name}/limits", json={"require_task": None})
        assert "require_task" not in cleared.json()


def test_invoke_counts_against_the_task_header(gateway: Gateway) -> None:
    _, key = new_agent(gateway, "10", "tasks")
    with ok_upstream() as upstream, gateway.admin() as admin, gateway.agent(key) as agent:
        assert admin.put("/v1/tools/task_proxied", json={
            "price": "0.4", "category": "tool", "upstream": upstream}).status_code == 200
        tid = str(open_task(agent, {"budget": "1"})["task_id"])
        for _ in range(2):
            invoked = agent.post("/v1/tools/task_proxied/invoke", json={},
                                 headers={"x-iou-task": tid})
            assert invoked.status_code == 200, invoked.text
        over = agent.post("/v1/tools/task_proxied/invoke", json={}, headers={"x-iou-task": tid})
        assert over.status_code == 403 and over.json()["limit"] == "task_budget"
        shown = agent.get(f"/v1/tasks/{tid}").json()
        assert (shown["spent"], shown["held"], shown["calls"]) == ("0.8", "0", 2)
        bad = agent.post("/v1/tools/task_proxied/invoke", json={},
                         headers={"x-iou-task": "x" * 65})
        assert bad.status_code == 422 and bad.json()["field"] == "X-IOU-Task"
        assert agent.get("/v1/balance").json()["balance"] == "9.2"


def test_ledger_rows_carry_the_task(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "10", "tasks")
    with gateway.agent(key) as agent:
        tid = str(open_task(agent, {"budget": "1"})["task_id"])
        assert agent.post("/v1/charge", json={"tool": "web_search", "task": tid}
                          ).status_code == 200
        assert agent.post("/v1/charge", json={"tool": "web_search"}).status_code == 200
        hold = agent.post("/v1/holds", json={"tool": "web_search", "task": tid}).json()
        assert agent.post(f"/v1/holds/{hold['hold_id']}/capture", json={}).status_code == 200
    deadline = time.monotonic() + 20
    with gateway.admin() as admin:
        while True:
            entries = admin.get(f"/v1/agents/{name}/ledger").json()["entries"]
            if len(entries) >= 5:  # grant, 2 charges, hold, capture
                break
            assert time.monotonic() < deadline, entries
            time.sleep(0.1)
    tasks = sorted((e["kind"], e["task"] or "") for e in entries)
    assert tasks == [("capture", tid), ("charge", ""), ("charge", tid), ("grant", ""),
                     ("hold", tid)]


def test_refund_gives_back_to_the_task(gateway: Gateway) -> None:
    _, key = new_agent(gateway, "10", "tasks")
    with gateway.agent(key) as agent:
        tid = str(open_task(agent, {"budget": "0.1"})["task_id"])
        charged = agent.post("/v1/charge", json={"tool": "web_search", "task": tid}).json()
        assert agent.post("/v1/charge", json={"tool": "web_search", "task": tid}
                          ).status_code == 200
        assert agent.post("/v1/charge", json={"tool": "web_search", "task": tid}
                          ).status_code == 403
    with gateway.admin() as admin:
        refunded = admin.post(f"/v1/charges/{charged['charge_id']}/refund",
                              json={"amount": "0.05", "reason": "bad answer"})
        assert refunded.status_code == 200, refunded.text
    with gateway.agent(key) as agent:
        shown = agent.get(f"/v1/tasks/{tid}").json()
        assert (shown["spent"], shown["spent_by_tool"]) == ("0.05", {"web_search": "0.05"})
        assert agent.post("/v1/charge", json={"tool": "web_search", "task": tid}
                          ).status_code == 200


def test_exactly_14_of_400_mixed_over_http(gateway: Gateway) -> None:
    """Task budget 1.00; 100 charges, 100 holds and 20 batches of 10 items of 0.07, all at
    once over HTTP: exactly 14 calls pass, the rest are task_budget refusals."""
    _, key = new_agent(gateway, "100", "tasks")
    with gateway.admin() as admin:
        assert admin.put("/v1/tools/task_race", json={"price": "0.07", "category": "tool"}
                         ).status_code == 200
    with gateway.agent(key) as agent:
        tid = str(open_task(agent, {"budget": "1"})["task_id"])
    call = {"tool": "task_race", "task": tid}

    async def race() -> list[str]:
        headers = {"authorization": f"Bearer {key}"}
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=60,
                                     limits=limits) as client:
            requests = [client.post("/v1/charge", json=call) for _ in range(100)]
            requests += [client.post("/v1/holds", json=call) for _ in range(100)]
            requests += [client.post("/v1/charges", json={"charges": [call] * 10})
                         for _ in range(20)]
            answers = await asyncio.gather(*requests)
        outcomes = []
        for answer in answers:
            body = answer.json()
            for item in body.get("results", [body]):
                outcomes.append(item.get("limit") or item.get("error") or "ok")
        return outcomes

    outcomes = Counter(asyncio.run(race()))
    assert outcomes == {"ok": 14, "task_budget": 386}
    with gateway.agent(key) as agent:
        shown = agent.get(f"/v1/tasks/{tid}").json()
        assert shown["calls"] == 14
        assert Decimal(shown["spent"]) + Decimal(shown["held"]) == Decimal("0.98")
        assert Decimal(agent.get("/v1/balance").json()["balance"]) == Decimal("99.02")


def test_close_checks_the_idempotency_key(gateway: Gateway) -> None:
    """Found by schemathesis: close ignored a malformed Idempotency-Key (every POST checks it)."""
    _, key = new_agent(gateway, "5", "tasks")
    with gateway.agent(key) as agent:
        task = agent.post("/v1/tasks", json={"budget": "1"}).json()["task_id"]
        refused = agent.post(f"/v1/tasks/{task}/close", headers={"idempotency-key": "k" * 129})
        assert refused.status_code == 422 and refused.json()["field"] == "Idempotency-Key"
        assert agent.get(f"/v1/tasks/{task}").json()["state"] == "open"  # nothing written
        assert agent.post(f"/v1/tasks/{task}/close",
                          headers={"idempotency-key": "close-1"}).status_code == 200



def _task_call(path: str, task: str | None) -> tuple[dict[str, object], dict[str, str]]:
    """The body and headers of a call of ``path`` naming ``task`` (or none): in the body for
    charge, batch item and hold, as header X-IOU-Task for invoke."""
    if path.endswith("/invoke"):
        return {}, ({} if task is None else {"x-iou-task": task})
    named = {} if task is None else {"task": task}
    if path == "/v1/charges":
        return {"charges": [{"tool": "web_search", **named}]}, {}
    return {"tool": "web_search", **named}, {}


def test_a_key_binds_the_task_it_was_used_with(gateway: Gateway) -> None:
    """The same Idempotency-Key with another task (or none) is another request: 409
    idempotency_conflict, never the first call's answer replayed (charge, batch, hold,
    invoke's X-IOU-Task header)."""
    _, key = new_agent(gateway, "10", "tasks")
    with ok_upstream() as upstream, gateway.admin() as admin, gateway.agent(key) as agent:
        assert admin.put("/v1/tools/task_keyed", json={
            "price": "0.1", "category": "tool", "upstream": upstream}).status_code == 200
        first = str(open_task(agent, {"budget": "1"})["task_id"])
        second = str(open_task(agent, {"budget": "1"})["task_id"])

        def sent(path: str, task: str | None, idem: str) -> httpx.Response:
            body, headers = _task_call(path, task)
            return agent.post(path, json=body, headers={"idempotency-key": idem, **headers})

        for path in ("/v1/charge", "/v1/charges", "/v1/holds", "/v1/tools/task_keyed/invoke"):
            for used, other in ((first, second), (first, None), (None, first)):
                idem = f"bind-{uuid.uuid4().hex}"
                answered = sent(path, used, idem)
                assert answered.status_code < 300, (path, answered.text)
                assert sent(path, used, idem).status_code == answered.status_code, path
                conflict = sent(path, other, idem)
                assert conflict.status_code == 409, (path, used, other, conflict.text)
                assert conflict.json()["error"] == "idempotency_conflict", conflict.text
        calls = [agent.get(f"/v1/tasks/{t}").json()["calls"] for t in (first, second)]
        assert calls == [8, 0], calls  # 2 of each of the 4 calls named the first task


def test_a_key_binds_an_invokes_ceiling(gateway: Gateway) -> None:
    """X-IOU-Max-Cost decides what a variable tool's invoke holds: the same key with another
    ceiling is 409, not the first answer replayed."""
    _, key = new_agent(gateway, "10", "tasks")
    with ok_upstream() as upstream, gateway.admin() as admin, gateway.agent(key) as agent:
        assert admin.put("/v1/tools/ceiling_keyed", json={
            "price": "0.5", "category": "tool", "pricing": "variable", "upstream": upstream}
        ).status_code == 200
        headers = {"idempotency-key": f"ceiling-{uuid.uuid4().hex}", "x-iou-max-cost": "0.2"}
        path = "/v1/tools/ceiling_keyed/invoke"
        assert agent.post(path, json={}, headers=headers).status_code == 200
        assert agent.post(path, json={}, headers=headers).status_code == 200
        other = agent.post(path, json={}, headers={**headers, "x-iou-max-cost": "0.3"})
        assert other.status_code == 409 and other.json()["error"] == "idempotency_conflict"
        assert agent.get("/v1/balance").json()["balance"] == "9.8"  # one call, at its ceiling
