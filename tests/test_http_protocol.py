"""The gateway's HTTP protocol: one write per event-loop pass, nothing reordered or lost."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import subprocess
import sys
from typing import Any

from gateway.api.app import create_app
from gateway.api.http_protocol import CoalescingTransport
from gateway.cli.main import GC_YOUNG_THRESHOLD
from gateway.config import load_settings
from tests.gateway_proc import Gateway
from tests.http_helpers import new_agent


class RecordingTransport(asyncio.Transport):
    """The real transport's side of the contract: what was written, in which calls."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0


async def test_writes_of_one_pass_leave_in_one_write_in_order() -> None:
    real = RecordingTransport()
    t = CoalescingTransport(real, asyncio.get_running_loop())
    t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    t.write(b"{}")
    assert real.writes == []  # queued until the loop runs the flush
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    t.write(b"second")
    await asyncio.sleep(0)
    assert real.writes[1:] == [b"second"]


async def test_close_flushes_first_and_a_closed_transport_gets_nothing() -> None:
    real = RecordingTransport()
    t = CoalescingTransport(real, asyncio.get_running_loop())
    t.write(b"last words")
    t.close()
    assert real.writes == [b"last words"] and real.closed
    t.write(b"too late")
    await asyncio.sleep(0)  # the scheduled flush finds the transport closing: no write
    assert real.writes == [b"last words"]
    assert t.get_write_buffer_size() == 0


def _read_responses(sock: socket.socket, count: int) -> list[bytes]:
    data = b""
    responses: list[bytes] = []
    while len(responses) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(responses)} responses"
        data += chunk
        while b"\r\n\r\n" in data:
            head, rest = data.split(b"\r\n\r\n", 1)
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            if len(rest) < length:
                break
            responses.append(head + b"\r\n\r\n" + rest[:length])
            data = rest[length:]
    return responses


def test_pipelined_requests_get_their_own_answers_in_order(gateway: Gateway) -> None:
    """Three requests in one TCP write to the real server: three complete answers, in
    order, each with its own body (coalescing must not mix or drop responses)."""
    _, key = new_agent(gateway, grant="5")
    host, port = gateway.url.removeprefix("http://").split(":")
    bodies = [b'{"tool":"web_search"}', b'{"tool":"nope-no-such-tool"}', b'{"tool":"calc"}']
    raw = b"".join(
        b"POST /v1/charge HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\n\r\n" + body for body in bodies)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(raw)
        responses = _read_responses(sock, 3)
    assert [r.split(b" ", 2)[1] for r in responses] == [b"200", b"404", b"200"]
    assert b'"tool":"web_search"' in responses[0] and b'"tool":"calc"' in responses[2]
    assert b"\"error\":\"not_found\"" in responses[1]


async def test_the_app_factory_leaves_the_collector_alone(
        real_redis_url: str, tmp_path: Any) -> None:
    """The collector is the process's: an app that a test (or an embedding program)
    creates must not freeze it or change its thresholds."""
    gc.unfreeze()
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    app = create_app(load_settings({"IOU_REDIS_URL": real_redis_url,
                                    "IOU_DATA_DIR": str(tmp_path)}))
    async with app.app.router.lifespan_context(app.app):
        assert gc.get_threshold() == threshold
        assert gc.get_freeze_count() == frozen


def test_iou_serve_settles_the_collector_of_its_workers(tmp_path: Any) -> None:
    """`iou serve`'s worker factory freezes what start-up built and raises the young
    threshold (in a process of its own: it changes process-wide state)."""
    code = ("import gc; from gateway.cli.main import serve_app; serve_app(); "
            "print(gc.get_threshold()[0], gc.get_freeze_count())")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    env["IOU_DATA_DIR"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    assert int(out[0]) == GC_YOUNG_THRESHOLD
    assert int(out[1]) > 1000  # modules and routes
