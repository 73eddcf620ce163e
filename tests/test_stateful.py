"""Random sequences of operations against the real scripts and a pure-Python model.

After every step the balance, held amount and today's spending of every agent in Redis
equal the model's. Expiry is driven by moving a hold's expiry into the past (the test's
stand-in for waiting) and running the real sweeper script.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from gateway.metering import errors
from gateway.metering.engine import Engine
from tests.conftest import make_engine
from tests.helpers import setup_catalog

R = TypeVar("R")
AGENTS = ("m1", "m2")
PRICES = {"web_search": 50_000, "buy": 70_000, "calc": 0}
CATEGORY = {"web_search": "tool", "buy": "commerce", "calc": "tool",
            "llm_summarize": "llm"}
amounts = st.integers(min_value=1, max_value=400_000)


@dataclass
class AgentModel:
    balance: int
    held: int = 0
    spent: int = 0
    held_today: int = 0
    frozen: bool = False
    per_call: int | None = None
    daily: int | None = None


@dataclass
class HoldModel:
    hold_id: str
    agent: str
    amount: int
    state: str = "open"


@dataclass
class Model:
    agents: dict[str, AgentModel] = field(default_factory=dict)

    def paid_refusal(self, agent: str, cost: int) -> str | None:
        a = self.agents[agent]
        if a.frozen:
            return "agent_frozen"
        if a.per_call is not None and cost > a.per_call:
            return "per_call"
        if a.daily is not None and a.spent + a.held_today + cost > a.daily:
            return "daily"
        if cost > a.balance:
            return "balance_insufficient"
        return None


def outcome_of(exc: errors.GatewayError) -> str:
    return str(exc.details.get("limit", exc.code))


class MeteringMachine(RuleBasedStateMachine):
    url = ""
    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.engine: Engine = self.run(make_engine(self.url))
        self.run(setup_catalog(self.engine))
        self.model = Model()
        for agent in AGENTS:
            self.run(self.engine.create_agent(agent, grant_micros=1_000_000))
            self.model.agents[agent] = AgentModel(balance=1_000_000)

    def run(self, coro: Coroutine[Any, Any, R]) -> R:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.engine.conn.close()
        self.loop.close()

    @rule(agent=st.sampled_from(AGENTS), amount=amounts)
    def fund(self, agent: str, amount: int) -> None:
        self.run(self.engine.fund(agent, amount))
        self.model.agents[agent].balance += amount

    @rule(agent=st.sampled_from(AGENTS), tool=st.sampled_from(sorted(PRICES)))
    def charge(self, agent: str, tool: str) -> None:
        cost = PRICES[tool]
        expected = None if cost == 0 else self.model.paid_refusal(agent, cost)
        try:
            self.run(self.engine.charge(agent, tool))
            got = None
        except errors.GatewayError as exc:
            got = outcome_of(exc)
        assert got == expected
        if got is None:
            self.model.agents[agent].balance -= cost
            self.model.agents[agent].spent += cost

    @rule(target=holds, agent=st.sampled_from(AGENTS), amount=amounts)
    def hold(self, agent: str, amount: int) -> HoldModel | None:
        expected = self.model.paid_refusal(agent, amount)
        try:
            result = self.run(self.engine.hold(agent, "llm_summarize", amount))
        except errors.GatewayError as exc:
            assert outcome_of(exc) == expected
            return HoldModel("hold_" + "0" * 32, agent, amount, "refused")
        assert expected is None
        a = self.model.agents[agent]
        a.balance, a.held, a.held_today = a.balance - amount, a.held + amount, a.held_today + amount
        return HoldModel(result.hold_id, agent, amount)

    def _close(self, h: HoldModel, state: str, cost: int) -> None:
        a = self.model.agents[h.agent]
        a.balance += h.amount - cost
        a.held -= h.amount
        a.held_today -= h.amount
        a.spent += cost
        h.state = state

    @rule(h=holds, cost=st.integers(min_value=0, max_value=500_000))
    def capture(self, h: HoldModel | None, cost: int) -> None:
        assert h is not None
        try:
            self.run(self.engine.capture(h.agent, h.hold_id, cost))
        except errors.GatewayError as exc:
            if h.state == "refused":
                assert exc.code == "not_found"
            elif h.state != "open":
                assert exc.code == "hold_closed"
            else:
                assert cost > h.amount and exc.code == "invalid_request"
            return
        assert h.state == "open" and cost <= h.amount
        self._close(h, "captured", cost)

    @rule(h=holds)
    def release(self, h: HoldModel | None) -> None:
        assert h is not None
        try:
            self.run(self.engine.release(h.agent, h.hold_id))
        except errors.GatewayError as exc:
            assert h.state != "open", exc
            return
        assert h.state == "open"
        self._close(h, "released", 0)

    @rule(h=holds)
    def expire(self, h: HoldModel | None) -> None:
        assert h is not None
        if h.state == "open":
            k = self.engine.agent_keys(h.agent)
            self.run(self.engine.conn.call_or_raise(b"HSET", k.hold(h.hold_id), b"exp", b"0"))
            self.run(self.engine.conn.call_or_raise(b"ZADD", k.holds, b"0", h.hold_id))
        expired = self.run(self.engine.expire_holds())
        assert expired == (1 if h.state == "open" else 0)
        if h.state == "open":
            self._close(h, "expired", 0)

    @rule(agent=st.sampled_from(AGENTS),
          per_call=st.one_of(st.none(), st.integers(min_value=1, max_value=300_000)),
          daily=st.one_of(st.none(), st.integers(min_value=1, max_value=3_000_000)))
    def set_limits(self, agent: str, per_call: int | None, daily: int | None) -> None:
        self.run(self.engine.set_limits(agent, {"per_call": per_call, "daily": daily}))
        a = self.model.agents[agent]
        a.per_call, a.daily = per_call, daily

    @rule(agent=st.sampled_from(AGENTS), frozen=st.booleans())
    def freeze(self, agent: str, frozen: bool) -> None:
        self.run(self.engine.freeze(agent, frozen))
        self.model.agents[agent].frozen = frozen

    @invariant()
    def redis_equals_model(self) -> None:
        for agent, a in self.model.agents.items():
            state = self.run(self.engine.agent_state(agent))
            assert (state.balance_micros, state.held_micros, state.spent_today_micros) == (
                a.balance, a.held, a.spent), agent
            assert state.frozen == a.frozen


def test_scripts_match_model(backend_url: str, real_redis_url: str) -> None:
    # fakeredis runs Lua ~60x slower (a new interpreter per call): fewer examples there.
    examples = 60 if backend_url == real_redis_url else 4
    MeteringMachine.url = backend_url
    machine_test = MeteringMachine.TestCase
    machine_test.settings = settings(max_examples=examples, stateful_step_count=30,
                                     deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])
    machine_test().runTest()
