"""Random sequences of HTTP calls against a real gateway (a subprocess on a real Redis) and a
pure-Python model of what each call must do.

Rules: agents, funding, limits (per call, daily, category caps, calls per day for the agent
and for one tool, the rolling-hour cap, the loop breaker), freezing, single charges and batches
with and without an Idempotency-Key, the same charge repeated as a looping agent repeats it,
tasks (opened with a budget and a call count for one tool, named by charges and holds,
closed), holds, captures, releases, refunds (whole or part) of any charge or capture, debits,
retries of any earlier keyed request with its key (the model knows the first answer), a batch
item that raises inside the gateway after its charge (planted by tests/fault_entry.py) and, in
the slow variant, the gateway killed with SIGKILL between two calls (restarted on the same
Redis and data dir) and the ledger writer killed.

Time is the test clock's (IOU_TEST_CLOCK): every request is sent at the model's time, which
only the ``advance`` rule moves (by whole minutes and 3 s, at most ADVANCES_MAX times an
example, from a fixed 01:00:30 UTC, so an example never crosses midnight and no call is ever
within seconds of a window's edge): the rolling hour drops the minutes it has left, holds
expire (the gateway's sweeper releases them) and the loop breaker's window passes.

After every step, for every agent touched: the balance, held amount and today's spending
equal the model's (computed from the model, never read back), so no balance went below
zero, no daily cap was passed and no retry charged twice; and once the writer caught up,
the ledger adds up to that balance and holds every acknowledged charge exactly once; the
agent detail's ``walls`` shows the model's rolling-hour spending (spent and held) and calls
today, and each task of the agent shows the model's spent, held, calls and state.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway.metering.money import format_amount as fmt
from gateway.store.keys import TEST_CLOCK_KEY
from tests.gateway_proc import ADMIN_TOKEN, Gateway, running_gateway
from tests.http_helpers import seed_tools
from tests.servers import redis_server

FIXED = {"web_search": (50_000, "tool"), "web_browse": (120_000, "tool"),
         "buy": (1_500_000, "commerce"), "calc": (0, "tool")}
VARIABLE, VARIABLE_CATEGORY = "llm_summarize", "llm"
CATEGORIES = ("tool", "llm", "commerce")
AGENTS_MAX = 4
LEDGER_WAIT_S = 15.0
_ids = itertools.count()

costs = st.integers(min_value=0, max_value=600_000)
caps = st.one_of(st.none(), st.integers(min_value=1, max_value=3_000_000))
call_caps = st.one_of(st.none(), st.integers(min_value=1, max_value=3))
COUNTED_TOOL = "web_search"  # the tool whose calls per day the model caps
MINUTE_MS = 60_000
HOLD_TTL_MS = 3_600_000
# Each example starts at this time of the test clock (a Wednesday, 01:00:30 UTC).
START_MS = 1_796_173_230_000
ADVANCES_MAX = 8
ADVANCE_MINUTES = (1, 2, 5, 30, 59, 61, 90)
# The loop breaker the model sets: 3 repeats within 59.5 minutes (the model's times differ
# by whole minutes and multiples of 3 s, never by 59.5 minutes).
LOOP = {"repeats": 3, "window_s": 3570}
LOOP_WINDOW_MS = 3_570_000
hourly_caps = st.one_of(st.none(), st.integers(min_value=1, max_value=1_500_000))
fingerprints = st.sampled_from([None, "a"])
task_picks = st.sampled_from([None, 0, 1, 2])


def micros(text: str) -> int:
    return int(Decimal(text) * 1_000_000)


def new_key(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_ids)}"


# ---- the harness: one Redis, one gateway (restartable), its writer -------------------------

class Harness:
    """A gateway subprocess on its own Redis; restartable on the same Redis and data dir."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.data_dir = Path(tempfile.mkdtemp(prefix="iou-model-"))
        self.stack = ExitStack()
        self.extra_writers: list[subprocess.Popen[bytes]] = []
        self.gw = self._start()
        seed_tools(self.gw)

    def _start(self) -> Gateway:
        self.stack = ExitStack()
        return self.stack.enter_context(running_gateway(
            self.redis_url, data_dir=self.data_dir, fault="batch_item", IOU_TEST_CLOCK="1"))

    def pin_clock(self, at_ms: int) -> None:
        """Make the scripts' clock read ``at_ms`` now (offset from Redis's own TIME)."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            seconds, micros_ = client.time()
            client.set(TEST_CLOCK_KEY, at_ms - (seconds * 1000 + micros_ // 1000))
        finally:
            client.close()

    def writer_pids(self) -> list[int]:
        pid = self.gw.process.pid
        path = Path(f"/proc/{pid}/task/{pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def kill_gateway(self) -> None:
        """SIGKILL of `iou serve` between two calls; its orphaned writer finishes its batch
        (SIGTERM), and a new gateway starts on the same Redis and data dir."""
        writers = self.writer_pids()
        self.gw.process.send_signal(signal.SIGKILL)
        self.gw.process.wait()
        for pid in writers:
            os.kill(pid, signal.SIGTERM)
        self.stack.close()
        self.gw = self._start()

    def kill_writer(self) -> None:
        """SIGKILL of the ledger writer; a writer with the dead one's consumer name takes
        over its pending entries (what a supervisor does)."""
        for pid in self.writer_pids():
            consumer = f"{os.uname().nodename}-{pid}"
            os.kill(pid, signal.SIGKILL)
            env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
            env.update({"IOU_REDIS_URL": self.redis_url, "IOU_DATA_DIR": str(self.data_dir)})
            self.extra_writers.append(subprocess.Popen(
                [sys.executable, "-m", "gateway.cli.main", "writer", "--consumer", consumer],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def close(self) -> None:
        for proc in self.extra_writers:
            proc.terminate()
            proc.wait(20)
        self.stack.close()


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    with redis_server() as (url, _):
        h = Harness(url)
        try:
            yield h
        finally:
            h.close()


# ---- the model ---------------------------------------------------------------------------

@dataclass
class HoldModel:
    hold_id: str
    agent: str
    amount: int
    state: str = "open"
    at_ms: int = 0
    xw: bool = False  # counted in the walls (taken while the agent had walls)
    task: str | None = None


@dataclass
class TaskModel:
    task_id: str
    agent: str
    budget: int
    max_tool_calls: int | None  # max_calls of COUNTED_TOOL
    spent: int = 0
    held: int = 0
    calls: int = 0
    tool_calls: int = 0
    state: str = "open"

    def refusal(self, cost: int, tool: str) -> str | None:
        """task_refusal of lua/_lib.lua: closed, the tool's max_calls, the budget."""
        if self.state != "open":
            return "task_closed"
        if tool == COUNTED_TOOL and self.max_tool_calls is not None and (
                self.tool_calls + 1 > self.max_tool_calls):
            return "task_calls"
        if self.spent + self.held + cost > self.budget:
            return "task_budget"
        return None

    def count(self, tool: str, spent: int, held: int) -> None:
        self.calls += 1
        self.tool_calls += tool == COUNTED_TOOL
        self.spent += spent
        self.held += held


