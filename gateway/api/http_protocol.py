"""The HTTP protocol the gateway serves with: uvicorn's httptools protocol, one send per
tick, JSON for every protocol error, limits on the request head and timeouts for slow clients.

uvicorn writes a response's head and its body with two ``transport.write`` calls, and
uvloop turns each into a ``send`` system call, a large part of the CPU of a small JSON
request (``python -m loadtests.bench`` runs its reference app on both protocols; see
docs/benchmarks.md, and docs/design.md for when to drop this module). So the transport
handed to uvicorn queues what is written during one pass of the event loop and hands it to
the real transport once, in a callback of the same pass.
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

from gateway.api.request_id import new_request_id
from gateway.config import Settings, load_settings
from gateway.logs import REQUEST_ID
from gateway.observability import count_error

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
    """A whole HTTP response carrying the contract's JSON error, closing the connection.
    The request never reached the app: its id is a new one (a caller's may not be parsed)."""
    body = orjson.dumps({"error": code, "message": message})
    count_error(status)
    return b"".join([STATUS_LINE[status], b"content-type: application/json\r\n",
                     b"content-length: ", str(len(body)).encode(), b"\r\n", extra,
                     b"x-request-id: ", new_request_id().encode(), b"\r\n",
                     b"connection: close\r\n\r\n", body])


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the protocol knows what to answer."""


class GatewayHttpProtocol(CoalescingHttpToolsProtocol):
    """The coalescing protocol plus head limits, JSON protocol errors and slow-client
    timeouts (`uvicorn.run(http=...)`).

    The per-request cost is kept to attribute stores: a phase change sets ``phase`` and
    bumps ``moves``; the sweep, not the request, keeps time (a connection whose ``moves``
    did not change for a phase's limit is cut). uvicorn's own keep-alive timer, armed and
    cancelled for every request, is replaced by that sweep too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = _settings()
        self.url_bytes_max = settings.url_bytes_max
        self.header_bytes_max = settings.header_bytes_max
        self.headers_count_max = settings.headers_count_max
        # A head that arrived in fewer bytes than this is within both limits, unmeasured.
        self.head_unmeasured_max = min(self.url_bytes_max, self.header_bytes_max)
        self.phase_limits_s = {IDLE: float(settings.keepalive_timeout_s),
                               HEAD: float(settings.header_timeout_s),
                               BODY: float(settings.body_timeout_s)}
        self.phase = IDLE
        self.moves = 0  # phase changes so far; the sweep compares it between ticks
        self.seen_moves = -1
        self.still_s = 0.0  # how long the sweep has seen no phase change
        self.head_bytes = 0  # bytes received in earlier chunks of an incomplete head
        self.chunk_bytes = 0  # bytes of the chunk being parsed
        self.refusal: tuple[int, str, str] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _Sweeper.watch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        _Sweeper.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.chunk_bytes = len(data)
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
            # The parser keeps a URL or header value until it ends: bound the head as it
            # arrives, not only once it is complete.
            self.head_bytes += len(data)
            if self.head_bytes > self.url_bytes_max + self.header_bytes_max:
                self.refuse(*self._head_refusal())

    def _head_refusal(self) -> tuple[int, str, str]:
        if len(self.url) > self.url_bytes_max:
            return (414, "uri_too_long",
                    f"The request URL is longer than {self.url_bytes_max} bytes.")
        return (431, "headers_too_large", f"The request carries more than "
                f"{self.headers_count_max} headers or {self.header_bytes_max} bytes of them.")

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
        self.phase = HEAD
        self.moves += 1
        self.head_bytes = 0
        self.refusal = None

    def on_headers_complete(self) -> None:
        self.phase = BODY
        self.moves += 1
        # HTTP/0.9 (a request line alone, no headers) is refused; asking for the version of
        # every request would cost more than the rest of this method. llhttp refuses
        # versions other than 0.9, 1.x and 2.0; "HTTP/2.0" as text is answered as 1.1.
        if not self.headers and self.parser.get_http_version() == "0.9":
            self.refusal = (505, "http_version_not_supported",
                            "Only HTTP/1.1 and HTTP/1.0 are served.")
            raise _Refused
        # The head is at most what arrived since it began: only a large one is measured.
        if (self.head_bytes + self.chunk_bytes > self.head_unmeasured_max
                or len(self.headers) > self.headers_count_max):
            self._check_head()
        super().on_headers_complete()

    def _check_head(self) -> None:
        if len(self.url) > self.url_bytes_max:
            self.refusal = self._head_refusal()
            raise _Refused
        header_bytes = sum(len(name) + len(value) + 4 for name, value in self.headers)
        if header_bytes > self.header_bytes_max or len(self.headers) > self.headers_count_max:
            self.refusal = self._head_refusal()
            raise _Refused

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.phase = APP
        self.moves += 1

    def on_response_complete(self) -> None:
        # uvicorn's, without arming its keep-alive timer: the sweep times idle connections.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self.phase == APP:
            self.phase = IDLE
            self.moves += 1

    def sweep(self, interval_s: float) -> None:
        """Called by the sweep every ``interval_s``: cut a connection that stayed too long
        in its phase (no phase change seen for the phase's limit)."""
        if self.moves != self.seen_moves:
            self.seen_moves = self.moves
            self.still_s = 0.0
            return
        self.still_s += interval_s
        limit_s = self.phase_limits_s.get(self.phase)
        if limit_s is None or self.still_s < limit_s or self.transport.is_closing():
            return
        answered = self.phase == BODY and self.cycle is not None and self.cycle.response_complete
        if self.phase == IDLE or answered:  # nothing pending to answer: just close
            self.transport.close()
            return
        what = "request head" if self.phase == HEAD else "request body"
        self.refuse(408, "request_timeout", f"The {what} did not arrive within "
                    f"{limit_s:g} seconds.")


class _Sweeper:
    """One timer per event loop checks every connection: cheaper than a timer armed and
    cancelled for every phase of every request."""

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
        for protocol in list(self.protocols):
            try:
                protocol.sweep(self.interval_s)
            except Exception:  # one broken connection must not stop the sweep
                log.exception("slow-client sweep failed on one connection")
        self.handle = self.loop.call_later(self.interval_s, self.tick)


async def _json_service_unavailable(scope: Any, receive: Any, send: Any) -> None:
    """uvicorn's answer above its connection cap (limit_concurrency), as a JSON 503."""
    body = orjson.dumps({"error": "unavailable",
                         "message": "The gateway is at its connection limit; retry shortly."})
    count_error(503)
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"),
                            (b"x-request-id", new_request_id().encode()),
                            (b"content-length", str(len(body)).encode()),
                            (b"retry-after", b"1"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def _json_500(self: httptools_impl.RequestResponseCycle) -> None:
    """uvicorn's answer when an app raised before answering, as the contract's JSON."""
    body = orjson.dumps({"error": "internal",
                         "message": "The gateway failed; nothing was charged twice."})
    await self.send({"type": "http.response.start", "status": 500,
                     "headers": [(b"content-type", b"application/json"),
                                 (b"x-request-id",
                                  (REQUEST_ID.get() or new_request_id()).encode()),
                                 (b"content-length", str(len(body)).encode()),
                                 (b"connection", b"close")]})
    await self.send({"type": "http.response.body", "body": body})


# uvicorn looks both up at call time; the gateway's server answers them in JSON.
setattr(httptools_impl, "service_unavailable", _json_service_unavailable)  # noqa: B010
httptools_impl.RequestResponseCycle.send_500_response = _json_500  # type: ignore[method-assign]
