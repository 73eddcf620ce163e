"""The access matrix: every route of the API × every kind of caller, on another agent's ids.

Callers: no token, a garbage token, a revoked key (of agent A), agent A's key, agent B's key,
the admin token. Paths name agent B and B's objects: ``{agent}`` is B's name, ``{hold_id}``
a fresh open hold of B, ``{key_id}`` a spare key of B, ``{charge_id}`` a charge of B. The
expected status of every case is written in its row; 401, 403 and 404 must come back in the
contract's error shape with the matching code. Strangers and agent A run first, and B's
state (balance, held, ledger, open holds) must be exactly as before: no cross-agent access.

A new route must get a row here (the test fails until it has one).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.api.app import served_routes
from gateway.metering.children import partition_name
from gateway.store.keys import partition_of
from tests.gateway_proc import ADMIN_TOKEN, Gateway, running_gateway
from tests.http_helpers import new_agent, recording_upstream, seed_tools, unique
from tests.servers import redis_server

CALLERS = ("none", "garbage", "revoked", "agent_a", "agent_b", "admin")
ERROR_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found"}
CHARGE = {"tool": "web_search"}
PUBLIC = (200, 200, 200, 200, 200, 200)
PARTITIONS = 16  # the gateway's default IOU_PARTITIONS


LEDGER_WAIT_S = 20


def _in_the_ledger(agent: httpx.Client, charge_id: str) -> None:
    """Wait (bounded) until the ledger writer has the charge."""
    deadline = time.monotonic() + LEDGER_WAIT_S
    while agent.get(f"/v1/receipts/{charge_id}").status_code == 404:
        assert time.monotonic() < deadline, "the charge never reached the ledger"
        time.sleep(0.1)


def _new_agent_body() -> dict[str, Any]:
    return {"name": unique("matrix-new")}


# B's name, once the world exists: a child of B needs a name in B's partition.
_B_NAME: list[str] = []


def _child_body() -> dict[str, Any]:
    parent = _B_NAME[0]
    name = partition_name(unique("matrix-kid"), partition_of(parent, PARTITIONS), PARTITIONS)
    return {"name": name, "amount": "0.01"}


# (method, path, body (or a function making one), expected status per caller in the order
#  none, garbage, revoked, agent A, agent B, admin)
ROWS: list[tuple[str, str, Any, tuple[int, int, int, int, int, int]]] = [
    # agent routes: strangers 401, either agent on its own account, the admin 403;
    # A on B's hold: 404 (an agent never learns whether another's hold exists)
    ("POST", "/v1/charge", CHARGE, (401, 401, 401, 200, 200, 403)),
    ("POST", "/v1/charges", {"charges": [CHARGE]}, (401, 401, 401, 200, 200, 403)),
    ("POST", "/v1/holds", CHARGE, (401, 401, 401, 201, 201, 403)),
    ("POST", "/v1/holds/{hold_id}/capture", {"cost": "0.05"},
     (401, 401, 401, 404, 200, 403)),
    ("POST", "/v1/holds/{hold_id}/release", None, (401, 401, 401, 404, 200, 403)),
    ("GET", "/v1/balance", None, (401, 401, 401, 200, 200, 403)),
    ("POST", "/v1/tools/{tool}/invoke", {"q": 1}, (401, 401, 401, 200, 200, 403)),
    # receipts: the keys are public; a charge's receipt is its agent's (or the admin's)
    ("GET", "/v1/receipts/keys", None, PUBLIC),
    ("GET", "/v1/receipts/{charge_id}", None, (401, 401, 401, 403, 200, 200)),
    # tasks: each agent opens its own; A on B's task: 404, as for holds
    ("POST", "/v1/tasks", {"budget": "1"}, (401, 401, 401, 201, 201, 403)),
    ("GET", "/v1/tasks/{task_id}", None, (401, 401, 401, 404, 200, 403)),
    ("POST", "/v1/tasks/{task_id}/close", None, (401, 401, 401, 404, 200, 403)),
    ("GET", "/v1/agents/{agent}/tasks", None, (401, 401, 401, 403, 200, 200)),
    # admin routes on B: strangers 401, any agent key 403 (B's own included), the admin 2xx
    ("POST", "/v1/agents", _new_agent_body, (401, 401, 401, 403, 403, 201)),
    ("GET", "/v1/agents", None, (401, 401, 401, 403, 403, 200)),
    ("GET", "/v1/agents/{agent}", None, (401, 401, 401, 403, 403, 200)),
    ("POST", "/v1/agents/{agent}/fund", {"amount": "1"}, (401, 401, 401, 403, 403, 200)),
    ("POST", "/v1/agents/{agent}/debit", {"amount": "0.01", "reason": "matrix"},
     (401, 401, 401, 403, 403, 200)),
    ("POST", "/v1/charges/{charge_id}/refund", {"amount": "0.001"},
     (401, 401, 401, 403, 403, 200)),
    # B (or the admin) funds a child of B; reclaim is for a parent's key: B has none (404 to
    # the admin, 403 to any agent key)
    ("POST", "/v1/agents/{agent}/children", _child_body, (401, 401, 401, 403, 201, 201)),
    ("GET", "/v1/agents/{agent}/children", None, (401, 401, 401, 403, 200, 200)),
    ("POST", "/v1/agents/{agent}/reclaim", None, (401, 401, 401, 403, 403, 404)),
    ("GET", "/v1/agents/{agent}/limits", None, (401, 401, 401, 403, 403, 200)),
    ("PATCH", "/v1/agents/{agent}/limits", {"per_call": "5"},
     (401, 401, 401, 403, 403, 200)),
    ("POST", "/v1/agents/{agent}/freeze", None, (401, 401, 401, 403, 403, 200)),
    ("POST", "/v1/agents/{agent}/unfreeze", None, (401, 401, 401, 403, 403, 200)),
    ("POST", "/v1/agents/{agent}/keys", None, (401, 401, 401, 403, 403, 201)),
    # B may list its own keys; A may not
    ("GET", "/v1/agents/{agent}/keys", None, (401, 401, 401, 403, 200, 200)),
    ("DELETE", "/v1/agents/{agent}/keys/{key_id}", None, (401, 401, 401, 403, 403, 204)),
    ("GET", "/v1/agents/{agent}/ledger", None, (401, 401, 401, 403, 403, 200)),
    ("GET", "/v1/ledger/heads", None, (401, 401, 401, 403, 403, 200)),
    # B may read its own usage; A may not; every agent's usage and the summary are admin's
    ("GET", "/v1/agents/{agent}/usage", None, (401, 401, 401, 403, 200, 200)),
    # The same for what its shadow limits would have refused
    ("GET", "/v1/agents/{agent}/shadow", None, (401, 401, 401, 403, 200, 200)),
    ("GET", "/v1/usage", None, (401, 401, 401, 403, 403, 200)),
    ("GET", "/v1/summary", None, (401, 401, 401, 403, 403, 200)),
    ("PUT", "/v1/tools/{tool}", {"price": "0.05", "category": "tool"},
     (401, 401, 401, 403, 403, 200)),
    ("GET", "/v1/tools", None, (401, 401, 401, 403, 403, 200)),
    ("DELETE", "/v1/tools/{tool}", None, (401, 401, 401, 403, 403, 204)),
    # upstream MCP servers are the admin's; the admin's PUT names a closed loopback port, so
    # the gateway (which connects before storing) answers 502 and nothing exists to get
    ("PUT", "/v1/mcp/servers/{server}", {"url": "http://127.0.0.1:9/mcp"},
     (401, 401, 401, 403, 403, 502)),
    ("GET", "/v1/mcp/servers", None, (401, 401, 401, 403, 403, 200)),
    ("GET", "/v1/mcp/servers/{server}", None, (401, 401, 401, 403, 403, 404)),
    ("DELETE", "/v1/mcp/servers/{server}", None, (401, 401, 401, 403, 403, 404)),
    # operations routes: public, a token (even a wrong one) changes nothing
    ("GET", "/healthz", None, PUBLIC),
    ("GET", "/readyz", None, PUBLIC),
    ("GET", "/metrics", None, PUBLIC),
    ("GET", "/openapi.json", None, PUBLIC),
    ("GET", "/dashboard", None, (308, 308, 308, 308, 308, 308)),
    ("GET", "/", None, (307, 307, 307, 307, 307, 307)),
]


@dataclass
class World:
    gw: Gateway
    tokens: dict[str, str | None]
    a: str
    b: str
    b_spare_key_id: str
    b_charge_id: str
    b_task_id: str

    def client(self, caller: str) -> httpx.Client:
        token = self.tokens[caller]
        headers = {} if token is None else {"authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.gw.url, headers=headers, timeout=30)

    def b_hold(self) -> str:
        """A fresh open hold of agent B."""
        with self.client("agent_b") as b:
            held = b.post("/v1/holds", json=CHARGE)
        assert held.status_code == 201, held.text
        hold_id: str = held.json()["hold_id"]
        return hold_id


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    # Many deliberate failures from one address: the failed-auth limits are raised here.
    with recording_upstream("/") as (upstream_url, _), redis_server() as (url, _), \
            running_gateway(
            url, IOU_AUTH_FAILURES_PER_CLIENT="100000",
            IOU_AUTH_FAILURES_PER_CREDENTIAL="100000",
            IOU_AUTH_FAILURES_GLOBAL="1000000") as gw:
        seed_tools(gw)
        a, a_key = new_agent(gw, "10", "matrix-a")
        b, b_key = new_agent(gw, "10", "matrix-b")
        _B_NAME[:] = [b]
        with gw.admin() as admin:
            assert admin.put("/v1/tools/matrix_proxy", json={
                "price": "0.05", "category": "tool",
                "upstream": upstream_url}).status_code == 200
            revoked = admin.post(f"/v1/agents/{a}/keys").json()
            assert admin.delete(f"/v1/agents/{a}/keys/{revoked['key_id']}").status_code == 204
            spare = admin.post(f"/v1/agents/{b}/keys").json()["key_id"]
        with gw.agent(b_key) as agent_b:
            charge_id = agent_b.post("/v1/charge", json=CHARGE).json()["charge_id"]
            task_id = agent_b.post("/v1/tasks", json={"budget": "1"}).json()["task_id"]
            _in_the_ledger(agent_b, charge_id)  # GET /v1/receipts/{charge_id} reads it there
        tokens: dict[str, str | None] = {
            "none": None, "garbage": "not-a-token", "revoked": revoked["api_key"],
            "agent_a": a_key, "agent_b": b_key, "admin": ADMIN_TOKEN}
        yield World(gw, tokens, a, b, spare, charge_id, task_id)


def _path(world: World, method: str, template: str, holds: Callable[[], str]) -> str:
    values = {"agent": world.b, "key_id": world.b_spare_key_id,
              "charge_id": world.b_charge_id, "server": "matrix_mcp",
              "task_id": world.b_task_id,
              "tool": "matrix_proxy" if template.endswith("/invoke") else "matrix_tool"}
    path = template
    if "{hold_id}" in path:
        path = path.replace("{hold_id}", holds())
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"{method} {template}: no value for a path parameter"
    return path


def _call(world: World, caller: str, method: str, template: str, body: Any,
          holds: Callable[[], str]) -> httpx.Response:
    path = _path(world, method, template, holds)
    payload = body() if callable(body) else body
    with world.client(caller) as client:
        if payload is None:
            return client.request(method, path)
        return client.request(method, path, json=payload)


def _check(response: httpx.Response, expected: int, case: str) -> None:
    assert response.status_code == expected, f"{case}: {response.status_code} {response.text}"
    if expected in ERROR_CODES:
        assert response.headers["content-type"].startswith("application/json"), case
        body = response.json()
        assert body["error"] == ERROR_CODES[expected], f"{case}: {body}"
        assert isinstance(body["message"], str) and body["message"], case


def _b_state(world: World) -> tuple[Any, ...]:
    """B's balance, held, frozen flag and ledger rows, once the ledger writer caught up
    (the same answer twice, 0.5 s apart)."""
    deadline = time.monotonic() + 15
    last = None
    with world.client("admin") as admin:
        while True:
            agent = admin.get(f"/v1/agents/{world.b}").json()
            ledger = admin.get(f"/v1/agents/{world.b}/ledger", params={"limit": 1000}).json()
            state = (agent["balance"], agent["held"], agent["frozen"],
                     sorted(e["entry_id"] for e in ledger["entries"]))
            if state == last and state[3]:
                return state
            assert time.monotonic() < deadline, "the ledger never settled"
            last = state
            time.sleep(0.5)


def test_every_route_has_a_row() -> None:
    served = served_routes()
    rows = [(method, path) for method, path, _, _ in ROWS]
    assert len(rows) == len(set(rows)), "a route has two rows"
    missing = served - set(rows)
    assert not missing, f"add these routes to ROWS with their expected statuses: {missing}"
    assert set(rows) <= served, f"rows for routes that are not served: {set(rows) - served}"


def test_strangers_and_another_agent_never_reach_b(world: World) -> None:
    # B's holds for the cases of this phase, taken before B's state is recorded.
    hold_cases = sum(1 for _, path, _, _ in ROWS if "{hold_id}" in path)
    b_holds = [world.b_hold() for _ in range(hold_cases * 4)]
    pending = list(b_holds)
    before = _b_state(world)
    for method, template, body, expected in ROWS:
        for i, caller in enumerate(CALLERS[:4]):  # none, garbage, revoked, agent A
            case = f"{caller} {method} {template}"
            answer = _call(world, caller, method, template, body, pending.pop)
            _check(answer, expected[i], case)
            if caller == "agent_a" and template == "/v1/balance":
                assert answer.json()["agent"] == world.a  # its own account, never B's
    assert not pending
    assert _b_state(world) == before  # nothing anyone but B or the admin did touched B
    with world.client("agent_b") as b:  # and every hold A tried to take is still B's, open
        for hold_id in b_holds:
            assert b.post(f"/v1/holds/{hold_id}/release").status_code == 200, hold_id


def test_b_and_the_admin(world: World) -> None:
    for method, template, body, expected in ROWS:
        for i, caller in ((4, "agent_b"), (5, "admin")):
            case = f"{caller} {method} {template}"
            answer = _call(world, caller, method, template, body, world.b_hold)
            _check(answer, expected[i], case)
            if caller == "agent_b" and template == "/v1/balance":
                assert answer.json()["agent"] == world.b
