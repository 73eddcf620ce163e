"""Helpers for tests that talk HTTP to a real gateway."""

from __future__ import annotations

import http.server
import itertools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.gateway_proc import Gateway

_names = itertools.count()

SEED_TOOLS = {
    "web_search": {"price": "0.05", "category": "tool"},
    "web_browse": {"price": "0.12", "category": "tool"},
    "llm_summarize": {"price": "0.08", "category": "llm", "pricing": "variable"},
    "email_send": {"price": "0.02", "category": "tool"},
    "calc": {"price": "0", "category": "tool"},
    "buy": {"price": "1.5", "category": "commerce"},
}


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def seed_tools(gw: Gateway) -> None:
    with gw.admin() as admin:
        for name, body in SEED_TOOLS.items():
            assert admin.put(f"/v1/tools/{name}", json=body).status_code == 200


def new_agent(gw: Gateway, grant: str | None = "10", prefix: str = "agent") -> tuple[str, str]:
    """(name, api_key) of a fresh agent."""
    name = unique(prefix)
    body: dict[str, Any] = {"name": name}
    if grant is not None:
        body["grant"] = grant
    with gw.admin() as admin:
        response = admin.post("/v1/agents", json=body)
    assert response.status_code == 201, response.text
    return name, response.json()["api_key"]


def balance(gw: Gateway, api_key: str) -> str:
    with gw.agent(api_key) as client:
        value: str = client.get("/v1/balance").json()["balance"]
        return value


def error_of(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) >= {"error", "message"}, body
    assert isinstance(body["message"], str) and body["message"]
    code: str = body["error"]
    return code


@contextmanager
def upstream_server(handler: type[http.server.BaseHTTPRequestHandler], path: str = ""
                    ) -> Iterator[str]:
    """A tool's upstream on 127.0.0.1 (a free port, a thread per request); yields its URL
    with ``path`` appended, and shuts it down afterwards."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class Seen:
    """One request that reached a recording upstream."""

    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes


@dataclass
class Recorded:
    """What reached a recording upstream, in arrival order (its handler threads append)."""

    requests: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def header(self, name: str) -> list[str | None]:
        """The value of header ``name`` on each request, None where it was absent."""
        with self._lock:
            return [r.headers.get(name.lower()) for r in self.requests]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()


def recording_handler(recorded: Recorded) -> type[http.server.BaseHTTPRequestHandler]:
    """A tool's upstream that answers 200 `{}` to every POST and records it in ``recorded``."""

    class Recording(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            recorded.add(Seen(self.path, {k.lower(): v for k, v in self.headers.items()},
                              body))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    return Recording


@contextmanager
def recording_upstream(path: str = "") -> Iterator[tuple[str, Recorded]]:
    """A recording upstream (see recording_handler) on a free port: (its URL, what it saw)."""
    recorded = Recorded()
    with upstream_server(recording_handler(recorded), path) as url:
        yield url, recorded
