"""Raw-socket HTTP for tests that send what no HTTP client library would."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def connect(url: str, timeout_s: float = 10) -> socket.socket:
    sock = socket.create_connection(address(url), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket, deadline_s: float = 10) -> RawResponse | None:
    """The first response on ``sock`` (None if the server closed without answering)."""
    deadline = time.monotonic() + deadline_s
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = _recv(sock, deadline)
        if not chunk:
            return None if not data else _fail(data)
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = _recv(sock, deadline)
        if not chunk:
            break
        rest += chunk
    return RawResponse(status, headers, rest[:length])


def _recv(sock: socket.socket, deadline: float) -> bytes:
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        return sock.recv(65536)
    except (ConnectionResetError, BrokenPipeError):
        return b""


def _fail(data: bytes) -> RawResponse:
    raise AssertionError(f"incomplete response head: {data[:200]!r}")


def exchange(url: str, raw: bytes, deadline_s: float = 10) -> RawResponse | None:
    """Send ``raw`` on a fresh connection and read the first answer."""
    with connect(url, deadline_s) as sock:
        # The server may answer and close before all was sent: read what it said.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(raw)
        return read_response(sock, deadline_s)


def closed_by_peer(sock: socket.socket, deadline_s: float) -> bool:
    """Whether the server closes ``sock`` within ``deadline_s`` (reading what it sends)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def request_bytes(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                  content_length: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if content_length and body:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# Bookkeeping that an authenticated request writes whatever its fate: a key's last use, the
# failed-authentication windows; and the ledger writers' counters for /metrics (iou:stats).
# Not money: left out of the snapshots.
NOT_MONEY = (b":keyused:", b"{auth}", b"iou:stats")


def redis_snapshot(client: Any) -> dict[Any, Any]:
    """Every key's content except streams (the ledger writer trims those as it goes) and
    authentication bookkeeping."""
    state: dict[Any, Any] = {}
    for key in sorted(client.keys("*")):
        if any(part in key for part in NOT_MONEY):
            continue
        kind = client.type(key)
        if kind == b"hash":
            state[key] = client.hgetall(key)
        elif kind == b"zset":
            state[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            state[key] = client.smembers(key)
        elif kind == b"string":
            state[key] = client.get(key)
        elif kind == b"list":
            state[key] = client.lrange(key, 0, -1)
    return state


def stays_equal(snapshot: Callable[[], object], expected: object, window_s: float) -> bool:
    """Whether ``snapshot()`` keeps equal to ``expected`` for ``window_s`` (an absence can
    only be checked over a window; a change fails at once)."""
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline:
        if snapshot() != expected:
            return False
        time.sleep(0.05)
    return bool(snapshot() == expected)
