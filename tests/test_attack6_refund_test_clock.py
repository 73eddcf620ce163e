"""Under the test clock (IOU_TEST_CLOCK=1, the scripts' clock moved days ahead), a refund of a
charge answered a moment ago waits for the ledger writer as it does on the real clock: it
compared the ids' mint time (the gateway's wall clock) with a backlog dated by the moved
clock, found the backlog "newer" than the charge and answered 404 at once."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from gateway.store.keys import TEST_CLOCK_KEY
from tests.gateway_proc import Gateway, running_gateway
from tests.http_helpers import new_agent, seed_tools
from tests.servers import redis_server

DAYS_AHEAD_MS = 3 * 86_400_000
REFUNDS = 10


@pytest.fixture(scope="module")
def clocked_gateway() -> Iterator[tuple[Gateway, str]]:
    with redis_server() as (url, _process), running_gateway(url, IOU_TEST_CLOCK="1") as gw:
        seed_tools(gw)
        yield gw, url


def test_a_refund_right_after_the_charge_finds_it_on_a_moved_clock(
        clocked_gateway: tuple[Gateway, str]) -> None:
    gw, url = clocked_gateway
    with redis.Redis.from_url(url) as client:
        client.set(TEST_CLOCK_KEY, DAYS_AHEAD_MS)
    name, key = new_agent(gw, grant="10")
    with gw.agent(key) as agent, gw.admin() as admin:
        for _ in range(REFUNDS):
            charged = agent.post("/v1/charge", json={"tool": "web_search"})
            assert charged.status_code == 200, charged.text
            refund = admin.post(f"/v1/charges/{charged.json()['charge_id']}/refund", json={})
            assert refund.status_code == 200, refund.text
            assert refund.json()["amount"] == "0.05"
        assert agent.get("/v1/balance").json()["balance"] == "10"
    # The moved clock dates the ledger rows: the charges are three days ahead of now. The
    # last refund reaches the ledger through the writer, a moment after its answer.
    deadline = time.monotonic() + 30
    with gw.admin() as admin:
        while True:
            entries = admin.get(f"/v1/agents/{name}/ledger", params={"kind": "refund"}).json()
            if len(entries["entries"]) >= REFUNDS or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert len(entries["entries"]) == REFUNDS
    assert entries["entries"][0]["at"] > time.strftime("%Y-%m-%dT%H:%M:%S",
                                                        time.gmtime(time.time() + 86_400))
