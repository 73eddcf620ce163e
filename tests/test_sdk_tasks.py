"""Tasks through the SDK (sync and async clients) and the `iou tasks` commands, against a
real gateway."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

from gateway.sdk import AsyncClient, Client, LimitExceeded, NotFound, TaskClosed
from tests.gateway_proc import ADMIN_TOKEN, Gateway
from tests.http_helpers import new_agent
from tests.test_cli import iou


def test_sdk_tasks(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "10", "sdk-tasks")
    with Client(gateway.url, key) as client:
        task = client.tasks.open("1", name="buy", ttl_s=600, max_calls={"commerce": 1})
        assert (task.budget, task.state, task.max_calls, task.name) == (
            Decimal(1), "open", {"commerce": 1}, "buy")
        client.charge("web_search", task=task.task_id)
        with client.hold("web_browse", task=task.task_id):
            assert client.tasks.get(task.task_id).held == Decimal("0.12")
        with pytest.raises(LimitExceeded) as refused:
            client.charge("llm_summarize", cost="0.96", task=task.task_id)
        assert refused.value.body["limit"] == "task_budget"
        shown = client.tasks.get(task.task_id)
        assert (shown.spent, shown.held, shown.calls, shown.remaining) == (
            Decimal("0.05"), Decimal(0), 2, Decimal("0.95"))
        assert shown.spent_by_tool == {"web_search": Decimal("0.05")}
        closed = client.tasks.close(task.task_id)
        assert closed.state == "closed" and closed.holds_released == 0
        with pytest.raises(TaskClosed):
            client.charge("web_search", task=task.task_id)
        with pytest.raises(NotFound):
            client.tasks.get("task_" + "0" * 32)
    with Client(gateway.url, ADMIN_TOKEN) as admin:
        assert [t.task_id for t in admin.tasks.list(name)] == [task.task_id]


def test_async_sdk_tasks(gateway: Gateway) -> None:
    client_name, key = new_agent(gateway, "10", "sdk-tasks")

    async def run() -> None:
        async with AsyncClient(gateway.url, key) as client:
            task = await client.tasks.open("0.1")
            await client.charge("web_search", task=task.task_id)
            with pytest.raises(LimitExceeded):
                await client.charge("web_browse", task=task.task_id)
            assert (await client.tasks.get(task.task_id)).spent == Decimal("0.05")
            assert (await client.tasks.close(task.task_id)).state == "closed"
            listed = await client.tasks.list(client_name)
            assert [t.task_id for t in listed] == [task.task_id]

    asyncio.run(run())


def test_cli_tasks(gateway: Gateway) -> None:
    name, key = new_agent(gateway, "10", "cli-tasks")
    opened = iou(gateway, "--json", "tasks", "open", "--budget", "2", "--name", "research",
                 "--max-calls", "web_browse=1", "--key", key)
    assert opened.returncode == 0, opened.stderr
    task = json.loads(opened.stdout)
    assert (task["budget"], task["max_calls"], task["state"]) == ("2", {"web_browse": 1}, "open")
    with Client(gateway.url, key) as client:
        client.charge("web_browse", task=task["task_id"])
        client.hold("web_search", task=task["task_id"])
    shown = iou(gateway, "tasks", "show", task["task_id"], "--key", key)
    assert shown.returncode == 0, shown.stderr
    assert "spent 0.12, held 0.05" in shown.stdout and "web_browse 1" in shown.stdout
    closed = iou(gateway, "--json", "tasks", "close", task["task_id"], "--key", key)
    assert closed.returncode == 0, closed.stderr
    assert json.loads(closed.stdout)["holds_released"] == 1
    listed = iou(gateway, "--token", ADMIN_TOKEN, "--json", "tasks", "list", "--agent", name)
    assert listed.returncode == 0, listed.stderr
    assert [t["state"] for t in json.loads(listed.stdout)["tasks"]] == ["closed"]
    table = iou(gateway, "--token", ADMIN_TOKEN, "tasks", "list", "--agent", name)
    assert task["task_id"] in table.stdout and "research" in table.stdout
    other = iou(gateway, "tasks", "show", "task_" + "0" * 32, "--key", key)
    assert other.returncode == 1 and "not_found" in other.stderr
    bad = iou(gateway, "tasks", "open", "--budget", "1", "--max-calls", "web", "--key", key)
    assert bad.returncode != 0 and "NAME=N" in bad.stderr


def test_demo_ends_with_a_commerce_task(gateway: Gateway) -> None:
    demo = iou(gateway, "--token", ADMIN_TOKEN, "demo", "--json")
    assert demo.returncode == 0, demo.stderr
    task = json.loads(demo.stdout)["task"]
    assert task["refusal"]["error"] == "limit_exceeded"
    assert (task["refusal"]["limit"], task["refusal"]["max"]) == ("task_calls", 1)
    assert (task["spent"], task["calls"]) == ("1.5", 1)
    shown = iou(gateway, "--token", ADMIN_TOKEN, "demo")
    assert any(line.startswith("✗ buy_item refused: limit_exceeded (task_calls")
               for line in shown.stdout.splitlines()), shown.stdout
