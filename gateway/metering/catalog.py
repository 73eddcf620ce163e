"""The tool catalog: prices, categories and upstreams, with a copy in every partition
(the scripts price from their partition's copy, so a change reaches every call answered
after its PUT). Each worker keeps the catalog in memory and follows its version."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Mapping

from gateway.metering import ids, money, secrets_store
from gateway.metering.errors import GatewayError, InvalidRequest, maps_store_errors
from gateway.metering.limits import check_name
from gateway.metering.models import DomainSettings, Tool
from gateway.metering.refusals import refusal
from gateway.store import catalog as stored
from gateway.store.calls import Refused, ScriptCalls
from gateway.store.connections import Connection
from gateway.store.errors import StoreUnavailable

log = logging.getLogger("iou.engine")

CATALOG_REFRESH_S = 0.5
UPSTREAM_RE = re.compile(r"https?://[!-~]{1,2040}")


class Catalog:
    def __init__(self, conn: Connection, calls: ScriptCalls, settings: DomainSettings) -> None:
        self._conn = conn
        self._calls = calls
        self._settings = settings
        self._tools: dict[str, Tool] = {}
        self._version = -1

    def tools(self) -> list[Tool]:
        return sorted(self._tools.values(), key=lambda t: t.name)

    def category_of(self, tool: str) -> dict[str, str]:
        """The tool's category as this worker last saw it, for refusal details and metrics
        labels only (the scripts' own category wins where a reply carries one)."""
        entry = self._tools.get(tool)
        return {} if entry is None else {"category": entry.category}

    @maps_store_errors
    async def set_tool(self, tool: str, price_micros: int, category: str, pricing: str = "fixed",
                       upstream: str | None = None,
                       upstream_headers: Mapping[str, str] | None = None) -> Tool:
        check_name("tool", tool)
        check_name("category", category)
        amount_max = self._settings.amount_max_micros
        if pricing not in ("fixed", "variable"):
            raise InvalidRequest("pricing", "must be fixed or variable")
        if not money.is_whole(price_micros, 0, amount_max):
            raise InvalidRequest("price", "must be an amount between 0 and IOU_AMOUNT_MAX")
        if upstream is not None and not UPSTREAM_RE.fullmatch(upstream):
            raise InvalidRequest("upstream", "must be an http:// or https:// URL")
        # Sealed here, before the script: Redis, the stream and the ledger see ciphertext only.
        headers = secrets_store.seal_headers(self._settings, tool, upstream_headers)
        reply = await self._calls.tool_set(tool, ids.uuid7(), price_micros, amount_max,
                                           category, pricing, upstream or "", headers)
        if isinstance(reply, Refused):
            raise refusal(reply, tool=tool)
        # Every partition's copy before the PUT answers: the scripts price from them.
        await self._copy_everywhere(tool, reply.version, (price_micros, category, pricing))
        await self.refresh()
        return self._tools[tool]

    @maps_store_errors
    async def delete_tool(self, tool: str) -> None:
        check_name("tool", tool)
        reply = await self._calls.tool_delete(tool, ids.uuid7())
        if isinstance(reply, Refused):
            raise refusal(reply, tool=tool)
        await self._copy_everywhere(tool, reply.version, None)
        await self.refresh()

    async def _copy_everywhere(self, tool: str, version: int,
                               entry: tuple[int, str, str] | None) -> None:
        """One tool_copy per partition, all in one pipelined round trip."""
        await asyncio.gather(*(self._copy(p, tool, version, entry, False)
                               for p in range(self._calls.partitions)))

    async def _copy(self, partition: int, tool: str, version: int,
                    entry: tuple[int, str, str] | None, force: bool) -> int:
        """Write one partition's copy of one entry (None: deleted); 1 if written, 0 if a
        newer version was already there."""
        reply = await self._calls.tool_copy(partition, tool, version, entry, force)
        if isinstance(reply, Refused):
            raise refusal(reply, tool=tool)
        return int(reply.written)

    @maps_store_errors
    async def sync_copies(self, force: bool = False) -> int:
        """Make every partition's copy agree with the catalog; returns how many were written.

        Repairs copies a change did not reach (a worker stopped between the catalog write
        and its copies; a store written before the copies existed). Copies carry the catalog
        version of their change and tool_copy.lua keeps the newest, so this never undoes a
        newer change made meanwhile; ``force`` (iou recover) replaces whatever is stored."""
        catalog, version = self._tools, self._version
        calls: list[Awaitable[int]] = []
        for partition, rows in enumerate(await stored.copies(self._conn,
                                                             self._calls.partitions)):
            for name, t in catalog.items():
                if rows.get(name) != stored.copy_row(t.version, t.price_micros, t.category,
                                                     t.pricing):
                    calls.append(self._copy(partition, name, t.version,
                                            (t.price_micros, t.category, t.pricing), force))
            for name, row in rows.items():
                if name not in catalog and " " in row:  # deleted from the catalog
                    calls.append(self._copy(partition, name, version, None, force))
        return sum(await asyncio.gather(*calls))

    @maps_store_errors
    async def refresh(self) -> None:
        """Reload the catalog when its version moved (tool changes reach every worker's
        listing and proxy), then repair the partitions' copies if a change missed one."""
        version = await stored.version(self._conn)
        if version == self._version:
            return
        self._tools = {name: Tool(name, int(f["price"]), f["category"], f["pricing"],
                                  f.get("upstream") or None, f.get("headers") or None,
                                  int(f.get("version", "0")))
                       for name, f in (await stored.entries(self._conn)).items()}
        self._version = version
        written = await self.sync_copies()
        if written:
            log.warning("catalog copies: repaired %d partition entries", written)

    async def refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(CATALOG_REFRESH_S)
            try:
                await self.refresh()
            except GatewayError as exc:
                log.warning("catalog refresh: %s", exc.message)
            except StoreUnavailable as exc:
                log.warning("catalog refresh: %s", exc)
            except Exception:
                log.exception("catalog refresh failed; retrying")
