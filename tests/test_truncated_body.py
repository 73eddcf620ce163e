"""A request whose body did not arrive whole is never charged (raw sockets)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

import pytest
import redis

from tests.gateway_proc import ADMIN_TOKEN, Gateway
from tests.http_helpers import new_agent
from tests.raw_http import closed_by_peer, connect, redis_snapshot, stays_equal


@pytest.fixture(scope="module")
def redis_client(gateway_redis: tuple[str, subprocess.Popen[bytes]]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(gateway_redis[0])
    yield client
    client.close()


def _head(path: str, token: str, declared: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer {token}\r\ncontent-length: {declared}\r\n\r\n").encode()


ROUTES = [
    # (route, who, path, a complete JSON body that would be charged if taken as the whole)
    ("charge (fast path)", "agent", "/v1/charge", b'{"tool": "web_search"}'),
    ("batch", "agent", "/v1/charges", b'{"charges": [{"tool": "web_search"}]}'),
    ("hold", "agent", "/v1/holds", b'{"tool": "web_search"}'),
    ("fund", "admin", "/v1/agents/{agent}/fund", b'{"amount": "1"}'),
]


@pytest.mark.parametrize("how", ["close", "half-close"])
@pytest.mark.parametrize("route", ROUTES, ids=[r[0] for r in ROUTES])
def test_truncated_body_is_never_charged(gateway: Gateway, redis_client: redis.Redis,
                                         route: tuple[str, str, str, bytes], how: str) -> None:
    _, who, path, body = route
    agent, api_key = new_agent(gateway, "5", "truncated")
    token = ADMIN_TOKEN if who == "admin" else api_key
    before = redis_snapshot(redis_client)
    sock = connect(gateway.url)
    # Content-Length promises 50 more bytes than are sent, then the client goes away.
    sock.sendall(_head(path.format(agent=agent), token, len(body) + 50) + body)
    if how == "close":
        sock.close()
    else:
        sock.shutdown(socket.SHUT_WR)
        assert closed_by_peer(sock, 10)
        sock.close()
    assert stays_equal(lambda: redis_snapshot(redis_client), before, 1.0)
