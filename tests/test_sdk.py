"""The agent's SDK (gateway.sdk) against a real gateway: typed results and errors, exactly
once across lost answers, holds and metered tools that never run unpaid."""

from __future__ import annotations

import asyncio
import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from gateway.sdk import (
    AsyncClient,
    BalanceInsufficient,
    Charge,
    Client,
    HoldClosed,
    InvalidRequest,
    IOUError,
    LimitExceeded,
    NotFound,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from tests.drop_proxy import DropProxy, drop_proxy
from tests.gateway_proc import ADMIN_TOKEN, Gateway
from tests.http_helpers import new_agent, upstream_server

FAST_S = 0.01  # retries pause 5-10 ms here, not the default 125-250 ms
DEADLINE_S = 20.0


@pytest.fixture(scope="module")
def admin(gateway: Gateway) -> Iterator[Client]:
    with Client(gateway.url, ADMIN_TOKEN, backoff_s=FAST_S) as client:
        client.request("PUT", "/v1/tools/sdk_tool7", {"price": "0.07", "category": "tool"})
        yield client


@pytest.fixture
def proxy(gateway: Gateway) -> Iterator[DropProxy]:
    with drop_proxy(gateway.url) as p:
        yield p


def ledger_after_fund(admin: Client, agent: str) -> list[Any]:
    """The agent's ledger once a fund made after the calls under test reached it: the
    writer keeps each agent's events in order, so nothing earlier is still on its way."""
    admin.request("POST", f"/v1/agents/{agent}/fund", {"amount": "1"})
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        entries = list(admin.ledger(agent))
        if entries and entries[0].kind == "fund":
            return entries
        time.sleep(0.05)
    raise AssertionError(f"the fund of {agent} never reached the ledger")


# -- the package itself ------------------------------------------------------------------

def test_importing_the_sdk_loads_no_server_module() -> None:
    code = "import sys, json, gateway.sdk; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    loaded = json.loads(done.stdout)
    server = ("gateway.api", "gateway.store", "gateway.metering", "gateway.ledger",
              "gateway.cli", "gateway.config", "gateway.webhooks", "gateway.runtime",
              "gateway.observability", "starlette", "uvicorn", "asyncpg", "redis")
    assert [m for m in loaded if m.startswith(server)] == []
    assert "httpx" in loaded and "orjson" in loaded


def test_error_answers_map_to_their_classes_with_details() -> None:
    from gateway.sdk import error_for

    poor = error_for(402, {"error": "balance_insufficient", "message": "m",
                           "balance": "0.03", "cost": "0.07"})
    assert type(poor) is BalanceInsufficient and poor.status == 402
    assert (poor.balance, poor.cost) == (Decimal("0.03"), Decimal("0.07"))
    daily = error_for(429, {"error": "limit_exceeded", "message": "m", "limit": "daily",
                            "category": None, "max": "5", "spent": "4.98",
                            "retry_after_s": 3600})
    assert isinstance(daily, LimitExceeded) and daily.limit == "daily"
    assert daily.retry_after_s == 3600 and daily.max == Decimal(5)
    invalid = error_for(422, {"error": "invalid_request", "message": "m", "field": "cost",
                              "reason": "r"})
    assert isinstance(invalid, InvalidRequest) and invalid.field == "cost"
    unknown = error_for(418, {"error": "teapot", "message": "short and stout", "x": 1})
    assert type(unknown) is IOUError and unknown.code == "teapot"
    assert unknown.details == {"x": 1} and unknown.message == "short and stout"


# -- typed results and errors from the real gateway --------------------------------------

def test_charge_hold_capture_status_are_typed_with_decimal_money(gateway: Gateway) -> None:
    _, key = new_agent(gateway, "1")
    with Client(gateway.url, key) as iou:
        charge = iou.charge("web_search", metadata={"q": "pricing"})
        assert isinstance(charge, Charge) and charge.cost == Decimal("0.05")
        assert charge.balance == Decimal("0.95") and charge.category == "tool"
        with iou.hold("llm_summarize", max=Decimal("0.10")) as h:
            assert h.amount == Decimal("0.1") and h.balance == Decimal("0.85")
            done = h.capture("0.06")
        assert (done.cost, done.released, done.balance) == (
            Decimal("0.06"), Decimal("0.04"), Decimal("0.89"))
        status = iou.status()
        assert (status.balance, status.held, status.spent_today) == (
            Decimal("0.89"), Decimal(0), Decimal("0.11"))


def test_real_refusals_raise_their_classes(gateway: Gateway, admin: Client) -> None:
    name, key = new_agent(gateway, "0.1")
    with Client(gateway.url, key, backoff_s=FAST_S) as iou:
        with pytest.raises(BalanceInsufficient) as poor:
            iou.charge("buy")
        assert poor.value.status == 402 and poor.value.cost == Decimal("1.5")
        assert poor.value.balance == Decimal("0.1")
        with pytest.raises(NotFound):
            iou.charge("no_such_tool")
        with pytest.raises(InvalidRequest) as invalid:
            iou.charge("web_search", cost="0.01")
        assert invalid.value.field == "cost"
        admin.request("PATCH", f"/v1/agents/{name}/limits", {"per_call": "0.01"})
        with pytest.raises(LimitExceeded) as capped:
            iou.charge("web_search")
        assert capped.value.limit == "per_call" and capped.value.status == 403
        with pytest.raises(TypeError):
            iou.charge("llm_summarize", cost=0.05)  # type: ignore[arg-type]
    with Client(gateway.url, "iou_" + "x" * 40) as stranger, pytest.raises(Unauthorized):
        stranger.status()


def test_unreachable_after_the_retries() -> None:
    with Client("http://127.0.0.1:9", "k", max_retries=1, backoff_s=FAST_S) as iou, \
            pytest.raises(Unreachable) as lost:
        iou.charge("web_search")
    assert "http://127.0.0.1:9" in lost.value.message and lost.value.status == 0


# -- exactly once across lost answers ----------------------------------------------------

def test_a_lost_charge_answer_is_retried_and_charged_once(gateway: Gateway, admin: Client,
                                                          proxy: DropProxy) -> None:
    name, key = new_agent(gateway, "1")
    proxy.drop("/v1/charge")
    with Client(proxy.url, key, backoff_s=FAST_S) as iou:
        charge = iou.charge("web_search")
    sent = proxy.requests_to("/v1/charge")
    assert [s.dropped for s in sent] == [True, False]
    assert sent[0].idempotency_key is not None
    assert sent[0].idempotency_key == sent[1].idempotency_key
    assert charge.balance == Decimal("0.95")
    entries = ledger_after_fund(admin, name)
    assert [e.kind for e in entries].count("charge") == 1


def test_a_lost_batch_answer_is_retried_and_charged_once(gateway: Gateway, admin: Client,
                                                         proxy: DropProxy) -> None:
    name, key = new_agent(gateway, "1")
    proxy.drop("/v1/charges")
    with Client(proxy.url, key, backoff_s=FAST_S) as iou:
        results = iou.charges([{"tool": "web_search"}, {"tool": "email_send"},
                               {"tool": "buy"}])
    assert [s.dropped for s in proxy.requests_to("/v1/charges")] == [True, False]
    first, second, third = results
    assert isinstance(first, Charge) and isinstance(second, Charge)
    assert isinstance(third, BalanceInsufficient) and third.cost == Decimal("1.5")
    assert second.balance == Decimal("0.93")
    entries = ledger_after_fund(admin, name)
    assert sorted(e.tool for e in entries if e.kind == "charge") == ["email_send", "web_search"]


def test_a_lost_hold_and_a_lost_capture_are_each_charged_once(
        gateway: Gateway, admin: Client, proxy: DropProxy) -> None:
    name, key = new_agent(gateway, "1")
    proxy.drop("/v1/holds")  # the hold's answer, then (armed again below) the capture's
    with Client(proxy.url, key, backoff_s=FAST_S) as iou:
        hold = iou.hold("llm_summarize", max="0.5")
        assert hold.balance == Decimal("0.5")
        proxy.drop(f"/v1/holds/{hold.hold_id}/capture")
        done = hold.capture("0.2")
        assert iou.status().balance == Decimal("0.8") == done.balance
    kinds = [(s.path.rsplit("/", 1)[-1], s.dropped) for s in proxy.requests_to("/v1/holds")]
    assert kinds == [("holds", True), ("holds", False), ("capture", True), ("capture", False)]
    entries = ledger_after_fund(admin, name)
    assert [e.kind for e in entries].count("hold") == 1
    assert [e.kind for e in entries].count("capture") == 1


def test_a_timed_out_charge_is_retried_and_charged_once(gateway: Gateway, admin: Client,
                                                        proxy: DropProxy) -> None:
    name, key = new_agent(gateway, "1")
    proxy.delay("/v1/charge", 2.0)  # the gateway charged; its answer comes after the timeout
    with Client(proxy.url, key, timeout_s=0.5, backoff_s=FAST_S) as iou:
        charge = iou.charge("web_search")
    sent = proxy.requests_to("/v1/charge")
    assert len(sent) == 2 and sent[0].idempotency_key == sent[1].idempotency_key
    assert charge.balance == Decimal("0.95")
    assert [e.kind for e in ledger_after_fund(admin, name)].count("charge") == 1


def test_a_503_is_retried_after_retry_after_and_a_4xx_never(
        gateway: Gateway, proxy: DropProxy) -> None:
    _, key = new_agent(gateway, "0.06")
    proxy.refuse_503("/v1/charge")
    with Client(proxy.url, key, backoff_s=FAST_S) as iou:
        started = time.monotonic()
        iou.charge("web_search")
        assert time.monotonic() - started >= 1.0  # Retry-After: 1, above the backoff
        with pytest.raises(BalanceInsufficient):
            iou.charge("web_search")
    assert len(proxy.requests_to("/v1/charge")) == 3  # 503, the retry, one refusal
    proxy.refuse_503("/v1/balance", 5)
    with Client(proxy.url, key, max_retries=2, backoff_s=FAST_S) as iou, pytest.raises(Unavailable):
        iou.status()
    assert len(proxy.requests_to("/v1/balance")) == 3


# -- concurrency: the balance is the ceiling, through one shared client -----------------

def test_200_threads_through_one_client_pass_exactly_14(gateway: Gateway, admin: Client) -> None:
    _, key = new_agent(gateway, "1.00")
    outcomes: list[str] = []
    lock = threading.Lock()
    with Client(gateway.url, key) as iou:
        def call() -> None:
            try:
                iou.charge("sdk_tool7")
                outcome = "ok"
            except BalanceInsufficient:
                outcome = "poor"
            with lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=call) for _ in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert iou.status().balance == Decimal("0.02")
    assert (outcomes.count("ok"), outcomes.count("poor")) == (14, 186)


