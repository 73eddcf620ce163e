"""The gateway as a metering MCP server: a real upstream MCP server
(loadtests/mcp_upstream.py, in a subprocess), the official SDK's client as the agent, a real
gateway and Redis.

What the upstream executed is read from the upstream itself (``GET /calls``), never from
the gateway's own account."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, cast

import httpx
import httpx2
import mcp_types as types
import pytest
import redis
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.config import load_settings
from gateway.metering.engine import Engine
from gateway.sdk import Client as IouClient
from gateway.store.keys import TEST_CLOCK_KEY
from gateway.store.resp import RedisConnection, parse_redis_url
from tests.gateway_proc import ADMIN_TOKEN, Gateway, running_gateway
from tests.http_helpers import new_agent
from tests.mcp_helpers import mcp_upstream
from tests.servers import free_port, redis_server

SECRET = "upstream-secret-0123456789"
PRICES = {"up.echo": ("0.07", "fixed"), "up.measure": ("0.1", "variable"),
          "up.fail": ("0.05", "fixed"), "up.boom": ("0.05", "fixed"),
          "up.slow": ("0.05", "fixed"), "up.free": ("0", "fixed")}
MODES = ("auto", "legacy")  # the 2026-07-28 protocol, and the initialize handshake's
TIMEOUT_S = 6  # the module gateway's IOU_UPSTREAM_TIMEOUT_S


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    """The upstream MCP server's base URL (its endpoint is /mcp, its counts /calls)."""
    with mcp_upstream(SECRET) as url:
        yield url


@pytest.fixture(scope="module")
def mcp_gateway(gateway_redis: tuple[str, Any], upstream: str) -> Iterator[Gateway]:
    """The module's gateway with the upstream registered as ``up`` and its tools priced.
    The upstream timeout is short for the timeout test, yet long enough for 200 concurrent
    calls on a loaded machine."""
    with running_gateway(gateway_redis[0], IOU_UPSTREAM_TIMEOUT_S=str(TIMEOUT_S)) as gateway:
        _register(gateway, upstream)
        yield gateway


def _register(gateway: Gateway, upstream: str) -> None:
    with gateway.admin() as admin:
        for name, (price, pricing) in PRICES.items():
            body = {"price": price, "category": "tool", "pricing": pricing}
            assert admin.put(f"/v1/tools/{name}", json=body).status_code == 200
        answer = admin.put("/v1/mcp/servers/up", json={
            "url": upstream + "/mcp", "headers": {"x-upstream-secret": SECRET}})
        assert answer.status_code == 200, answer.text


def executed(upstream: str) -> dict[str, int]:
    counts: dict[str, int] = httpx.get(upstream + "/calls").json()
    return counts


@contextlib.asynccontextmanager
async def agent_client(gw: Gateway, key: str, mode: str = "auto") -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=30)
    async with http, Client(streamable_http_client(gw.url + "/mcp", http_client=http),
                            mode=mode, cache=None) as client:
        yield client


def agent_state(gw: Gateway, name: str) -> dict[str, Any]:
    with gw.admin() as admin:
        state: dict[str, Any] = admin.get(f"/v1/agents/{name}").json()
    return state


def ledger_kinds(gw: Gateway, name: str, count: int) -> list[tuple[str, str, str]]:
    """(kind, tool, amount) of the agent's newest ``count`` entries, oldest first, once the
    writer committed them."""
    deadline = time.monotonic() + 15
    with gw.admin() as admin:
        while True:
            entries = admin.get(f"/v1/agents/{name}/ledger").json()["entries"]
            if len(entries) >= count:
                return [(e["kind"], e["tool"], e["amount"]) for e in reversed(entries[:count])]
            assert time.monotonic() < deadline, entries
            time.sleep(0.1)


def _meta(**values: str) -> types.RequestParamsMeta:
    """A request's ``_meta`` with ``iou/<name>`` keys (an open map the types cannot name)."""
    return cast(types.RequestParamsMeta, {f"iou/{k}": v for k, v in values.items()})


