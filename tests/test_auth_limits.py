"""Failed-authentication limits over HTTP against real gateways.

A valid credential is never refused because of others' failures; wrong credentials are
limited per presented credential, per client address (X-Forwarded-For believed only from
IOU_TRUSTED_PROXIES) and for everyone together, in Redis (shared by every worker), answered
429 ``rate_limited`` with Retry-After. Each test sends from its own loopback addresses
(127.0.0.0/8 is all local on Linux), so the tests do not count against each other.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from gateway.api.auth import (
    ADMIN,
    Authenticator,
    FailureLimits,
    client_address,
)
from gateway.metering.engine import Engine
from gateway.metering.errors import RateLimited, Unauthorized
from tests.gateway_proc import ADMIN_TOKEN, Gateway, running_gateway
from tests.http_helpers import error_of, new_agent, seed_tools
from tests.servers import redis_server

PROXY = "127.0.0.5"


@pytest.fixture(scope="module")
def limited(gateway_redis: tuple[str, subprocess.Popen[bytes]]) -> Iterator[Gateway]:
    with running_gateway(gateway_redis[0], IOU_TRUSTED_PROXIES=f"{PROXY},10.0.0.0/8") as gw:
        seed_tools(gw)
        yield gw


def client_from(gw: Gateway, address: str, token: str | None = None) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    return httpx.Client(base_url=gw.url, transport=transport, headers=headers, timeout=30)


def wrong() -> str:
    return "iou_" + secrets.token_urlsafe(32)


def get_balance(gw: Gateway, address: str, token: str | None,
                forwarded: str | None = None) -> httpx.Response:
    headers = {} if forwarded is None else {"x-forwarded-for": forwarded}
    with client_from(gw, address, token) as client:  # a new connection: any worker
        try:
            return client.get("/v1/balance", headers=headers)
        except httpx.TransportError as exc:  # say what the gateway saw, then fail
            pytest.fail(f"{exc!r} from {address}; gateway log:\n{gw.log_text()[-4000:]}")


def assert_rate_limited(response: httpx.Response, window_s: int = 60) -> None:
    assert response.status_code == 429, response.text
    assert error_of(response) == "rate_limited"
    assert 1 <= int(response.headers["retry-after"]) <= window_s


def test_valid_credentials_pass_from_a_locked_out_address(limited: Gateway) -> None:
    address = "127.0.0.2"
    _, key = new_agent(limited, "1")
    codes = [get_balance(limited, address, wrong()).status_code for _ in range(20)]
    assert codes == [401] * 20  # 20 failures of 20 different credentials: the client's max
    assert_rate_limited(get_balance(limited, address, wrong()))  # expectation: 429
    assert_rate_limited(get_balance(limited, address, None))  # no token counts as well: 429
    with client_from(limited, address, ADMIN_TOKEN) as admin:
        assert admin.get("/v1/tools").status_code == 200  # the admin: never refused, 200
    with client_from(limited, address, key) as agent:
        assert agent.get("/v1/balance").status_code == 200  # a valid agent key: 200
        assert agent.post("/v1/charge", json={"tool": "web_search"}).status_code == 200
    assert get_balance(limited, "127.0.0.3", wrong()).status_code == 401  # others: 401


def test_one_credential_is_limited_from_every_address(limited: Gateway) -> None:
    token = wrong()
    codes = [get_balance(limited, f"127.0.1.{i}", token).status_code for i in range(1, 11)]
    assert codes == [401] * 10  # 10 addresses, one try each: the credential's max
    assert_rate_limited(get_balance(limited, "127.0.1.11", token))  # 429 from a fresh one
    assert get_balance(limited, "127.0.1.11", wrong()).status_code == 401  # another: 401


def test_forwarded_for_counts_only_from_trusted_proxies(limited: Gateway) -> None:
    # From an untrusted peer the header is ignored: rotating it changes nothing.
    spoofed = [get_balance(limited, "127.0.2.1", wrong(), f"198.51.100.{i}").status_code
               for i in range(21)]
    assert spoofed == [401] * 20 + [429]
    # Through the trusted proxy, the rightmost untrusted address is the client.
    behind = [get_balance(limited, PROXY, wrong(), "198.51.100.7").status_code
              for _ in range(20)]
    assert behind == [401] * 20
    assert_rate_limited(get_balance(limited, PROXY, wrong(), "198.51.100.7"))
    # Another client behind the same proxy is not limited by the first one: 401.
    assert get_balance(limited, PROXY, wrong(), "198.51.100.8").status_code == 401
    # A forged left part does not help; a trusted hop (10.0.0.0/8) on the right is skipped.
    assert_rate_limited(get_balance(limited, PROXY, wrong(), "203.0.113.9, 198.51.100.7"))
    assert_rate_limited(get_balance(limited, PROXY, wrong(), "198.51.100.7, 10.1.2.3"))
    # Valid credentials through the proxy are never refused (admin on an agent route: 403).
    assert get_balance(limited, PROXY, ADMIN_TOKEN, "198.51.100.7").status_code == 403
    _, key = new_agent(limited, "1")
    assert get_balance(limited, PROXY, key, "198.51.100.7").status_code == 200


def test_two_workers_share_the_counts_and_everyone_has_a_cap() -> None:
    with redis_server() as (url, _), running_gateway(
            url, workers=2, IOU_AUTH_FAILURES_GLOBAL="60") as gw:
        seed_tools(gw)
        _, key = new_agent(gw, "1")
        # One client, each try on a new connection (the kernel spreads them over both
        # workers): counted once in Redis, so the 21st is refused whichever worker answers.
        codes = [get_balance(gw, "127.0.3.1", wrong()).status_code for _ in range(20)]
        assert codes == [401] * 20
        for _ in range(4):
            assert_rate_limited(get_balance(gw, "127.0.3.1", wrong()))
        # Rotating sources, one guess each: everyone's cap (60 a minute) stops them too.
        rotating = [get_balance(gw, f"127.0.4.{i}", wrong()).status_code
                    for i in range(1, 61)]
        assert 429 in rotating and rotating.index(429) <= 40, rotating
        assert set(rotating[rotating.index(429):]) == {429}
        assert_rate_limited(get_balance(gw, "127.0.5.1", wrong()))
        # Valid credentials from anywhere are untouched: 200.
        assert get_balance(gw, "127.0.5.1", key).status_code == 200
        with client_from(gw, "127.0.5.2", ADMIN_TOKEN) as admin:
            assert admin.get("/v1/tools").status_code == 200


async def test_a_window_ends_and_the_client_may_try_again(real_engine: Engine) -> None:
    auth = Authenticator(real_engine, ADMIN_TOKEN, FailureLimits(window_s=1, per_client=2))
    for _ in range(2):
        with pytest.raises(Unauthorized):
            await auth.caller_from("Bearer " + wrong(), "10.9.9.9")
    with pytest.raises(RateLimited) as refused:
        await auth.caller_from("Bearer " + wrong(), "10.9.9.9")
    assert refused.value.details == {"retry_after_s": 1}
    assert await auth.caller_from("Bearer " + ADMIN_TOKEN, "10.9.9.9") == ADMIN
    deadline = time.monotonic() + 5
    while True:  # the window (1 s) ends: a wrong token is a plain 401 again
        try:
            await auth.caller_from("Bearer " + wrong(), "10.9.9.9")
        except Unauthorized:
            break
        except RateLimited:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)


@pytest.mark.parametrize(("peer", "forwarded", "expected"), [
    ("127.0.0.9", "1.2.3.4", "127.0.0.9"),  # untrusted peer: the header is ignored
    ("127.0.0.5", None, "127.0.0.5"),  # a trusted proxy with no header is the client
    ("127.0.0.5", "1.2.3.4", "1.2.3.4"),
    ("127.0.0.5", "6.6.6.6, 1.2.3.4", "1.2.3.4"),  # the client's own left part is ignored
    ("127.0.0.5", "1.2.3.4, 10.0.0.1, 10.2.2.2", "1.2.3.4"),  # trusted hops are skipped
    ("127.0.0.5", "10.0.0.1, 10.2.2.2", "10.0.0.1"),  # all trusted: the leftmost
    ("127.0.0.5", "garbage, 10.0.0.1", "garbage"),  # unparsable: kept as the client
    ("127.0.0.5", " , ", "127.0.0.5"),
])
def test_client_address(peer: str, forwarded: str | None, expected: str) -> None:
    trusted = [ipaddress.ip_network("127.0.0.5"), ipaddress.ip_network("10.0.0.0/8")]
    assert client_address(peer, forwarded, trusted) == expected
