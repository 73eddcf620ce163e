"""Helpers for tests that talk HTTP to a real gateway."""

from __future__ import annotations

import http.server
import itertools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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