def error_of(result: types.CallToolResult) -> dict[str, Any]:
    assert result.is_error, result
    error: dict[str, Any] = result.structured_content
    assert error["error"] in result.content[0].text  # type: ignore[union-attr]
    return error


# -- registration ---------------------------------------------------------------------------


def test_a_registered_server_names_its_tools_and_never_shows_its_headers(
        mcp_gateway: Gateway, gateway_redis: tuple[str, Any]) -> None:
    with mcp_gateway.admin() as admin:
        one = admin.get("/v1/mcp/servers/up").json()
        listed = admin.get("/v1/mcp/servers").json()
    assert one["server"] == "up" and one["url"].endswith("/mcp")
    assert {"echo", "measure", "fail", "slow", "unpriced"} <= set(one["tools"])
    assert listed["servers"] == [one]
    assert SECRET not in str(one) + str(listed)
    client = redis.Redis.from_url(gateway_redis[0], decode_responses=True)
    stored = client.hgetall("iou:{mcp}:servers")
    client.close()
    assert stored and SECRET not in str(stored)  # sealed at rest


def test_an_unreachable_or_refusing_upstream_is_refused_and_nothing_is_stored(
        mcp_gateway: Gateway, upstream: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}/mcp"
    with mcp_gateway.admin() as admin:
        answer = admin.put("/v1/mcp/servers/gone", json={"url": closed})
        assert answer.status_code == 502 and answer.json()["error"] == "upstream_unavailable"
        wrong = admin.put("/v1/mcp/servers/gone", json={
            "url": upstream + "/mcp", "headers": {"x-upstream-secret": "wrong"}})
        assert wrong.status_code == 502 and wrong.json()["error"] == "upstream_unavailable"
        assert admin.get("/v1/mcp/servers/gone").json()["error"] == "not_found"


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/mcp/servers/a.b", {"url": "http://127.0.0.1:1/mcp"}, "server"),
    ("/v1/mcp/servers/ok", {}, "url"),
    ("/v1/mcp/servers/ok", {"url": "ftp://x"}, "url"),
    ("/v1/mcp/servers/ok", {"url": "http://x", "extra": 1}, "extra"),
    ("/v1/mcp/servers/ok", {"url": "http://x", "headers": {"bad name": "v"}}, "headers"),
])
def test_a_malformed_registration_is_422(mcp_gateway: Gateway, path: str,
                                         body: dict[str, Any], field: str) -> None:
    with mcp_gateway.admin() as admin:
        answer = admin.put(path, json=body)
    assert answer.status_code == 422 and answer.json()["field"] == field, answer.text


def test_servers_are_the_admins_and_removable(mcp_gateway: Gateway, upstream: str) -> None:
    _, key = new_agent(mcp_gateway)
    with mcp_gateway.agent(key) as agent:
        assert agent.get("/v1/mcp/servers").status_code == 403
        assert agent.put("/v1/mcp/servers/x", json={"url": upstream}).status_code == 403
    with mcp_gateway.admin() as admin:
        body = {"url": upstream + "/mcp", "headers": {"x-upstream-secret": SECRET}}
        assert admin.put("/v1/mcp/servers/spare", json=body).status_code == 200
        assert admin.delete("/v1/mcp/servers/spare").status_code == 204
        assert admin.get("/v1/mcp/servers/spare").status_code == 404
        assert admin.delete("/v1/mcp/servers/spare").json()["error"] == "not_found"


