"""The HTTP protocol the gateway serves with: uvicorn's httptools protocol, one send per
tick, JSON for every protocol error, limits on the request head and timeouts for slow clients.

uvicorn writes a response's head and its body with two ``transport.write`` calls, and
uvloop turns each into a ``send`` system call, a large part of the CPU of a small JSON
request (``python -m loadtests.bench`` runs its reference app on both protocols; see the
README). So the transport handed to uvicorn queues what is written during one pass of the
event loop and hands it to the real transport once, in a callback of the same pass.
Nothing is reordered or dropped: close() first flushes what is queued, and a transport
that is already closing gets nothing (uvloop would discard it too).

uvicorn answers what its parser refuses with a text/plain 400 and lets a client take as
long as it likes to send a request. Here every refusal is the contract's JSON error (400
``malformed_request``, 414 ``uri_too_long``, 431 ``headers_too_large``, 408
``request_timeout``, 505 ``http_version_not_supported``, 503 ``unavailable`` at the
connection cap), and one sweep per event loop cuts connections that stay too long in one
phase: the request head (IOU_HEADER_TIMEOUT_S), the body after it (IOU_BODY_TIMEOUT_S), or
idle between requests (IOU_KEEPALIVE_TIMEOUT_S). A request partly received gets a 408
before the close; a body cut short is never acted on (the app reads a disconnect).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway.config import Settings, load_settings

log = logging.getLogger("iou.http")

# What a connection is waiting for; each phase has its own time limit.
IDLE, HEAD, BODY, APP = range(4)
SWEEP_INTERVAL_MIN_S, SWEEP_INTERVAL_MAX_S = 0.1, 1.0


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


@functools.cache
def _settings() -> Settings:
    # uvicorn builds the protocol itself (no arguments of ours): the same environment the
    # app reads; `iou serve` has already validated it.
    return load_settings()


def error_bytes(status: int, code: str, message: str, extra: bytes = b"") -> bytes:
    """A whole HTTP response carrying the contract's JSON error, closing the connection."""
    body = orjson.dumps({"error": code, "message": message})
    return b"".join([STATUS_LINE[status], b"content-type: application/json\r\n",
                     b"content-length: ", str(len(body)).encode(), b"\r\n", extra,
                     b"connection: close\r\n\r\n", body])


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the protocol knows what to answer."""


class GatewayHttpProtocol(CoalescingHttpToolsProtocol):
    """The coalescing protocol plus head limits, JSON protocol errors and slow-client
    timeouts (`uvicorn.run(http=...)`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = _settings()
        self.url_bytes_max = settings.url_bytes_max
        self.header_bytes_max = settings.header_bytes_max
        self.headers_count_max = settings.headers_count_max
        self.phase_limits_s = {IDLE: float(settings.keepalive_timeout_s),
                               HEAD: float(settings.header_timeout_s),
                               BODY: float(settings.body_timeout_s)}
        self.phase = IDLE
        self.phase_since = 0.0
        self.head_bytes = 0  # raw bytes received while the head is incomplete
        self.header_bytes = 0  # bytes of the header lines parsed so far
        self.refusal: tuple[int, str, str] | None = None

    def _enter(self, phase: int) -> None:
        self.phase = phase
        self.phase_since = self.loop.time()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._enter(IDLE)
        _Sweeper.watch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        _Sweeper.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no protocol upgrades here; the request was answered as a plain one
        except httptools.HttpParserError as exc:
            # llhttp's reasons are fixed phrases ("Invalid header value char"): safe to echo.
            reason = str(exc).strip().rstrip(".")
            self.refuse(*(self.refusal or (400, "malformed_request", "The request is not "
                                           f"valid HTTP/1.1: {reason or 'unparseable'}.")))
            return
        if self.phase == HEAD:
            # The parser keeps a header value until it ends: bound the head as it arrives.
            self.head_bytes += len(data)
            if self.head_bytes > self.url_bytes_max + self.header_bytes_max:
                self.refuse(431, "headers_too_large",
                            f"The request head is larger than {self.header_bytes_max} bytes.")

    def send_400_response(self, msg: str) -> None:
        self.refuse(400, "malformed_request", "The request is not valid HTTP/1.1.")

    def refuse(self, status: int, code: str, message: str) -> None:
        """Answer a request that cannot be served with the JSON error, and close."""
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started or not cycle.more_body:
                # A whole request is being answered: let that answer finish, then close.
                cycle.keep_alive = False
                self.transport.pause_reading()
                return
            # The app is waiting for a body that will not come: it reads a disconnect,
            # and anything it answers is dropped (this answer is the one sent).
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.write(error_bytes(status, code, message))
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._enter(HEAD)
        self.head_bytes = 0
        self.header_bytes = 0
        self.refusal = None

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.url_bytes_max:
            self.refusal = (414, "uri_too_long",
                            f"The request URL is longer than {self.url_bytes_max} bytes.")
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self.header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if len(self.headers) > self.headers_count_max or self.header_bytes > self.header_bytes_max:
            self.refusal = (431, "headers_too_large",
                            f"The request carries more than {self.headers_count_max} headers "
                            f"or {self.header_bytes_max} bytes of them.")
            raise _Refused

    def on_headers_complete(self) -> None:
        self._enter(BODY)
        if self.parser.get_http_version() not in ("1.0", "1.1"):  # HTTP/0.9, 2.0 as text...
            self.refusal = (505, "http_version_not_supported",
                            "Only HTTP/1.1 and HTTP/1.0 are served.")
            raise _Refused
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._enter(APP)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.phase == APP and not self.pipeline:
            self._enter(IDLE)

    def check_deadline(self, now: float) -> None:
        """Called by the sweep: cut a connection that stayed too long in its phase."""
        limit_s = self.phase_limits_s.get(self.phase)
        if limit_s is None or now - self.phase_since < limit_s or self.transport.is_closing():
            return
        answered = self.phase == BODY and self.cycle is not None and self.cycle.response_complete
        if self.phase == IDLE or answered:  # nothing pending to answer: just close
            self.transport.close()
            return
        what = "request head" if self.phase == HEAD else "request body"
        self.refuse(408, "request_timeout", f"The {what} did not arrive within "
                    f"{limit_s:g} seconds.")


class _Sweeper:
    """One timer per event loop checks every connection's deadline: cheaper than a timer
    armed and cancelled for every phase of every request."""

    _by_loop: ClassVar[dict[int, _Sweeper]] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop, interval_s: float) -> None:
        self.loop = loop
        self.interval_s = interval_s
        self.protocols: set[GatewayHttpProtocol] = set()
        self.handle = loop.call_later(interval_s, self.tick)

    @classmethod
    def watch(cls, protocol: GatewayHttpProtocol) -> None:
        sweeper = cls._by_loop.get(id(protocol.loop))
        if sweeper is None:
            interval_s = min(protocol.phase_limits_s.values()) / 4
            interval_s = min(max(interval_s, SWEEP_INTERVAL_MIN_S), SWEEP_INTERVAL_MAX_S)
            sweeper = cls._by_loop[id(protocol.loop)] = _Sweeper(protocol.loop, interval_s)
        sweeper.protocols.add(protocol)

    @classmethod
    def forget(cls, protocol: GatewayHttpProtocol) -> None:
        sweeper = cls._by_loop.get(id(protocol.loop))
        if sweeper is not None:
            sweeper.protocols.discard(protocol)

    def tick(self) -> None:
        if not self.protocols:  # stop while there is nothing to watch; watch() restarts
            del self._by_loop[id(self.loop)]
            return
        now = self.loop.time()
        for protocol in list(self.protocols):
            try:
                protocol.check_deadline(now)
            except Exception:  # one broken connection must not stop the sweep
                log.exception("slow-client sweep failed on one connection")
        self.handle = self.loop.call_later(self.interval_s, self.tick)


async def _json_service_unavailable(scope: Any, receive: Any, send: Any) -> None:
    """uvicorn's answer above its connection cap (limit_concurrency), as a JSON 503."""
    body = orjson.dumps({"error": "unavailable",
                         "message": "The gateway is at its connection limit; retry shortly."})
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"retry-after", b"1"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def _json_500(self: httptools_impl.RequestResponseCycle) -> None:
    """uvicorn's answer when an app raised before answering, as the contract's JSON."""
    body = orjson.dumps({"error": "internal",
                         "message": "The gateway failed; nothing was charged twice."})
    await self.send({"type": "http.response.start", "status": 500,
                     "headers": [(b"content-type", b"application/json"),
                                 (b"content-length", str(len(body)).encode()),
                                 (b"connection", b"close")]})
    await self.send({"type": "http.response.body", "body": body})


# uvicorn looks both up at call time; the gateway's server answers them in JSON.
setattr(httptools_impl, "service_unavailable", _json_service_unavailable)  # noqa: B010
httptools_impl.RequestResponseCycle.send_500_response = _json_500  # type: ignore[method-assign]
