"""The upstream MCP servers an admin registered: their URL, sealed headers and tools.

Registration lists the upstream's tools through a connection of its own before anything
is stored, so an unreachable upstream (or a wrong credential) is refused at the PUT, and the
listing is what ``tools/list`` offers until the server is PUT again. The headers are sealed
with IOU_SECRET_KEY before they reach the store, under the associated data ``mcp:<name>``
(a sealed value copied onto another server or tool does not open)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.metering import secrets_store
from gateway.metering.errors import InvalidRequest, NotFound, UpstreamTimeout, UpstreamUnavailable
from gateway.metering.models import SecretSettings
from gateway.store import mcp_servers as stored
from gateway.store import meta
from gateway.store.connections import Connection

from .upstream import Upstream, UpstreamFailed, list_tools

# No dot: an offered tool is ``<server>.<tool>``, split at the first dot.
SERVER_NAME_RE = re.compile(r"[a-z0-9_-]{1,64}")
URL_RE = re.compile(r"https?://[!-~]{1,2040}")
TOOLS_PER_SERVER_MAX = 1000
KIND = "mcp"  # the secrets' associated-data kind: seals of tools never open here


@dataclass(frozen=True)
class McpServer:
    name: str
    url: str
    sealed_headers: str  # '' for none
    tools: tuple[dict[str, Any], ...]  # as the upstream listed them (JSON, wire names)
    updated_ms: int

    def tool(self, name: str) -> dict[str, Any] | None:
        return next((t for t in self.tools if t.get("name") == name), None)

    def tool_names(self) -> list[str]:
        return [str(t["name"]) for t in self.tools]

    def upstream(self, settings: SecretSettings) -> Upstream:
        """Where to call it, with its credentials opened (raises Unavailable when this
        gateway cannot open them)."""
        headers = secrets_store.open_headers(settings, self.name, self.sealed_headers, KIND)
        return Upstream.of(self.name, self.url, headers)


def check_server_name(name: str) -> str:
    if not SERVER_NAME_RE.fullmatch(name):
        raise InvalidRequest("server", "must be 1 to 64 of a-z 0-9 _ - (no dot)")
    return name


def _server(name: str, record: Mapping[str, Any]) -> McpServer:
    return McpServer(name, str(record["url"]), str(record.get("headers") or ""),
                     tuple(record.get("tools") or ()), int(record.get("updated_ms", 0)))


async def register(conn: Connection, settings: SecretSettings, name: str, url: str,
                   headers: Mapping[str, str] | None, timeout_s: float) -> McpServer:
    """List the upstream's tools, then store the server (replacing one of that name)."""
    check_server_name(name)
    if not URL_RE.fullmatch(url):
        raise InvalidRequest("url", "must be an http:// or https:// URL")
    # Sealed first: a gateway without IOU_SECRET_KEY refuses before it connects anywhere.
    sealed = secrets_store.seal_headers(settings, name, headers, kind=KIND, field="headers")
    tools = await _listing(Upstream.of(name, url, dict(headers or {})), timeout_s)
    record = {"url": url, "headers": sealed, "tools": tools,
              "updated_ms": await meta.clock_ms(conn)}
    await stored.put(conn, name, record)
    return _server(name, record)


async def _listing(upstream: Upstream, timeout_s: float) -> list[dict[str, Any]]:
    try:
        tools = await list_tools(upstream, timeout_s)
    except TimeoutError:
        raise UpstreamTimeout(f"The MCP server {upstream.name} did not list its tools "
                              "in time; nothing was stored.") from None
    except UpstreamFailed as exc:
        raise UpstreamUnavailable(f"The MCP server {upstream.name} could not be reached or "
                                  f"refused the connection ({exc}); nothing was "
                                  "stored.") from None
    if len(tools) > TOOLS_PER_SERVER_MAX:
        raise UpstreamUnavailable(f"The MCP server {upstream.name} lists more than "
                                  f"{TOOLS_PER_SERVER_MAX} tools; nothing was stored.")
    return tools


async def get(conn: Connection, name: str) -> McpServer:
    record = await stored.get(conn, check_server_name(name))
    if record is None:
        raise NotFound(f"No MCP server named {name}.")
    return _server(name, record)


async def find(conn: Connection, name: str) -> McpServer | None:
    """The server ``name``, None when there is none (or the name cannot be one)."""
    if not SERVER_NAME_RE.fullmatch(name):
        return None
    record = await stored.get(conn, name)
    return None if record is None else _server(name, record)


async def all_servers(conn: Connection) -> list[McpServer]:
    return [_server(n, r) for n, r in (await stored.all_servers(conn)).items()]


async def remove(conn: Connection, name: str) -> None:
    if not await stored.delete(conn, check_server_name(name)):
        raise NotFound(f"No MCP server named {name}.")
