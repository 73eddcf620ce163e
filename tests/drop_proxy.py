"""A TCP proxy in front of a real gateway that loses answers on purpose.

For a request whose path is armed, it forwards the request, reads the gateway's whole
answer (so the gateway has acted: charged, held, captured) and then resets the client's
connection instead of answering: the lost answer that makes a naive retry pay twice.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

HEAD_BYTES_MAX = 65_536
TIMEOUT_S = 30.0
_UNAVAILABLE_BODY = b'{"error":"unavailable","message":"The store is not safe to write."}'
UNAVAILABLE = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
               b"retry-after: 1\r\ncontent-length: " + str(len(_UNAVAILABLE_BODY)).encode()
               + b"\r\n\r\n" + _UNAVAILABLE_BODY)


@dataclass
class Seen:
    method: str
    path: str
    idempotency_key: str | None
    dropped: bool


@dataclass
class DropProxy:
    listener: socket.socket
    target: tuple[str, int]
    armed: dict[str, int] = field(default_factory=dict)  # path prefix -> answers to lose
    # path prefix -> requests answered 503 (Retry-After: 1) without reaching the gateway
    unavailable: dict[str, int] = field(default_factory=dict)
    # path prefix -> answers held back this long (s) after the gateway acted: a timeout
    late: dict[str, tuple[int, float]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def drop(self, path_prefix: str, answers: int = 1) -> None:
        with self.lock:
            self.armed[path_prefix] = answers

    def refuse_503(self, path_prefix: str, answers: int = 1) -> None:
        with self.lock:
            self.unavailable[path_prefix] = answers

    def delay(self, path_prefix: str, seconds: float, answers: int = 1) -> None:
        with self.lock:
            self.late[path_prefix] = (answers, seconds)

    def _lateness_s(self, path: str) -> float:
        with self.lock:
            for prefix, (left, seconds) in self.late.items():
                if path.startswith(prefix) and left > 0:
                    self.late[prefix] = (left - 1, seconds)
                    return seconds
        return 0.0

    def requests_to(self, path_prefix: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path.startswith(path_prefix)]

    def _take(self, armed: dict[str, int], path: str) -> bool:
        with self.lock:
            for prefix, left in armed.items():
                if path.startswith(prefix) and left > 0:
                    armed[prefix] = left - 1
                    return True
        return False

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed: the test is over
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.target, timeout=TIMEOUT_S)
        client.settimeout(TIMEOUT_S)
        try:
            while self._one_exchange(client, upstream):
                pass
        except OSError:
            pass
        finally:
            upstream.close()
            client.close()

    def _one_exchange(self, client: socket.socket, upstream: socket.socket) -> bool:
        request = _read_message(client, is_request=True)
        if request is None:
            return False
        head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        method, path = head.split(" ", 2)[:2]
        key = _header(head, "idempotency-key")
        if self._take(self.unavailable, path):
            with self.lock:
                self.seen.append(Seen(method, path, key, False))
            client.sendall(UNAVAILABLE)
            return True
        upstream.sendall(request)
        answer = _read_message(upstream, is_request=False)
        dropped = self._take(self.armed, path)
        with self.lock:
            self.seen.append(Seen(method, path, key, dropped))
        late_s = self._lateness_s(path)
        if late_s:
            time.sleep(late_s)  # the client's timeout fires meanwhile
        if answer is None or dropped:
            # RST rather than FIN: the client sees a reset, not a clean end of a message.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        client.sendall(answer)
        return True


def _header(head: str, name: str) -> str | None:
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _read_message(sock: socket.socket, is_request: bool) -> bytes | None:
    """One whole HTTP/1.1 message (head and Content-Length body); None at end of stream."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65_536)
        if not chunk:
            return None
        data += chunk
        if len(data) > HEAD_BYTES_MAX:
            raise OSError("head too large for the test proxy")
    head, _, body = data.partition(b"\r\n\r\n")
    text = head.decode("latin-1")
    length = int(_header(text, "content-length") or "0")
    if not is_request and text.split(" ", 2)[1] in ("204", "304"):
        length = 0
    while len(body) < length:
        chunk = sock.recv(65_536)
        if not chunk:
            return None
        body += chunk
    return head + b"\r\n\r\n" + body


@contextmanager
def drop_proxy(target_url: str) -> Iterator[DropProxy]:
    host, port = target_url.removeprefix("http://").split(":")
    listener = socket.create_server(("127.0.0.1", 0))
    proxy = DropProxy(listener, (host, int(port)))
    thread = threading.Thread(target=proxy.serve, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        # shutdown wakes the thread blocked in accept(); close alone would not.
        with suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(5)