def test_200_tasks_through_one_async_client_pass_exactly_14(gateway: Gateway,
                                                            admin: Client) -> None:
    _, key = new_agent(gateway, "1.00")

    async def run() -> list[str]:
        async with AsyncClient(gateway.url, key) as iou:
            async def call() -> str:
                try:
                    await iou.charge("sdk_tool7")
                    return "ok"
                except BalanceInsufficient:
                    return "poor"

            outcomes = await asyncio.gather(*(call() for _ in range(200)))
            assert (await iou.status()).balance == Decimal("0.02")
            return list(outcomes)

    outcomes = asyncio.run(run())
    assert (outcomes.count("ok"), outcomes.count("poor")) == (14, 186)


# -- holds and metered tools -------------------------------------------------------------

def test_a_hold_is_released_when_the_block_raises_or_does_not_capture(gateway: Gateway) -> None:
    _, key = new_agent(gateway, "1")
    with Client(gateway.url, key) as iou:
        with pytest.raises(RuntimeError), iou.hold("llm_summarize", max="0.5") as h:
            assert iou.status().held == Decimal("0.5")
            raise RuntimeError("the tool failed")
        assert h.released is not None and iou.status().held == 0
        with iou.hold("llm_summarize", max="0.5") as h:
            pass
        assert h.released is not None and iou.status().balance == 1
        with iou.hold("llm_summarize", max="0.5") as h:
            h.capture("0.1")
        with pytest.raises(HoldClosed):
            h.capture("0.1")
        assert iou.status().balance == Decimal("0.9")


