"""The server's own failure answers are the contract's JSON too: the charge fast path's 500,
uvicorn's 500 for an app that raised, and its 503 above the connection cap."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

from starlette.applications import Starlette
from uvicorn.config import Config
from uvicorn.server import ServerState

from gateway.api.fastpath import ChargeFastPath
from gateway.api.http_protocol import GatewayHttpProtocol
from gateway.config import load_settings

CHARGE = (b"POST /v1/charge HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer iou_x\r\n"
          b"content-type: application/json\r\ncontent-length: 22\r\n\r\n"
          b'{"tool": "web_search"}')


class Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.data = b""
        self.closed = False

    def write(self, data: Any) -> None:
        self.data += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def _serve_one(app: Any, raw: bytes, **config: Any) -> bytes:
    """``raw`` through the gateway's protocol in this process; the bytes it answered."""
    cfg = Config(app=app, lifespan="off", log_level="critical", **config)
    cfg.load()
    protocol = GatewayHttpProtocol(config=cfg, server_state=ServerState(), app_state={},
                                   _loop=asyncio.get_running_loop())
    transport = Recording()
    protocol.connection_made(transport)
    protocol.data_received(raw)
    for _ in range(200):  # a few loop passes: the app task runs and the answer is flushed
        cycle = protocol.cycle
        if transport.closed or (cycle is not None and cycle.response_complete):
            break
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport.data


def _json_answer(data: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), data
    payload = json.loads(body)
    assert set(payload) >= {"error", "message"} and payload["message"], payload
    return int(head.split(b" ")[1]), payload


async def test_the_fast_path_answers_an_unexpected_failure_as_json() -> None:
    class Broken:
        async def caller_from(self, *args: Any) -> Any:
            raise RuntimeError("a bug, not the client's fault")

    starlette = Starlette()
    starlette.state.settings = load_settings({})
    starlette.state.ctx = SimpleNamespace(auth=Broken(), settings=starlette.state.settings)
    status, payload = _json_answer(await _serve_one(ChargeFastPath(starlette), CHARGE))
    assert (status, payload["error"]) == (500, "internal")


async def test_an_app_that_raises_gets_uvicorns_500_as_json() -> None:
    async def raising(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    status, payload = _json_answer(await _serve_one(raising, CHARGE))
    assert (status, payload["error"]) == (500, "internal")


async def test_above_the_connection_cap_the_answer_is_a_json_503() -> None:
    async def never_called(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the cap answers first")

    # limit_concurrency 1: this connection alone reaches it.
    data = await _serve_one(never_called, CHARGE, limit_concurrency=1)
    status, payload = _json_answer(data)
    assert (status, payload["error"]) == (503, "unavailable")
    assert b"retry-after: 1" in data.lower()