@dataclass(frozen=True)
class Call:
    """One call as the scripts check it: what it costs, of which tool, when, the arguments
    the loop breaker compares, and the task it names."""

    cost: int
    category: str
    tool: str
    now_ms: int
    loop_key: tuple[str, str | None] = ("", None)
    task: TaskModel | None = None


@dataclass
class AgentModel:
    name: str
    api_key: str
    balance: int
    frozen: bool = False
    per_call: int | None = None
    daily: int | None = None
    category_caps: dict[str, dict[str, int]] = field(default_factory=dict)
    spent: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)  # open holds, by category
    # How far spent + held already was above the daily cap when the cap was set (a cap set
    # below today's spending refuses every paid call; it cannot undo what was spent).
    daily_excess: int = 0
    # Calls a day (the agent's, and COUNTED_TOOL's). They are walls beyond the balance: the
    # scripts count calls only while the agent has one set, so the model does too.
    calls_per_day: int | None = None
    tool_calls_per_day: int | None = None
    calls_today: int = 0
    tool_calls_today: int = 0
    # The rolling hour: spent by minute while the walls were on, and held by holds taken then.
    hourly: int | None = None
    minute_spent: dict[int, int] = field(default_factory=dict)
    held_walls: int = 0
    # The loop breaker (LOOP when on): the times of the calls that passed, by arguments.
    loop_on: bool = False
    loop_calls: dict[tuple[str, str | None], list[int]] = field(default_factory=dict)
    charges: int = 0  # ledger rows of kind charge (free calls included)
    captures: int = 0
    refunds: int = 0
    debits: int = 0
    acknowledged: set[str] = field(default_factory=set)  # charge ids the client was given

    @property
    def walls_on(self) -> bool:
        return (self.calls_per_day is not None or self.tool_calls_per_day is not None
                or self.hourly is not None)

    def hour_used(self, now_ms: int) -> int:
        """Spent in the minutes of the rolling hour, and held by holds counted in the walls."""
        minute = now_ms // MINUTE_MS
        return sum(v for m, v in self.minute_spent.items() if m > minute - 60) + self.held_walls

    def looped(self, call: Call) -> bool:
        times = self.loop_calls.get(call.loop_key, [])
        repeats = int(LOOP["repeats"])
        return self.loop_on and len(times) >= repeats and (
            times[-repeats] > call.now_ms - LOOP_WINDOW_MS)

    def refusal(self, call: Call) -> str | None:
        """The outcome charge.lua / hold.lua must give for ``call``, in the scripts' order:
        frozen (paid calls), the loop breaker, per-call caps, daily caps (paid calls), then
        the call caps (free calls too), the rolling hour, the task, then the balance."""
        cost, category, tool = call.cost, call.category, call.tool
        caps = self.category_caps.get(category, {})
        if cost > 0 and self.frozen:
            return "agent_frozen"
        if self.looped(call):
            return "loop_detected"
        if cost > 0 and self.per_call is not None and cost > self.per_call:
            return "per_call"
        if cost > 0 and "per_call" in caps and cost > caps["per_call"]:
            return "category_per_call"
        if cost > 0 and self.daily is not None and sum(self.spent.values()) + sum(
                self.held.values()) + cost > self.daily:
            return "daily"
        if cost > 0 and "daily" in caps and self.spent.get(category, 0) + self.held.get(
                category, 0) + cost > caps["daily"]:
            return "category_daily"
        if self.walls_on and self.calls_per_day is not None and (
                self.calls_today + 1 > self.calls_per_day):
            return "calls_per_day"
        if self.walls_on and tool == COUNTED_TOOL and self.tool_calls_per_day is not None and (
                self.tool_calls_today + 1 > self.tool_calls_per_day):
            return "calls_per_day"
        if cost > 0 and self.walls_on and self.hourly is not None and (
                self.hour_used(call.now_ms) + cost > self.hourly):
            return "hourly"
        refused = None if call.task is None else call.task.refusal(cost, tool)
        if refused is not None:
            return refused
        if cost > self.balance:
            return "balance_insufficient"
        return None

    def count_call(self, call: Call) -> None:
        """A call that passed: the call caps' and the loop breaker's counts."""
        if self.walls_on:
            self.calls_today += 1
            self.tool_calls_today += call.tool == COUNTED_TOOL
        if self.loop_on:
            self.loop_calls.setdefault(call.loop_key, []).append(call.now_ms)

    def spend_in_hour(self, cost: int, now_ms: int) -> None:
        if self.walls_on and cost > 0:
            minute = now_ms // MINUTE_MS
            self.minute_spent[minute] = self.minute_spent.get(minute, 0) + cost

    def charge(self, call: Call) -> None:
        self.balance -= call.cost
        self.spent[call.category] = self.spent.get(call.category, 0) + call.cost
        self.charges += 1
        self.spend_in_hour(call.cost, call.now_ms)
        self.count_call(call)
        if call.task is not None:
            call.task.count(call.tool, call.cost, 0)