def test_a_metered_tool_never_runs_when_refused(gateway: Gateway) -> None:
    _, key = new_agent(gateway, "0.1")
    ran: list[str] = []
    with Client(gateway.url, key) as iou:
        @iou.metered("web_browse")
        def browse(url: str) -> str:
            ran.append(url)
            return "<html>"

        @iou.metered("llm_summarize", max="0.5", cost=lambda text: "0.01")
        def summarize(text: str) -> str:
            ran.append(text)
            return "short"

        with pytest.raises(BalanceInsufficient):
            browse("https://example.com")
        with pytest.raises(BalanceInsufficient):
            summarize("a long page")
        assert ran == [] and iou.status().balance == Decimal("0.1")


def test_metered_fixed_and_variable_prices(gateway: Gateway) -> None:
    _, key = new_agent(gateway, "1")
    with Client(gateway.url, key) as iou:
        @iou.metered("web_search")
        def search(q: str) -> list[str]:
            return [q]

        @iou.metered("llm_summarize", max="0.5", cost=lambda text: Decimal(len(text)) / 100)
        def summarize(text: str) -> str:
            if not text:
                raise ValueError("nothing to summarize")
            return text[:7]

        assert search("pricing") == ["pricing"]
        assert summarize("a long page about prices") == "a long "
        assert iou.status().balance == Decimal("0.88")  # 1 - 0.05 - 0.07
        with pytest.raises(ValueError):
            summarize("")
        status = iou.status()
        assert status.held == 0 and status.balance == Decimal("0.88")


