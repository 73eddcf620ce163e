"""Slow clients are cut off (408 JSON where a request was partly received), normal calls keep
their latency meanwhile, and a connection cap answers a JSON 503.

The gateway here runs with 1-second timeouts (IOU_*_TIMEOUT_S) so each case is bounded.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.gateway_proc import Gateway, running_gateway
from tests.http_helpers import new_agent, seed_tools
from tests.raw_http import closed_by_peer, connect, read_response, redis_snapshot, stays_equal
from tests.servers import redis_server

TIMEOUT_S = 1
CUT_WITHIN_S = 6  # the timeout, the sweep's granularity, and a loaded 2-core machine
DRIBBLERS = 70


@pytest.fixture(scope="module")
def slow_stack() -> Iterator[tuple[Gateway, redis.Redis]]:
    with redis_server() as (redis_url, _), \
            running_gateway(redis_url, IOU_HEADER_TIMEOUT_S=str(TIMEOUT_S),
                            IOU_BODY_TIMEOUT_S=str(TIMEOUT_S),
                            IOU_KEEPALIVE_TIMEOUT_S=str(TIMEOUT_S)) as gw:
        seed_tools(gw)
        client = redis.Redis.from_url(redis_url)
        try:
            yield gw, client
        finally:
            client.close()


def _charge_head(api_key: str, length: int) -> bytes:
    return (f"POST /v1/charge HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {api_key}"
            f"\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n").encode()


def _dribble_until_answered(sock: socket.socket, data: bytes, deadline_s: float) -> bytes:
    """Send ``data`` a byte every 0.1 s; return what the server answered before closing."""
    received = b""
    deadline = time.monotonic() + deadline_s
    for byte in data:
        readable, _, _ = select.select([sock], [], [], 0.1)
        if readable:
            break
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        assert time.monotonic() < deadline, "the slow client was never cut off"
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"not closed within {deadline_s} s; got {received!r}")


def _assert_408(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert b"content-type: application/json" in head.lower(), answer
    assert b'"error":"request_timeout"' in body and b'"message"' in body, answer


def test_a_dribbled_head_gets_408_json_and_is_cut(slow_stack: tuple[Gateway, redis.Redis]
                                                  ) -> None:
    gw, _ = slow_stack
    _, api_key = new_agent(gw, "5", "slow")
    with connect(gw.url) as sock:
        answer = _dribble_until_answered(sock, _charge_head(api_key, 22) * 10, CUT_WITHIN_S)
    _assert_408(answer)


def test_a_dribbled_body_gets_408_json_and_is_never_charged(
        slow_stack: tuple[Gateway, redis.Redis]) -> None:
    gw, client = slow_stack
    _, api_key = new_agent(gw, "5", "slow")
    body = b'{"tool": "web_search", "metadata": {"pad": "' + b"x" * 200 + b'"}}'
    before = redis_snapshot(client)
    with connect(gw.url) as sock:
        sock.sendall(_charge_head(api_key, len(body)))
        answer = _dribble_until_answered(sock, body, CUT_WITHIN_S)
    _assert_408(answer)
    assert stays_equal(lambda: redis_snapshot(client), before, 0.5)


@pytest.mark.parametrize("opening", [b"", b"\r\n", b"GET"], ids=["silent", "crlf", "partial"])
def test_an_idle_or_stalled_connection_is_closed(slow_stack: tuple[Gateway, redis.Redis],
                                                 opening: bytes) -> None:
    gw, _ = slow_stack
    with connect(gw.url) as sock:
        sock.sendall(opening)
        assert closed_by_peer(sock, CUT_WITHIN_S)


def test_keep_alive_is_cut_when_idle_but_not_while_in_use(
        slow_stack: tuple[Gateway, redis.Redis]) -> None:
    gw, _ = slow_stack
    request = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
    with connect(gw.url) as sock:
        # A request every 0.3 s for 2.4 s: longer than the idle timeout, never idle that long.
        for _ in range(8):
            sock.sendall(request)
            response = read_response(sock)
            assert response is not None and response.status == 200
            time.sleep(0.3)
        assert closed_by_peer(sock, CUT_WITHIN_S)


def test_normal_calls_keep_their_latency_while_dribblers_are_cut(
        slow_stack: tuple[Gateway, redis.Redis]) -> None:
    gw, _ = slow_stack
    _, api_key = new_agent(gw, "50", "fast")
    head = _charge_head(api_key, 22)
    dribblers = [connect(gw.url) for _ in range(DRIBBLERS)]
    started = time.monotonic()
    try:
        for sock in dribblers:
            sock.sendall(head[:10])
        with httpx.Client(base_url=gw.url, timeout=10,
                          headers={"authorization": f"Bearer {api_key}"}) as client:
            latencies = []
            for _ in range(10):
                t = time.monotonic()
                assert client.post("/v1/charge", json={"tool": "web_search"}).status_code == 200
                latencies.append(time.monotonic() - t)
        # Each charge answers as on an idle gateway: the dribblers cost it nothing.
        assert sorted(latencies)[len(latencies) // 2] < 0.25, latencies
        open_socks = set(dribblers)
        while open_socks:
            assert time.monotonic() - started < CUT_WITHIN_S + 2, f"{len(open_socks)} still open"
            for sock in list(open_socks):
                readable, _, _ = select.select([sock], [], [], 0)
                if readable and _drained(sock):
                    open_socks.discard(sock)
            time.sleep(0.05)
    finally:
        for sock in dribblers:
            sock.close()


def _drained(sock: socket.socket) -> bool:
    """Read what is there; True once the server has closed."""
    try:
        sock.settimeout(0.01)
        return sock.recv(65536) == b""
    except (ConnectionResetError, TimeoutError):
        return True


def test_connections_above_the_cap_get_a_json_503() -> None:
    with redis_server() as (redis_url, _), \
            running_gateway(redis_url, IOU_CONNECTIONS_MAX="8", IOU_HEADER_TIMEOUT_S="30",
                            IOU_KEEPALIVE_TIMEOUT_S="30") as gw:
        held = [connect(gw.url) for _ in range(8)]
        try:
            for sock in held:
                sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # heads never finished
            with connect(gw.url) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
                response = read_response(sock)
            assert response is not None and response.status == 503
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"] == "unavailable" and response.json()["message"]
        finally:
            for sock in held:
                sock.close()
        # Below the cap again: served.
        deadline = time.monotonic() + 5
        while httpx.get(gw.url + "/healthz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