@dataclass
class ChargeModel:
    """An acknowledged charge or capture, for refunds."""

    agent: str
    cost: int
    category: str
    refunded: int = 0
    minute: int = 0  # when it was charged (a refund gives back to that minute's spending)
    task: str | None = None


@dataclass
class Sent:
    """A keyed request and the first successful answer(s) the model knows of it."""

    kind: str
    agent: str
    key: str
    args: dict[str, Any]
    answer: dict[str, Any] | None = None
    items: list[dict[str, Any] | None] = field(default_factory=list)


def outcome(body: dict[str, Any]) -> str:
    return str(body.get("limit", body.get("error")))


class HttpModel(RuleBasedStateMachine):
    harness: Harness
    faults = False  # the slow variant kills processes too

    def __init__(self) -> None:
        super().__init__()
        self.agents: dict[str, AgentModel] = {}
        self.sent: list[Sent] = []
        self.holds: list[HoldModel] = []
        self.charged: dict[str, ChargeModel] = {}
        self.tasks: dict[str, TaskModel] = {}
        self.touched: set[str] = set()
        self.now_ms = START_MS
        self.advances = 0
        self.last_charge: tuple[AgentModel, dict[str, Any]] | None = None
        for _ in range(2):
            self._create(grant=3_000_000, key=None)
        # One agent starts under call caps, the other under the rolling hour and the loop
        # breaker with a small task open, so that the few steps of an example reach them.
        first, second = (self.agents[n] for n in sorted(self.agents))
        self._set_call_caps(first, 3, 1)
        self.patch_limits(first, {"loop": LOOP})
        first.loop_on = True
        self.patch_limits(second, {"hourly": fmt(400_000), "loop": LOOP})
        second.hourly, second.loop_on = 400_000, True
        self._open_task(second, 100_000, 1)

    # ---- plumbing -------------------------------------------------------------------

    def post(self, path: str, body: Any, api_key: str | None = None,
             key: str | None = None) -> httpx.Response:
        token = api_key or ADMIN_TOKEN
        headers = {"authorization": f"Bearer {token}"}
        if key is not None:
            headers["idempotency-key"] = key
        self.harness.pin_clock(self.now_ms)
        with httpx.Client(base_url=self.harness.gw.url, timeout=30) as client:
            return client.post(path, json=body, headers=headers)

    def patch_limits(self, a: AgentModel, body: dict[str, Any]) -> None:
        with httpx.Client(base_url=self.harness.gw.url, timeout=30) as client:
            response = client.patch(f"/v1/agents/{a.name}/limits", json=body,
                                    headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        assert response.status_code == 200, response.text

    def task_of(self, a: AgentModel, pick: int | None) -> TaskModel | None:
        """One of the agent's tasks (open or closed), or None."""
        mine = sorted(t for t, task in self.tasks.items() if task.agent == a.name)
        return None if pick is None or not mine else self.tasks[mine[pick % len(mine)]]

    def admin_get(self, path: str, **params: str) -> Any:
        with httpx.Client(base_url=self.harness.gw.url, timeout=30,
                          headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
            response = client.get(path, params=params)
            assert response.status_code == 200, response.text
            return response.json()

    def agent(self, index: int) -> AgentModel:
        names = sorted(self.agents)
        a = self.agents[names[index % len(names)]]
        self.touched.add(a.name)
        return a

    # ---- agents, funds, limits, freezing --------------------------------------------

    def _create(self, grant: int, key: str | None) -> None:
        name = new_key("model").replace("-", ".")
        body = {"name": name, "grant": fmt(grant)}
        response = self.post("/v1/agents", body, key=key)
        assert response.status_code == 201, response.text
        created = response.json()
        assert created["balance"] == fmt(grant) and created["api_key"]
        self.agents[name] = AgentModel(name, created["api_key"], grant)
        self.touched.add(name)
        if key is not None:
            self.sent.append(Sent("create", name, key, body, created))

    @precondition(lambda self: len(self.agents) < AGENTS_MAX)
    @rule(grant=st.integers(min_value=0, max_value=5_000_000), keyed=st.booleans())
    def create_agent(self, grant: int, keyed: bool) -> None:
        self._create(grant, new_key("create") if keyed else None)

    @rule(who=st.integers(0, 9), amount=st.integers(min_value=1, max_value=2_000_000),
          keyed=st.booleans())
    def fund(self, who: int, amount: int, keyed: bool) -> None:
        a = self.agent(who)
        sent = Sent("fund", a.name, new_key("fund"), {"amount": fmt(amount)}) if keyed else None
        self._fund(a, amount, sent)
        if sent is not None:
            self.sent.append(sent)

    def _fund(self, a: AgentModel, amount: int, sent: Sent | None) -> None:
        response = self.post(f"/v1/agents/{a.name}/fund", {"amount": fmt(amount)},
                             key=sent.key if sent else None)
        assert response.status_code == 200, response.text
        if sent is not None and sent.answer is not None:
            assert response.json() == sent.answer  # replayed: added once
            return
        a.balance += amount
        assert response.json()["balance"] == fmt(a.balance)
        if sent is not None:
            sent.answer = response.json()

    @rule(who=st.integers(0, 9), per_call=caps, daily=caps,
          category=st.sampled_from(CATEGORIES), category_per_call=caps, category_daily=caps)
    def set_limits(self, who: int, per_call: int | None, daily: int | None, category: str,
                   category_per_call: int | None, category_daily: int | None) -> None:
        a = self.agent(who)
        cat = {"per_call": None if category_per_call is None else fmt(category_per_call),
               "daily": None if category_daily is None else fmt(category_daily)}
        body = {"per_call": None if per_call is None else fmt(per_call),
                "daily": None if daily is None else fmt(daily), "categories": {category: cat}}
        with httpx.Client(base_url=self.harness.gw.url, timeout=30) as client:
            response = client.patch(f"/v1/agents/{a.name}/limits", json=body,
                                    headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        assert response.status_code == 200, response.text
        a.per_call, a.daily = per_call, daily
        total = sum(a.spent.values()) + sum(a.held.values())
        a.daily_excess = 0 if daily is None else max(0, total - daily)
        a.category_caps[category] = {k: v for k, v in (("per_call", category_per_call),
                                                       ("daily", category_daily)) if v}

    @rule(who=st.integers(0, 9), per_day=call_caps, tool_per_day=call_caps)
    def set_call_caps(self, who: int, per_day: int | None, tool_per_day: int | None) -> None:
        self._set_call_caps(self.agent(who), per_day, tool_per_day)

    def _set_call_caps(self, a: AgentModel, per_day: int | None, tool_per_day: int | None
                       ) -> None:
        body = {"calls": {"per_day": per_day},
                "tools": {COUNTED_TOOL: {"calls": {"per_day": tool_per_day}}}}
        with httpx.Client(base_url=self.harness.gw.url, timeout=30) as client:
            response = client.patch(f"/v1/agents/{a.name}/limits", json=body,
                                    headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        assert response.status_code == 200, response.text
        a.calls_per_day, a.tool_calls_per_day = per_day, tool_per_day

    @rule(who=st.integers(0, 9), hourly=hourly_caps, loop=st.booleans())
    def set_walls(self, who: int, hourly: int | None, loop: bool) -> None:
        """The rolling-hour cap and the loop breaker (LOOP or none)."""
        a = self.agent(who)
        self.patch_limits(a, {"hourly": None if hourly is None else fmt(hourly),
                              "loop": LOOP if loop else None})
        a.hourly, a.loop_on = hourly, loop

    # ---- tasks ----------------------------------------------------------------------

    @rule(who=st.integers(0, 9), budget=st.integers(min_value=1, max_value=2_000_000),
          max_tool_calls=st.one_of(st.none(), st.integers(1, 3)))
    def open_task(self, who: int, budget: int, max_tool_calls: int | None) -> None:
        self._open_task(self.agent(who), budget, max_tool_calls)

    def _open_task(self, a: AgentModel, budget: int, max_tool_calls: int | None) -> None:
        body: dict[str, Any] = {"budget": fmt(budget), "ttl_s": 604800}
        if max_tool_calls is not None:
            body["max_calls"] = {COUNTED_TOOL: max_tool_calls}
        response = self.post("/v1/tasks", body, a.api_key)
        assert response.status_code == 201, response.text
        got = response.json()
        assert (got["budget"], got["spent"], got["held"], got["calls"], got["state"]) == (
            fmt(budget), "0", "0", 0, "open"), got
        self.tasks[got["task_id"]] = TaskModel(got["task_id"], a.name, budget, max_tool_calls)

    @precondition(lambda self: bool(self.tasks))
    @rule(which=st.integers(0, 99))
    def close_task(self, which: int) -> None:
        t = self.tasks[sorted(self.tasks)[which % len(self.tasks)]]
        a = self.agents[t.agent]
        self.touched.add(a.name)
        response = self.post(f"/v1/tasks/{t.task_id}/close", None, a.api_key)
        assert response.status_code == 200, response.text
        released = [h for h in self.holds if h.task == t.task_id and h.state == "open"]
        for h in released:  # the close releases the task's open holds
            self._close_hold(h, "released", 0)
        t.state = "closed"
        got = response.json()
        assert (got["state"], got["spent"], got["held"], got["holds_released"]) == (
            "closed", fmt(t.spent), "0", len(released)), got

    # ---- the clock ------------------------------------------------------------------

    @precondition(lambda self: self.advances < ADVANCES_MAX)
    @rule(minutes=st.sampled_from(ADVANCE_MINUTES))
    def advance(self, minutes: int) -> None:
        """Move the clock on; the gateway's sweeper expires the holds whose time has come
        (waited for: it runs every 0.25 s)."""
        self.advances += 1
        self.now_ms += minutes * MINUTE_MS + 3000
        self.harness.pin_clock(self.now_ms)
        expired = [h for h in self.holds if h.state == "open"
                   and h.at_ms + HOLD_TTL_MS <= self.now_ms]
        for h in expired:
            self._close_hold(h, "expired", 0)
            self.touched.add(h.agent)
        deadline = time.monotonic() + LEDGER_WAIT_S
        for name in sorted({h.agent for h in expired}):
            a = self.agents[name]
            while micros(self.admin_get(f"/v1/agents/{name}")["held"]) != sum(a.held.values()):
                assert time.monotonic() < deadline, f"holds of {name} not expired"
                time.sleep(0.05)

    @rule(who=st.integers(0, 9), frozen=st.booleans(), keyed=st.booleans())
    def freeze(self, who: int, frozen: bool, keyed: bool) -> None:
        a = self.agent(who)
        sent = Sent("freeze", a.name, new_key("freeze"), {"frozen": frozen}) if keyed else None
        self._freeze(a, frozen, sent)
        if sent is not None:
            self.sent.append(sent)

    def _freeze(self, a: AgentModel, frozen: bool, sent: Sent | None) -> None:
        path = f"/v1/agents/{a.name}/{'freeze' if frozen else 'unfreeze'}"
        response = self.post(path, None, key=sent.key if sent else None)
        assert response.status_code == 200, response.text
        if sent is not None and sent.answer is not None:
            assert response.json() == sent.answer  # replayed: changes nothing now
            return
        assert response.json() == {"agent": a.name, "frozen": frozen}
        a.frozen = frozen
        if sent is not None:
            sent.answer = response.json()

    # ---- charges and batches --------------------------------------------------------

    @rule(who=st.integers(0, 9), tool=st.sampled_from([*sorted(FIXED), VARIABLE]),
          cost=costs, keyed=st.booleans(), fingerprint=fingerprints, task=task_picks)
    def charge(self, who: int, tool: str, cost: int, keyed: bool,
               fingerprint: str | None, task: int | None) -> None:
        a = self.agent(who)
        body: dict[str, Any] = {"tool": tool}
        if tool == VARIABLE:
            body["cost"] = fmt(cost)
        if fingerprint is not None:
            body["fingerprint"] = fingerprint
        named = self.task_of(a, task)
        if named is not None:
            body["task"] = named.task_id
        sent = Sent("charge", a.name, new_key("charge"), body) if keyed else None
        self._charge(a, body, sent)
        self.last_charge = (a, body)
        if sent is not None:
            self.sent.append(sent)

    @precondition(lambda self: self.last_charge is not None)
    @rule(times=st.integers(1, 4))
    def charge_again(self, times: int) -> None:
        """The same call again, ``times`` times, as a looping agent makes it (new requests,
        no key): what the loop breaker, call caps and task counts are for."""
        assert self.last_charge is not None
        a, body = self.last_charge
        self.touched.add(a.name)
        for _ in range(times):
            self._charge(a, body, None)

    def _charge(self, a: AgentModel, body: dict[str, Any], sent: Sent | None) -> None:
        response = self.post("/v1/charge", body, a.api_key, sent.key if sent else None)
        if sent is not None and sent.answer is not None:
            assert response.status_code == 200 and response.json() == sent.answer
            return
        expected = self._expect_item(a, body)
        got = response.json()
        self._check_item(expected, got)
        if "charge_id" in got and sent is not None:
            sent.answer = got

    def _expect_item(self, a: AgentModel, item: dict[str, Any]) -> dict[str, Any]:
        """What one charge must answer now, applied to the model when it succeeds."""
        tool = item["tool"]
        cost, category = ((micros(item["cost"]), VARIABLE_CATEGORY) if tool == VARIABLE
                          else FIXED[tool])
        # The loop breaker's arguments: the fingerprint, else the metadata, else none.
        args = (f"f:{item['fingerprint']}" if "fingerprint" in item
                else "m" if "metadata" in item else None)
        task = self.tasks[item["task"]] if "task" in item else None
        call = Call(cost, category, tool, self.now_ms, (tool, args), task)
        refused = a.refusal(call)
        if refused is not None:
            return {"outcome": refused}
        a.charge(call)
        return {"cost": fmt(cost), "balance": fmt(a.balance), "agent": a,
                "category": category, "task": item.get("task")}

    def _check_item(self, expected: dict[str, Any], got: dict[str, Any]) -> None:
        if "outcome" in expected:
            assert "charge_id" not in got and outcome(got) == expected["outcome"], (expected,
                                                                                    got)
            return
        assert (got.get("cost"), got.get("balance")) == (expected["cost"], expected["balance"]
                                                         ), (expected, got)
        self._acknowledge(expected["agent"], got["charge_id"], micros(expected["cost"]),
                          expected["category"], expected["task"])

    def _acknowledge(self, a: AgentModel, charge_id: str, cost: int, category: str,
                     task: str | None = None) -> None:
        a.acknowledged.add(charge_id)
        self.charged[charge_id] = ChargeModel(a.name, cost, category,
                                              minute=self.now_ms // MINUTE_MS, task=task)

    @rule(who=st.integers(0, 9), tools=st.lists(st.sampled_from([*sorted(FIXED), VARIABLE]),
                                                min_size=1, max_size=6),
          cost=costs, keyed=st.booleans(), fault=st.one_of(st.none(), st.integers(0, 5)))
    def batch(self, who: int, tools: list[str], cost: int, keyed: bool, fault: int | None
              ) -> None:
        a = self.agent(who)
        items: list[dict[str, Any]] = []
        for i, tool in enumerate(tools):
            item: dict[str, Any] = {"tool": tool}
            if tool == VARIABLE:
                item["cost"] = fmt(cost)
            if i == fault:  # raises inside the gateway after its charge, the first time
                item["metadata"] = {"iou_fault": "raise"}
            items.append(item)
        sent = Sent("batch", a.name, new_key("batch"), {"charges": items},
                    items=[None] * len(items)) if keyed else None
        self._batch(a, items, sent)
        if sent is not None:
            self.sent.append(sent)

    def _batch(self, a: AgentModel, items: list[dict[str, Any]], sent: Sent | None) -> None:
        response = self.post("/v1/charges", {"charges": items}, a.api_key,
                             sent.key if sent else None)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert len(results) == len(items)
        for i, (item, got) in enumerate(zip(items, results, strict=True)):
            first = sent.items[i] if sent is not None else None
            if first is not None and first.get("charge_id") is None:
                # Charged before, but the fault hid its answer: the retry shows it, once.
                assert (got.get("cost"), got.get("balance")) == (first["cost"],
                                                                 first["balance"]), got
                self._acknowledge(a, got["charge_id"], micros(got["cost"]), first["category"])
                sent.items[i] = got  # type: ignore[union-attr]
                continue
            if first is not None:  # charged before: its first answer, charged once
                assert got == first, (got, first)
                continue
            expected = self._expect_item(a, item)
            if "outcome" not in expected and "metadata" in item:
                assert got["error"] == "internal", got  # charged, but its answer was lost
                if sent is not None:
                    sent.items[i] = {"charge_id": None, "tool": item["tool"],
                                     "cost": expected["cost"], "balance": expected["balance"],
                                     "category": expected["category"]}
                continue
            self._check_item(expected, got)
            if sent is not None and "charge_id" in got:
                sent.items[i] = got

    # ---- holds ----------------------------------------------------------------------

    @rule(who=st.integers(0, 9), amount=st.integers(min_value=1, max_value=800_000),
          keyed=st.booleans(), task=task_picks)
    def hold(self, who: int, amount: int, keyed: bool, task: int | None) -> None:
        a = self.agent(who)
        body: dict[str, Any] = {"tool": VARIABLE, "max_cost": fmt(amount), "ttl_s": 3600}
        named = self.task_of(a, task)
        if named is not None:
            body["task"] = named.task_id
        sent = Sent("hold", a.name, new_key("hold"), body) if keyed else None
        self._hold(a, body, sent)
        if sent is not None:
            self.sent.append(sent)

    def _hold(self, a: AgentModel, body: dict[str, Any], sent: Sent | None) -> None:
        response = self.post("/v1/holds", body, a.api_key, sent.key if sent else None)
        if sent is not None and sent.answer is not None:
            assert response.status_code == 201 and response.json() == sent.answer
            return
        amount = micros(body["max_cost"])
        task = self.tasks[body["task"]] if "task" in body else None
        call = Call(amount, VARIABLE_CATEGORY, VARIABLE, self.now_ms, (VARIABLE, None), task)
        refused = a.refusal(call)
        if refused is not None:
            assert response.status_code >= 400 and outcome(response.json()) == refused, (
                refused, response.text)
            return
        assert response.status_code == 201, response.text
        a.count_call(call)
        a.balance -= amount
        a.held[VARIABLE_CATEGORY] = a.held.get(VARIABLE_CATEGORY, 0) + amount
        if a.walls_on:
            a.held_walls += amount
        if task is not None:
            task.count(VARIABLE, 0, amount)
        got = response.json()
        assert (got["amount"], got["balance"]) == (fmt(amount), fmt(a.balance))
        self.holds.append(HoldModel(got["hold_id"], a.name, amount, at_ms=self.now_ms,
                                    xw=a.walls_on, task=body.get("task")))
        if sent is not None:
            sent.answer = got

    @precondition(lambda self: bool(self.holds))
    @rule(which=st.integers(0, 99), cost=st.integers(min_value=0, max_value=900_000),
          keyed=st.booleans())
    def capture(self, which: int, cost: int, keyed: bool) -> None:
        h = self.holds[which % len(self.holds)]
        sent = Sent("capture", h.agent, new_key("capture"),
                    {"hold": h, "cost": cost}) if keyed else None
        self._capture(h, cost, sent)
        if sent is not None:
            self.sent.append(sent)

    def _capture(self, h: HoldModel, cost: int, sent: Sent | None) -> None:
        a = self.agents[h.agent]
        self.touched.add(a.name)
        response = self.post(f"/v1/holds/{h.hold_id}/capture", {"cost": fmt(cost)},
                             a.api_key, sent.key if sent else None)
        if sent is not None and sent.answer is not None:
            assert response.status_code == 200 and response.json() == sent.answer
            return
        if h.state != "open":
            assert response.status_code == 409 and outcome(response.json()) == "hold_closed"
            return
        if cost > h.amount:
            assert response.status_code == 422, response.text
            return
        if (a.walls_on and not h.xw and a.hourly is not None and cost > 0
                and a.hour_used(self.now_ms) + cost > a.hourly):
            # A hold the walls did not count is checked against the hour it lands in.
            assert response.status_code == 429 and outcome(response.json()) == "hourly"
            return
        assert response.status_code == 200, response.text
        self._close_hold(h, "captured", cost)
        a.spent[VARIABLE_CATEGORY] = a.spent.get(VARIABLE_CATEGORY, 0) + cost
        a.spend_in_hour(cost, self.now_ms)
        a.captures += 1
        got = response.json()
        assert (got["cost"], got["balance"]) == (fmt(cost), fmt(a.balance))
        self._acknowledge(a, got["charge_id"], cost, VARIABLE_CATEGORY, h.task)
        if sent is not None:
            sent.answer = got

    @precondition(lambda self: bool(self.holds))
    @rule(which=st.integers(0, 99), keyed=st.booleans())
    def release(self, which: int, keyed: bool) -> None:
        h = self.holds[which % len(self.holds)]
        sent = Sent("release", h.agent, new_key("release"), {"hold": h}) if keyed else None
        self._release(h, sent)
        if sent is not None:
            self.sent.append(sent)

    def _release(self, h: HoldModel, sent: Sent | None) -> None:
        a = self.agents[h.agent]
        self.touched.add(a.name)
        response = self.post(f"/v1/holds/{h.hold_id}/release", None, a.api_key,
                             sent.key if sent else None)
        if sent is not None and sent.answer is not None:
            assert response.status_code == 200 and response.json() == sent.answer
            return
        if h.state != "open":
            assert response.status_code == 409, response.text
            return
        assert response.status_code == 200, response.text
        self._close_hold(h, "released", 0)
        assert response.json() == {"released": fmt(h.amount), "balance": fmt(a.balance)}
        if sent is not None:
            sent.answer = response.json()

    def _close_hold(self, h: HoldModel, state: str, cost: int) -> None:
        """hold_close of lua/_lib.lua: what was not spent back to the balance, the hold's
        amount out of held, the walls' held and its task's held (its cost into the task's
        spending)."""
        a = self.agents[h.agent]
        h.state = state
        a.balance += h.amount - cost
        a.held[VARIABLE_CATEGORY] -= h.amount
        if h.xw:
            a.held_walls -= h.amount
        if h.task is not None:
            t = self.tasks[h.task]
            t.held -= h.amount
            t.spent += cost

    # ---- refunds and debits (admin) -------------------------------------------------

    @precondition(lambda self: bool(self.charged))
    @rule(which=st.integers(0, 999), part=st.one_of(st.none(), st.integers(1, 150_000)),
          keyed=st.booleans())
    def refund(self, which: int, part: int | None, keyed: bool) -> None:
        charge_id = sorted(self.charged)[which % len(self.charged)]
        c = self.charged[charge_id]
        args = {"charge_id": charge_id, "part": part}
        sent = Sent("refund", c.agent, new_key("refund"), args) if keyed else None
        self._refund(charge_id, part, sent)
        if sent is not None:
            self.sent.append(sent)

    def _refund(self, charge_id: str, part: int | None, sent: Sent | None) -> None:
        c = self.charged[charge_id]
        a = self.agents[c.agent]
        self.touched.add(a.name)
        body = {"reason": "model"} if part is None else {"amount": fmt(part), "reason": "model"}
        response = self.post(f"/v1/charges/{charge_id}/refund", body,
                             key=sent.key if sent else None)
        if sent is not None and sent.answer is not None:
            assert response.status_code == 200 and response.json() == sent.answer
            return
        left = c.cost - c.refunded
        amount = left if part is None else part
        if amount == 0 or amount > left:
            assert response.status_code == 422, response.text
            assert response.json()["field"] == "amount", response.text
            return
        assert response.status_code == 200, response.text
        c.refunded += amount
        a.balance += amount
        a.spent[c.category] -= amount  # today's window: the model never crosses midnight
        minute = self.now_ms // MINUTE_MS
        if c.minute in a.minute_spent and c.minute > minute - 60:  # the hour's, if current
            a.minute_spent[c.minute] = max(0, a.minute_spent[c.minute] - amount)
        if c.task is not None and self.tasks[c.task].state == "open":
            t = self.tasks[c.task]
            t.spent = max(0, t.spent - amount)
        a.refunds += 1
        got = response.json()
        assert (got["charge_id"], got["agent"], got["amount"], got["balance"]) == (
            charge_id, a.name, fmt(amount), fmt(a.balance)), got
        if sent is not None:
            sent.answer = got

    @rule(who=st.integers(0, 9), amount=st.integers(min_value=1, max_value=2_000_000),
          keyed=st.booleans())
    def debit(self, who: int, amount: int, keyed: bool) -> None:
        a = self.agent(who)
        sent = Sent("debit", a.name, new_key("debit"), {"amount": amount}) if keyed else None
        self._debit(a, amount, sent)
        if sent is not None:
            self.sent.append(sent)

    def _debit(self, a: AgentModel, amount: int, sent: Sent | None) -> None:
        response = self.post(f"/v1/agents/{a.name}/debit",
                             {"amount": fmt(amount), "reason": "model"},
                             key=sent.key if sent else None)
        if sent is not None and sent.answer is not None:
            assert response.status_code == 200 and response.json() == sent.answer
            return
        if amount > a.balance:
            assert response.status_code == 402, response.text
            assert response.json()["error"] == "balance_insufficient"
            return
        assert response.status_code == 200, response.text
        a.balance -= amount
        a.debits += 1
        assert response.json()["balance"] == fmt(a.balance), response.text
        if sent is not None:
            sent.answer = response.json()

    # ---- retries of keyed requests --------------------------------------------------

    @precondition(lambda self: bool(self.sent))
    @rule(which=st.integers(0, 999))
    def retry(self, which: int) -> None:
        """Send an earlier keyed request again, with its key and body."""
        sent = self.sent[which % len(self.sent)]
        a = self.agents[sent.agent]
        self.touched.add(a.name)
        if sent.kind == "create":
            response = self.post("/v1/agents", sent.args, key=sent.key)
            assert response.status_code == 201, response.text
            assert response.json() == {**sent.answer, "api_key": None,  # type: ignore[dict-item]
                                       "api_key_note": response.json()["api_key_note"]}
        elif sent.kind == "fund":
            self._fund(a, micros(sent.args["amount"]), sent)
        elif sent.kind == "freeze":
            self._freeze(a, sent.args["frozen"], sent)
        elif sent.kind == "charge":
            self._charge(a, sent.args, sent)
        elif sent.kind == "batch":
            self._batch(a, sent.args["charges"], sent)
        elif sent.kind == "hold":
            self._hold(a, sent.args, sent)
        elif sent.kind == "capture":
            self._capture(sent.args["hold"], sent.args["cost"], sent)
        elif sent.kind == "refund":
            self._refund(sent.args["charge_id"], sent.args["part"], sent)
        elif sent.kind == "debit":
            self._debit(a, sent.args["amount"], sent)
        else:
            self._release(sent.args["hold"], sent)

    # ---- process faults (slow variant) ----------------------------------------------

    @precondition(lambda self: self.faults)
    @rule()
    def kill_gateway(self) -> None:
        self.harness.kill_gateway()

    @precondition(lambda self: self.faults)
    @rule()
    def kill_writer(self) -> None:
        self.harness.kill_writer()

    # ---- invariants -----------------------------------------------------------------

    @invariant()
    def store_and_ledger_equal_model(self) -> None:
        """One invariant, in this order: hypothesis runs separate invariants sorted by name,
        and the ledger's check clears ``touched`` (the Redis check would then see nothing)."""
        self._redis_equals_model()
        self._ledger_equals_model()
        self.touched.clear()

    def _redis_equals_model(self) -> None:
        for name in sorted(self.touched):
            a = self.agents[name]
            state = self.admin_get(f"/v1/agents/{name}")
            assert micros(state["balance"]) == a.balance >= 0, (name, state)
            assert micros(state["held"]) == sum(a.held.values()), (name, state)
            assert micros(state["spent_today"]) == sum(a.spent.values()), (name, state)
            if a.daily is not None:  # the cap, as the server counts today
                assert micros(state["spent_today"]) + micros(state["held"]) <= (
                    a.daily + a.daily_excess), (name, state, a.daily)
            assert state["frozen"] == a.frozen
            walls = state["walls"]
            if a.hourly is not None:  # what the next call is checked against
                assert walls["hourly"] == {"used": fmt(a.hour_used(self.now_ms)),
                                           "max": fmt(a.hourly)}, (name, walls)
            if a.calls_per_day is not None:
                assert walls["calls"]["per_day"]["used"] == a.calls_today, (name, walls)
            self._tasks_equal_model(a)

    def _tasks_equal_model(self, a: AgentModel) -> None:
        for t in (t for t in self.tasks.values() if t.agent == a.name):
            with httpx.Client(base_url=self.harness.gw.url, timeout=30) as client:
                shown = client.get(f"/v1/tasks/{t.task_id}",
                                   headers={"authorization": f"Bearer {a.api_key}"}).json()
            assert (shown["spent"], shown["held"], shown["calls"], shown["state"]) == (
                fmt(t.spent), fmt(t.held), t.calls, t.state), (t, shown)

    def _ledger_equals_model(self) -> None:
        deadline = time.monotonic() + LEDGER_WAIT_S
        for name in sorted(self.touched):
            a = self.agents[name]
            while True:
                entries = self._ledger(name)
                kinds = [e["kind"] for e in entries]
                caught_up = (kinds.count("charge") >= a.charges
                             and kinds.count("capture") >= a.captures
                             and kinds.count("refund") >= a.refunds
                             and kinds.count("debit") >= a.debits
                             and ledger_balance(entries) == a.balance)
                if caught_up or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            ids = [e["entry_id"] for e in entries]
            assert len(ids) == len(set(ids)), name
            assert (kinds.count("charge"), kinds.count("capture"), kinds.count("refund"),
                    kinds.count("debit")) == (a.charges, a.captures, a.refunds, a.debits)
            assert ledger_balance(entries) == a.balance, (name, entries)
            charged = {e["entry_id"] for e in entries if e["kind"] in ("charge", "capture")}
            assert a.acknowledged <= charged, a.acknowledged - charged

    def _ledger(self, agent: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        params = {"limit": "1000"}
        while True:
            page = self.admin_get(f"/v1/agents/{agent}/ledger", **params)
            entries += page["entries"]
            if page["next_cursor"] is None:
                return entries
            params["before"] = page["next_cursor"]


def ledger_balance(entries: list[dict[str, Any]]) -> int:
    """What the ledger says the balance is: grants, funds and refunds in, charges, holds and
    debits out, a hold's amount back when it closes, less its captured cost."""
    held = {e["hold_id"]: micros(e["amount"]) for e in entries if e["kind"] == "hold"}
    total = 0
    for e in entries:
        amount = micros(e["amount"]) if e["amount"] is not None else 0
        if e["kind"] in ("grant", "fund", "refund"):
            total += amount
        elif e["kind"] in ("charge", "hold", "debit"):
            total -= amount
        elif e["kind"] in ("release", "expire"):
            total += amount
        elif e["kind"] == "capture":
            total += held[e["hold_id"]] - amount
    return total


def run_machine(harness: Harness, examples: int, steps: int, faults: bool) -> None:
    HttpModel.harness = harness
    HttpModel.faults = faults
    test_case = HttpModel.TestCase
    test_case.settings = settings(max_examples=examples, stateful_step_count=steps,
                                  deadline=None, derandomize=not faults,
                                  suppress_health_check=list(HealthCheck))
    test_case().runTest()


def test_http_api_matches_model(harness: Harness) -> None:
    run_machine(harness, examples=10, steps=20, faults=False)


@pytest.mark.slow
def test_http_api_matches_model_with_kills(harness: Harness) -> None:
    run_machine(harness, examples=15, steps=30, faults=True)