def test_metered_async_tools_on_both_clients(gateway: Gateway) -> None:
    _, key = new_agent(gateway, "1")
    ran: list[str] = []
    sync_client = Client(gateway.url, key)

    @sync_client.metered("web_search")
    async def search_via_sync(q: str) -> str:
        ran.append(q)
        return q

    async def run() -> Decimal:
        async with AsyncClient(gateway.url, key) as iou:
            @iou.metered("llm_summarize", max="0.5", cost=lambda text: "0.02")
            async def summarize(text: str) -> str:
                if text == "boom":
                    raise RuntimeError(text)
                ran.append(text)
                return text

            assert await search_via_sync("a") == "a"
            assert await summarize("b") == "b"
            with pytest.raises(RuntimeError):
                await summarize("boom")
            status = await iou.status()
            assert status.held == 0
            with pytest.raises(TypeError):
                iou.metered("web_search")(lambda: None)  # type: ignore[arg-type, return-value]
            return status.balance

    try:
        assert asyncio.run(run()) == Decimal("0.93") and ran == ["a", "b"]
    finally:
        sync_client.close()


def test_async_hold_as_context_manager_and_awaited(gateway: Gateway) -> None:
    _, key = new_agent(gateway, "1")

    async def run() -> None:
        async with AsyncClient(gateway.url, key) as iou:
            with pytest.raises(RuntimeError):
                async with iou.hold("llm_summarize", max="0.3"):
                    raise RuntimeError("failed")
            async with iou.hold("llm_summarize", max="0.3") as h:
                await h.capture("0.1")
            opened = await iou.hold("llm_summarize", max="0.3")
            released = await opened.release()
            assert released.released == Decimal("0.3")
            status = await iou.status()
            assert (status.held, status.balance) == (Decimal(0), Decimal("0.9"))

    asyncio.run(run())


# -- warnings and iterators --------------------------------------------------------------