# -- the /mcp endpoint ----------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer iou_" + "x" * 40, "Basic abc"])
def test_mcp_without_a_valid_agent_key_is_the_contracts_401(
        mcp_gateway: Gateway, authorization: str | None) -> None:
    headers = {"accept": "application/json, text/event-stream"}
    if authorization is not None:
        headers["authorization"] = authorization
    answer = httpx.post(mcp_gateway.url + "/mcp", headers=headers,
                        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert answer.status_code == 401
    assert answer.json() == {"error": "unauthorized",
                             "message": "A valid bearer token is required."}


def test_mcp_takes_an_agent_key_not_the_admin_token(mcp_gateway: Gateway) -> None:
    answer = httpx.post(mcp_gateway.url + "/mcp", json={"jsonrpc": "2.0", "id": 1,
                                                         "method": "tools/list"},
                        headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 403 and answer.json()["error"] == "forbidden"


@pytest.mark.parametrize("mode", MODES)
async def test_tools_list_offers_priced_tools_with_their_price(mcp_gateway: Gateway,
                                                               mode: str) -> None:
    _, key = new_agent(mcp_gateway)
    async with agent_client(mcp_gateway, key, mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == set(PRICES)  # up.unpriced has no catalog entry: not offered
    echo = tools["up.echo"]
    assert echo.meta is not None
    assert (echo.meta["iou/price"], echo.meta["iou/category"]) == ("0.07", "tool")
    assert tools["up.measure"].meta == {"iou/price": "0.1", "iou/category": "tool",
                                        "iou/pricing": "variable"}
    assert echo.input_schema["properties"] == {"text": {"type": "string"}}


@pytest.mark.parametrize("mode", MODES)
async def test_a_call_holds_forwards_and_captures_the_price(mcp_gateway: Gateway,
                                                            upstream: str, mode: str) -> None:
    name, key = new_agent(mcp_gateway, "1")
    before = executed(upstream).get("echo", 0)
    async with agent_client(mcp_gateway, key, mode) as client:
        result = await client.call_tool("up.echo", {"text": "hi"})
    assert not result.is_error
    assert result.content[0].text == "echo: hi"  # type: ignore[union-attr]
    assert result.meta is not None
    assert (result.meta["iou/cost"], result.meta["iou/balance"]) == ("0.07", "0.93")
    assert result.meta["up/own"] == "kept"  # the upstream's own _meta rides along
    assert executed(upstream)["echo"] == before + 1
    assert agent_state(mcp_gateway, name)["balance"] == "0.93"
    assert ledger_kinds(mcp_gateway, name, 3)[1:] == [("hold", "up.echo", "0.07"),
                                                      ("capture", "up.echo", "0.07")]


@pytest.mark.parametrize(("reported", "charged"), [
    ("0.02", "0.02"), ("0", "0"), ("5", "0.1"), ("abc", "0.1"), ("-1", "0.1"), (None, "0.1")])
async def test_a_variable_tool_is_charged_what_the_upstream_reports_up_to_the_hold(
        mcp_gateway: Gateway, reported: str | None, charged: str) -> None:
    name, key = new_agent(mcp_gateway, "1")
    async with agent_client(mcp_gateway, key) as client:
        result = await client.call_tool("up.measure", {"cost": reported})
    assert result.meta is not None and result.meta["iou/cost"] == charged
    assert result.meta["iou/charge_id"] != "forged"  # only the gateway speaks for the meter
    expected = f"{1 - float(charged):.2f}".rstrip("0").rstrip(".")
    assert agent_state(mcp_gateway, name)["balance"] == expected


async def test_a_variable_tool_holds_the_ceiling_the_call_names(mcp_gateway: Gateway) -> None:
    _, key = new_agent(mcp_gateway, "0.03")
    async with agent_client(mcp_gateway, key) as client:
        too_much = await client.call_tool("up.measure", {"cost": "0.02"})
        fits = await client.call_tool("up.measure", {"cost": "0.05"},
                                      meta=_meta(max_cost="0.03"))
        fixed = await client.call_tool("up.echo", {},
                                       meta=_meta(max_cost="1"))
    assert error_of(too_much)["error"] == "balance_insufficient"  # held its price, 0.1
    assert fits.meta is not None and fits.meta["iou/cost"] == "0.03"  # capped at 0.03
    assert error_of(fixed)["field"] == "_meta.iou/max_cost"


async def test_a_free_tool_is_charged_zero_and_in_the_ledger(mcp_gateway: Gateway) -> None:
    name, key = new_agent(mcp_gateway, "0")
    async with agent_client(mcp_gateway, key) as client:
        result = await client.call_tool("up.free", {})
    assert not result.is_error and result.meta is not None
    assert result.meta["iou/cost"] == "0"
    assert ledger_kinds(mcp_gateway, name, 2) == [("grant", None, "0"),
                                                  ("charge", "up.free", "0")]


async def test_the_upstream_gets_the_holds_receipt(mcp_gateway: Gateway, upstream: str
                                                   ) -> None:
    """As invoke sends X-IOU-Receipt upstream, a metered MCP call carries the hold's receipt
    in the forwarded request's _meta: the tool provider can check offline that the call is
    paid for (the JWKS of the gateway), before it does the work."""
    name, key = new_agent(mcp_gateway, "1")
    async with agent_client(mcp_gateway, key) as client:
        result = await client.call_tool("up.echo", {"text": "paid?"})
    assert not result.is_error
    token = httpx.get(upstream + "/receipts").json()["echo"]
    with IouClient(mcp_gateway.url, key) as iou:
        claims = iou.verify_receipt(token)
    assert claims["charge_id"].startswith("hold_"), claims
    assert (claims["agent"], claims["tool"], claims["cost"]) == (name, "up.echo", "0.07")
    assert claims["balance_after"] == "0.93"


async def test_a_call_cap_stops_a_free_tool_before_the_upstream(mcp_gateway: Gateway,
                                                                upstream: str) -> None:
    """Free calls count in call caps (and the loop breaker, and tasks): the call over the cap
    is refused before the upstream runs it (a free call was forwarded first, counted after)."""
    name, key = new_agent(mcp_gateway, "0")
    with mcp_gateway.admin() as admin:
        assert admin.patch(f"/v1/agents/{name}/limits", json={
            "tools": {"up.free": {"calls": {"per_day": 1}}}}).status_code == 200
    async with agent_client(mcp_gateway, key) as client:
        first = await client.call_tool("up.free", {})
        before = executed(upstream).get("free", 0)
        capped = await client.call_tool("up.free", {})
    assert not first.is_error
    assert error_of(capped)["limit"] == "calls_per_day"
    assert executed(upstream).get("free", 0) == before


# -- refusals, failures -----------------------------------------------------------------------


async def test_a_refusal_is_an_error_result_and_never_reaches_the_upstream(
        mcp_gateway: Gateway, upstream: str) -> None:
    name, key = new_agent(mcp_gateway, "0.05")
    before = executed(upstream).get("echo", 0)
    async with agent_client(mcp_gateway, key) as client:
        poor = await client.call_tool("up.echo", {"text": "x"})
        with mcp_gateway.admin() as admin:
            admin.post(f"/v1/agents/{name}/fund", json={"amount": "1"})
            admin.patch(f"/v1/agents/{name}/limits", json={"per_call": "0.06"})
        capped = await client.call_tool("up.echo", {"text": "x"})
        with mcp_gateway.admin() as admin:
            admin.post(f"/v1/agents/{name}/freeze")
        frozen = await client.call_tool("up.echo", {"text": "x"})
    assert error_of(poor) == {"error": "balance_insufficient", "balance": "0.05",
                              "cost": "0.07", "message": poor.structured_content["message"]}
    assert poor.content[0].text.startswith(  # type: ignore[union-attr]
        "balance_insufficient, balance 0.05, cost 0.07")
    assert error_of(capped)["error"] == "limit_exceeded"
    assert error_of(capped)["limit"] == "per_call"
    assert error_of(frozen)["error"] == "agent_frozen"
    assert executed(upstream).get("echo", 0) == before
    state = agent_state(mcp_gateway, name)
    assert (state["balance"], state["held"]) == ("1.05", "0")


@pytest.mark.parametrize(("tool", "arguments", "code"), [
    ("up.fail", {}, None), ("up.boom", {}, "upstream_unavailable"),
    ("up.slow", {"seconds": TIMEOUT_S + 3}, "upstream_timeout")])
async def test_an_upstream_error_or_timeout_releases_the_hold(
        mcp_gateway: Gateway, upstream: str, tool: str, arguments: dict[str, Any],
        code: str | None) -> None:
    name, key = new_agent(mcp_gateway, "1")
    async with agent_client(mcp_gateway, key) as client:
        result = await client.call_tool(tool, arguments)
        after = await client.call_tool("up.echo", {})  # the connection still serves
    assert result.is_error
    if code is None:  # the upstream's own error result, passed on, not charged
        assert result.content[0].text == "it failed"  # type: ignore[union-attr]
        assert result.meta is not None and result.meta["iou/cost"] == "0"
    else:
        assert error_of(result)["error"] == code
    assert not after.is_error
    state = agent_state(mcp_gateway, name)
    assert (state["balance"], state["held"]) == ("0.93", "0")
    kinds = [k for k, _, _ in ledger_kinds(mcp_gateway, name, 5)]
    assert kinds == ["grant", "hold", "release", "hold", "capture"]


async def test_a_tool_without_a_catalog_entry_is_never_forwarded(mcp_gateway: Gateway,
                                                                 upstream: str) -> None:
    name, key = new_agent(mcp_gateway, "1")
    async with agent_client(mcp_gateway, key) as client:
        results = [await client.call_tool(tool, {}) for tool in
                   ("up.unpriced", "nowhere.echo", "echo", "up.", "UP.echo")]
    assert {error_of(r)["error"] for r in results} == {"not_found"}
    assert "unpriced" not in executed(upstream)
    assert agent_state(mcp_gateway, name)["balance"] == "1"


async def test_a_call_naming_a_task_counts_in_it(mcp_gateway: Gateway,
                                                gateway_redis: tuple[str, Any],
                                                upstream: str) -> None:
    """Tasks apply to MCP calls: the hold script's walls are the same as invoke's."""
    name, key = new_agent(mcp_gateway, "1")
    settings = load_settings({"IOU_REDIS_URL": gateway_redis[0]})
    engine = Engine(RedisConnection(parse_redis_url(gateway_redis[0])), settings)
    await engine.start(background=False)
    try:
        task = (await engine.open_task(name, 100_000)).task_id  # a budget of 0.1
    finally:
        await engine.stop()
        engine.conn.close()
    before = executed(upstream).get("echo", 0)
    async with agent_client(mcp_gateway, key) as client:
        first = await client.call_tool("up.echo", {}, meta=_meta(task=task))
        over = await client.call_tool("up.echo", {}, meta=_meta(task=task))
        stranger = await client.call_tool("up.echo", {}, meta=_meta(task="task_" + "0" * 32))
    assert not first.is_error
    assert error_of(over)["limit"] == "task_budget"
    assert error_of(stranger)["error"] == "not_found"
    assert executed(upstream)["echo"] == before + 1
    assert agent_state(mcp_gateway, name)["balance"] == "0.93"


async def test_the_loop_breaker_sees_the_same_arguments(mcp_gateway: Gateway,
                                                        upstream: str) -> None:
    name, key = new_agent(mcp_gateway, "1")
    with mcp_gateway.admin() as admin:
        assert admin.patch(f"/v1/agents/{name}/limits", json={
            "loop": {"repeats": 2, "window_s": 60, "action": "refuse"}}).status_code == 200
    before = executed(upstream).get("echo", 0)
    async with agent_client(mcp_gateway, key) as client:
        same = [await client.call_tool("up.echo", {"text": "a", "n": 1}) for _ in range(2)]
        reordered = await client.call_tool("up.echo", {"n": 1, "text": "a"})
        other = await client.call_tool("up.echo", {"text": "b", "n": 1})
    assert [r.is_error for r in same] == [False, False] and not other.is_error
    assert error_of(reordered)["error"] == "loop_detected"  # the same arguments, reordered
    assert executed(upstream)["echo"] == before + 3


# -- agents apart -----------------------------------------------------------------------------


def _post(gw: Gateway, key: str, message: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(gw.url + "/mcp", json=message, headers={
        "authorization": f"Bearer {key}", "accept": "application/json, text/event-stream",
        **headers})


def test_each_request_acts_for_its_own_key_whatever_session_it_names(
        mcp_gateway: Gateway, upstream: str) -> None:
    """No sessions to share: the endpoint is stateless, every request is its key's."""
    a_name, a_key = new_agent(mcp_gateway, "1")
    b_name, b_key = new_agent(mcp_gateway, "1")
    opened = _post(mcp_gateway, a_key, {
        "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}})
    assert opened.status_code == 200 and "mcp-session-id" not in opened.headers
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "up.echo", "arguments": {}}}
    answer = _post(mcp_gateway, b_key, call, **{"mcp-session-id": "a-session-of-a",
                                                "mcp-protocol-version": "2025-11-25"})
    assert answer.json()["result"]["_meta"]["iou/balance"] == "0.93"
    assert agent_state(mcp_gateway, a_name)["balance"] == "1"
    assert agent_state(mcp_gateway, b_name)["balance"] == "0.93"
    stream = httpx.get(mcp_gateway.url + "/mcp", headers={"authorization": f"Bearer {a_key}"})
    assert stream.status_code == 405 and stream.headers["allow"] == "POST"


async def test_each_agent_is_charged_for_its_own_calls(mcp_gateway: Gateway) -> None:
    agents = [new_agent(mcp_gateway, "1") for _ in range(4)]

    async def calls(key: str, count: int) -> list[types.CallToolResult]:
        async with agent_client(mcp_gateway, key) as client:
            return list(await asyncio.gather(*(client.call_tool("up.echo", {})
                                               for _ in range(count))))

    results = await asyncio.gather(*(calls(key, i + 1) for i, (_, key) in enumerate(agents)))
    assert [r.content for batch in results for r in batch if r.is_error] == []
    balances = [agent_state(mcp_gateway, name)["balance"] for name, _ in agents]
    assert balances == ["0.93", "0.86", "0.79", "0.72"]


# -- exactly-count ------------------------------------------------------------------------------


async def test_exactly_as_many_calls_as_the_balance_pays_for_reach_the_upstream(
        mcp_gateway: Gateway, upstream: str) -> None:
    """Balance 1.00, 200 concurrent tools/call at 0.07 over 4 sessions: 14 succeed, 186 are
    balance_insufficient error results, the upstream ran exactly 14."""
    name, key = new_agent(mcp_gateway, "1")
    before = executed(upstream).get("echo", 0)

    async def session(mode: str) -> list[types.CallToolResult]:
        async with agent_client(mcp_gateway, key, mode) as client:
            return list(await asyncio.gather(*(client.call_tool("up.echo", {})
                                               for _ in range(50))))

    results = [r for batch in await asyncio.gather(*(session(MODES[i % 2]) for i in range(4)))
               for r in batch]
    ok = [r for r in results if not r.is_error]
    refused = [error_of(r) for r in results if r.is_error]
    assert (len(ok), len(refused)) == (14, 186)
    assert {e["error"] for e in refused} == {"balance_insufficient"}
    assert executed(upstream)["echo"] == before + 14
    state = agent_state(mcp_gateway, name)
    assert (state["balance"], state["held"]) == ("0.02", "0")
    assert len({r.meta["iou/charge_id"] for r in ok if r.meta}) == 14


async def test_any_worker_answers_any_request(gateway_redis: tuple[str, Any],
                                              mcp_gateway: Gateway) -> None:
    """Two workers behind one port, a client with many connections: a handshake-era
    session kept in one worker would be unknown to the other (it was: 'Session not
    found')."""
    name, key = new_agent(mcp_gateway, "10")
    results: list[types.CallToolResult] = []
    with running_gateway(gateway_redis[0], workers=2) as two:
        for mode in (*MODES, "legacy"):  # a new client each time: its connections land
            async with agent_client(two, key, mode) as client:  # on either worker
                results += await asyncio.gather(*(client.call_tool("up.echo", {})
                                                  for _ in range(20)))
        warned = [line for line in two.log_path.read_text().splitlines() if "WARN" in line]
    errors = [r.content for r in results if r.is_error]
    assert len(results) == 60 and not errors, (errors[:3], warned[-5:])
    assert agent_state(mcp_gateway, name)["balance"] == "5.8"


# -- the stdio bridge ---------------------------------------------------------------------------


async def test_the_stdio_bridge_lists_and_charges_like_http(mcp_gateway: Gateway,
                                                            upstream: str) -> None:
    from mcp import StdioServerParameters

    name, key = new_agent(mcp_gateway, "1")
    before = executed(upstream).get("echo", 0)
    bridge = StdioServerParameters(command=sys.executable, args=[
        "-m", "gateway.cli.main", "mcp", "--key", key, "--url", mcp_gateway.url])
    async with Client(bridge, cache=None) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        result = await client.call_tool("up.echo", {"text": "via stdio"})
        with mcp_gateway.admin() as admin:
            admin.post(f"/v1/agents/{name}/freeze")
        refused = await client.call_tool("up.echo", {})
    assert tools["up.echo"].meta is not None and tools["up.echo"].meta["iou/price"] == "0.07"
    assert result.content[0].text == "echo: via stdio"  # type: ignore[union-attr]
    assert result.meta is not None and result.meta["iou/balance"] == "0.93"
    assert error_of(refused)["error"] == "agent_frozen"
    assert executed(upstream)["echo"] == before + 1


def test_the_bridge_with_a_wrong_key_says_so_and_exits_1(mcp_gateway: Gateway) -> None:
    done = subprocess.run([sys.executable, "-m", "gateway.cli.main", "mcp", "--key",
                           "iou_" + "w" * 40, "--url", mcp_gateway.url],
                          capture_output=True, timeout=60, input=b"")
    assert done.returncode == 1
    assert b"unauthorized" in done.stderr and done.stdout == b""


# -- a gateway killed mid-call ------------------------------------------------------------------


@pytest.mark.slow
async def test_a_gateway_killed_mid_call_charges_nothing_and_its_hold_expires(
        upstream: str) -> None:
    """kill -9 of the gateway while the upstream works: nothing captured the call, the hold
    is released by expiry (another gateway's sweeper, its test clock moved past the hold's
    expiry), and the ledger says hold then expire."""
    with redis_server() as (redis_url, _):
        with running_gateway(redis_url, writer=False, IOU_TEST_CLOCK="1") as first:
            _register(first, upstream)
            name, key = new_agent(first, "1")
            call = asyncio.create_task(_call_slowly(first, key))
            await _until(lambda: agent_state(first, name)["held"] == "0.05")
            first.process.kill()  # SIGKILL, by pid: no shutdown code runs
            first.process.wait(10)
            with pytest.raises(BaseException):  # noqa: B017 - whatever the client makes of it
                await call
        client = redis.Redis.from_url(redis_url)
        client.set(TEST_CLOCK_KEY, str(3_600_000))  # an hour on: the hold is past expiry
        client.close()
        with running_gateway(redis_url, IOU_TEST_CLOCK="1") as second:
            await _until(lambda: agent_state(second, name)["held"] == "0")
            assert agent_state(second, name)["balance"] == "1"
            assert [k for k, _, _ in ledger_kinds(second, name, 3)] == ["grant", "hold",
                                                                        "expire"]


async def _call_slowly(gw: Gateway, key: str) -> types.CallToolResult:
    async with agent_client(gw, key) as client:
        return await client.call_tool("up.slow", {"seconds": 3})


async def _until(condition: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.1)
