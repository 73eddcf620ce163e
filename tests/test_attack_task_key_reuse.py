"""Attack: a task id derived from an Idempotency-Key must not bring back a stale task.

Keyed ``POST /v1/tasks`` derives its task id from the key's binding so that concurrent
retries meet one task. A key lives 24 h; reused after that with the same body it is a new
request, yet the task it opened earlier may still exist (up to 7 days + 1): that old task
must not be answered as the new one."""

from __future__ import annotations

import uuid

from gateway.metering.engine import Engine
from tests.helpers import shift_to

DAY_MS = 86_400_000
TASK_ID = "task_" + "ab" * 16


async def test_a_derived_task_id_older_than_a_key_opens_a_new_task(clocked: Engine) -> None:
    agent = f"atk-reuse-{uuid.uuid4().hex[:8]}"
    await clocked.create_agent(agent, 5_000_000)
    first = await clocked.open_task(agent, 1_000_000, None, 7 * 86_400, None, TASK_ID)
    assert first.task_id == TASK_ID
    twin = await clocked.open_task(agent, 1_000_000, None, 7 * 86_400, None, TASK_ID)
    assert twin.task_id == TASK_ID  # a concurrent retry within the key's life: the same task
    await shift_to(clocked, first.created_ms + DAY_MS + 60_000)
    later = await clocked.open_task(agent, 1_000_000, None, 7 * 86_400, None, TASK_ID)
    assert later.task_id != TASK_ID and later.state == "open" and later.spent_micros == 0