def test_warnings_reach_on_warning_and_last_warnings(gateway: Gateway, admin: Client) -> None:
    name, key = new_agent(gateway, "1")
    admin.request("PATCH", f"/v1/agents/{name}/limits", {"low_balance": "0.9"})
    heard: list[tuple[str, str]] = []
    with Client(gateway.url, key,
                on_warning=lambda w, answer: heard.append((w, answer["balance"]))) as iou:
        iou.charge("email_send")
        first = iou.last_warnings
        iou.charge("web_browse")
        assert first == () and iou.last_warnings == ("low_balance",)
        assert heard == [("low_balance", "0.86")]


def test_ledger_and_agents_iterators_follow_the_cursor(gateway: Gateway,
                                                       admin: Client) -> None:
    name, key = new_agent(gateway, "1")
    with Client(gateway.url, key) as iou:
        for _ in range(4):
            iou.charge("email_send")
    entries = ledger_after_fund(admin, name)  # grant, 4 charges, fund
    paged = list(admin.ledger(name, page_size=2))
    assert [e.entry_id for e in paged] == [e.entry_id for e in entries]
    assert len(paged) == 6 and paged[-1].kind == "grant"
    assert [e.amount for e in admin.ledger(name, kind="charge", page_size=3)] == (
        [Decimal("0.02")] * 4)
    names = [a.agent for a in admin.agents(page_size=3)]
    assert name in names and len(names) == len(set(names))


# -- invoke and the async client's retries -----------------------------------------------

class _Upstream(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        status = 500 if self.path == "/fail" else 200
        answer = b'{"error": "not_found", "message": "upstream"}' if status == 500 else body
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


def test_invoke_returns_the_upstream_answer_and_raises_refusals(gateway: Gateway,
                                                                admin: Client) -> None:
    with upstream_server(_Upstream) as upstream:
        for tool, path in (("sdk_echo", "/echo"), ("sdk_fail", "/fail")):
            admin.request("PUT", f"/v1/tools/{tool}", {"price": "0.3", "category": "tool",
                                                       "upstream": upstream + path})
        _, key = new_agent(gateway, "0.5")
        with Client(gateway.url, key) as iou:
            failed = iou.invoke("sdk_fail", {"q": "x"})  # an upstream error is its answer
            assert failed.status == 500 and failed.charge_id is None
            assert failed.json()["error"] == "not_found"  # the upstream's, not raised
            echoed = iou.invoke("sdk_echo", {"q": "pricing"})
            assert echoed.status == 200 and echoed.json() == {"q": "pricing"}
            assert echoed.charge_id and echoed.balance == Decimal("0.2")
            with pytest.raises(BalanceInsufficient):
                iou.invoke("sdk_echo", {"q": "again"})
            assert iou.status().balance == Decimal("0.2")


def test_the_async_client_retries_a_lost_answer_with_the_same_key(
        gateway: Gateway, admin: Client, proxy: DropProxy) -> None:
    name, key = new_agent(gateway, "1")
    proxy.drop("/v1/charge")
    proxy.drop("/v1/holds")  # the hold's answer (and, armed below, the capture's)

    async def run() -> None:
        async with AsyncClient(proxy.url, key, backoff_s=FAST_S) as iou:
            assert (await iou.charge("web_search")).balance == Decimal("0.95")
            async with iou.hold("llm_summarize", max="0.5") as h:
                proxy.drop(f"/v1/holds/{h.hold_id}/capture")
                done = await h.capture("0.1")
            assert done.balance == Decimal("0.85")

    asyncio.run(run())
    sent = proxy.requests_to("/v1/")
    assert [s.dropped for s in sent] == [True, False, True, False, True, False]
    assert all(a.idempotency_key == b.idempotency_key for a, b in zip(sent[::2], sent[1::2],
                                                                        strict=True))
    kinds = [e.kind for e in ledger_after_fund(admin, name)]
    assert (kinds.count("charge"), kinds.count("hold"), kinds.count("capture")) == (1, 1, 1)
