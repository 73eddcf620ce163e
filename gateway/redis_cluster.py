"""Redis Cluster: the same auto-pipelined calls, routed to the master owning each key's slot.

Every key the gateway uses carries a partition hash tag, so each script and each command
names keys of one slot, and routing by its first key is enough. One multiplexed
connection per master keeps the auto-pipelining (calls of one tick to one node go out in
one write). MOVED refreshes the slot map and retries; ASK sends ASKING and the command
back to back to the importing node; TRYAGAIN and CLUSTERDOWN wait briefly and retry, so a
resharding is followed, not surfaced. SCRIPT commands go to every master.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import replace
from typing import Any
from urllib.parse import urlparse

from redis.crc import key_slot

from gateway.errors import Unavailable
from gateway.redis_io import RedisAddress, RedisConnection, ReplyError, parse_redis_url

log = logging.getLogger("iou.redis")

SLOTS = 16384
REDIRECTS_MAX = 8
RETRY_WAIT_S = 0.02
RETRIES_MAX = 100  # TRYAGAIN/CLUSTERDOWN: about 2 s of waiting, then the error surfaces
# Commands whose key is not their first argument.
KEYLESS = {b"PING", b"TIME", b"INFO", b"CONFIG", b"CLUSTER", b"DBSIZE"}
BROADCAST = {b"SCRIPT", b"FLUSHALL", b"FLUSHDB"}


def parse_cluster_url(url: str) -> RedisAddress:
    """redis+cluster://[user:pass@]host:port -> the seed node's address."""
    parts = urlparse(url)
    return parse_redis_url("redis://" + parts.netloc + (parts.path or ""))


def first_key(args: tuple[Any, ...]) -> Any:
    """The key that decides where a command goes (None for keyless commands)."""
    name = _upper(args[0])
    if name in (b"EVALSHA", b"EVAL"):
        return args[3] if int(args[2]) > 0 else None
    if name in (b"XREADGROUP", b"XREAD"):
        upper = [_upper(a) if isinstance(a, (bytes, str)) else b"" for a in args]
        return args[upper.index(b"STREAMS") + 1]
    if name in (b"XINFO", b"XGROUP"):
        return args[2]
    if name in KEYLESS or len(args) < 2:
        return None
    return args[1]


def _upper(value: Any) -> bytes:
    return (value.encode() if isinstance(value, str) else bytes(value)).upper()


def _key_bytes(key: Any) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode()


class ClusterConnection:
    """The RedisConnection interface over a Redis Cluster's masters."""

    def __init__(self, url: str, decode: bool = False) -> None:
        self.url = url
        self.address = parse_cluster_url(url)
        self.decode = decode
        self._nodes: dict[str, RedisConnection] = {}
        self._slots: list[str] = []
        self._refreshing: asyncio.Lock | None = None
        self._refresh_task: asyncio.Future[None] | None = None
        self.redirects = 0  # MOVED, ASK and TRYAGAIN answers followed (a resharding shows)

    @property
    def batch_factor(self) -> float:
        writes = sum(c.writes for c in self._nodes.values())
        return sum(c.commands for c in self._nodes.values()) / writes if writes else 0.0

    def _node(self, name: str) -> RedisConnection:
        conn = self._nodes.get(name)
        if conn is None:
            host, _, port = name.rpartition(":")
            address = replace(self.address, host=host, port=int(port))
            conn = self._nodes[name] = RedisConnection(address, decode=self.decode)
        return conn

    async def refresh(self) -> None:
        """Read the slot map (CLUSTER SLOTS) from any reachable node."""
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:
            seeds = list(self._nodes) or [f"{self.address.host}:{self.address.port}"]
            random.shuffle(seeds)
            for seed in seeds:
                try:
                    reply = await self._node(seed).call_or_raise(b"CLUSTER", b"SLOTS")
                except (Unavailable, ReplyError):
                    continue
                self._slots = _slot_map(reply)
                return
            log.warning("no node of the Redis Cluster answers (tried %s)", ", ".join(seeds))
            raise Unavailable("No node of the Redis Cluster answers; paid calls are refused "
                              "until it is back.")

    async def masters(self) -> list[RedisConnection]:
        if not self._slots:
            await self.refresh()
        return [self._node(n) for n in sorted(set(self._slots))]

    async def call(self, *args: Any) -> Any:
        name = _upper(args[0])
        if name in BROADCAST:
            return await self._broadcast(name, args)
        if not self._slots:
            await self.refresh()
        key = first_key(args)
        node = self._slots[key_slot(_key_bytes(key))] if key is not None else self._slots[0]
        return await self._call_on(node, args)

    async def call_or_raise(self, *args: Any) -> Any:
        reply = await self.call(*args)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def call_each(self, *args: Any) -> list[Any]:
        """The command on every master (for INFO checks)."""
        return list(await asyncio.gather(*(m.call_or_raise(*args)
                                           for m in await self.masters())))

    async def _call_on(self, node: str, args: tuple[Any, ...]) -> Any:
        asking = False
        redirects = 0
        for _ in range(REDIRECTS_MAX + RETRIES_MAX):
            conn = self._node(node)
            reply = await (conn.call_after_asking(*args) if asking else conn.call(*args))
            if not isinstance(reply, ReplyError):
                return reply
            kind, _, rest = str(reply).partition(" ")
            if kind in ("MOVED", "ASK", "TRYAGAIN"):
                self.redirects += 1
            if kind in ("MOVED", "ASK"):
                redirects += 1
                if redirects > REDIRECTS_MAX:
                    break
            if kind == "MOVED":
                node = rest.split()[1]
                self._slots[int(rest.split()[0])] = node
                self._refresh_soon()
                asking = False
            elif kind == "ASK":
                node, asking = rest.split()[1], True
            elif kind in ("TRYAGAIN", "CLUSTERDOWN"):
                await asyncio.sleep(RETRY_WAIT_S)
            else:
                return reply
        return ReplyError(f"too many redirections for {_upper(args[0]).decode()}")

    def _refresh_soon(self) -> None:
        """Re-read the whole slot map in the background after a MOVED (a resharding moves
        many slots; learning them one MOVED at a time would bounce every call)."""
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.ensure_future(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        with contextlib.suppress(Unavailable):
            await self.refresh()

    async def _broadcast(self, name: bytes, args: tuple[Any, ...]) -> Any:
        replies = await asyncio.gather(*(m.call(*args) for m in await self.masters()))
        errors = [r for r in replies if isinstance(r, ReplyError)]
        if errors:
            return errors[0]
        if name == b"SCRIPT" and _upper(args[1]) == b"EXISTS":
            return [int(all(r[i] for r in replies)) for i in range(len(args) - 2)]
        return replies[0]

    def close(self) -> None:
        for conn in self._nodes.values():
            conn.close()


def _slot_map(reply: list[Any]) -> list[str]:
    slots = [""] * SLOTS
    for start, end, master, *_replicas in reply:
        host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
        for slot in range(int(start), int(end) + 1):
            slots[slot] = f"{host}:{int(master[1])}"
    if "" in slots:
        raise Unavailable("The Redis Cluster does not cover every slot (cluster_state:fail).")
    return slots
