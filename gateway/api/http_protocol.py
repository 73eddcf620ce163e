"""The HTTP protocol the gateway serves with: uvicorn's httptools protocol, one send per tick.

uvicorn writes a response's head and its body with two ``transport.write`` calls, and
uvloop turns each into a ``send`` system call, a large part of the CPU of a small JSON
request (``python -m loadtests.bench`` runs its reference app on both protocols; see the
README). So the transport handed to uvicorn queues what is written during one pass of the
event loop and hands it to the real transport once, in a callback of the same pass.
Nothing is reordered or dropped: close() first flushes what is queued, and a transport
that is already closing gets nothing (uvloop would discard it too).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport(asyncio.Transport):
    """A transport that joins the writes of one event-loop pass into one write."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._queued: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._queued:
            self._loop.call_soon(self.flush)
        self._queued.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        queued, self._queued = self._queued, []
        if queued and not self._transport.is_closing():
            self._transport.write(queued[0] if len(queued) == 1 else b"".join(queued))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._queued = []
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._queued))

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a CoalescingTransport (`uvicorn.run(http=...)`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))
