"""Redis Cluster: the same auto-pipelined calls, routed to the master owning each key's slot.

Every key the gateway uses carries a partition hash tag, so each script and each command
names keys of one slot, and routing by its first key is enough. One multiplexed
connection per master keeps the auto-pipelining (calls of one tick to one node go out in
one write). MOVED refreshes the slot map and retries; ASK sends ASKING and the command
back to back to the importing node; TRYAGAIN and CLUSTERDOWN wait briefly and retry, so a
resharding is followed, not surfaced. SCRIPT and FUNCTION commands go to every master.

A master that stops answering fails its calls at once (503: a command that may have run is
never sent again), and starts a recovery in the background: the slot map is read again,
from any node that answers, with backoff, until every master in it answers. So when a
replica is promoted after a failover (cluster-node-timeout), its slots are served again
without a restart; a master that comes back is found the same way.
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

from gateway.store.errors import StoreUnavailable
from gateway.store.resp import (
    RedisAddress,
    RedisConnection,
    RedisRefused,
    ReplyError,
    parse_redis_url,
)
from gateway.store.resp import reply_text as _text

log = logging.getLogger("iou.redis")

SLOTS = 16384
REDIRECTS_MAX = 8
RETRY_WAIT_S = 0.02
RETRIES_MAX = 100  # TRYAGAIN/CLUSTERDOWN: about 2 s of waiting, then the error surfaces
WAIT_AND_RETRY = {"TRYAGAIN", "CLUSTERDOWN"}  # refused before running: safe to send again
# After a master stopped answering: re-read the slot map after 50 ms, then twice as long
# each time, up to every second, until every master in the map answers.
RECOVERY_WAIT_MIN_S = 0.05
RECOVERY_WAIT_MAX_S = 1.0
# Commands whose key is not their first argument.
KEYLESS = {b"PING", b"TIME", b"INFO", b"CONFIG", b"CLUSTER", b"DBSIZE"}
BROADCAST = {b"SCRIPT", b"FUNCTION", b"FLUSHALL", b"FLUSHDB"}


def parse_cluster_url(url: str) -> RedisAddress:
    """redis+cluster://[user:pass@]host:port -> the seed node's address."""
    parts = urlparse(url)
    return parse_redis_url("redis://" + parts.netloc + (parts.path or ""))


def first_key(args: tuple[Any, ...]) -> Any:
    """The key that decides where a command goes (None for keyless commands)."""
    name = _upper(args[0])
    if name in (b"EVALSHA", b"EVAL", b"FCALL"):
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
        self._recovery: asyncio.Future[None] | None = None
        self._seen: set[str] = set()  # every node of the last slot map, replicas included
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
            seeds = self._seeds()
            for seed in seeds:
                try:
                    reply = await self._node(seed).call_or_raise(b"CLUSTER", b"SLOTS")
                except (StoreUnavailable, ReplyError):
                    continue
                self._slots = _slot_map(reply)
                self._seen = _all_nodes(reply)
                return
            log.warning("no node of the Redis Cluster answers (tried %s)", ", ".join(seeds))
            raise StoreUnavailable("No node of the Redis Cluster answers; paid calls are refused "
                              "until it is back.")

    def _seeds(self) -> list[str]:
        """Nodes to ask for the slot map: those connected first (they answered lately),
        then every other node known (a replica may be the master by now), in random
        order so that one slow node does not always go first."""
        seeds = list({*self._nodes, *self._seen} or
                     {f"{self.address.host}:{self.address.port}"})
        random.shuffle(seeds)
        return sorted(seeds, key=lambda n: not (n in self._nodes and self._nodes[n].connected))

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
        refused: RedisRefused | None = None
        for _ in range(REDIRECTS_MAX + RETRIES_MAX):
            conn = self._node(node)
            try:
                reply = await (conn.call_after_asking(*args) if asking else conn.call(*args))
            except RedisRefused as exc:
                if exc.kind not in WAIT_AND_RETRY:
                    raise
                refused = exc
                self.redirects += exc.kind == "TRYAGAIN"
                await asyncio.sleep(RETRY_WAIT_S)
                continue
            except StoreUnavailable:
                self._recover_soon()
                raise
            if not isinstance(reply, ReplyError):
                return reply
            kind, _, rest = str(reply).partition(" ")
            if kind in ("MOVED", "ASK"):
                self.redirects += 1
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
            else:
                return reply
        if refused is not None:
            raise refused
        return ReplyError(f"too many redirections for {_upper(args[0]).decode()}")

    def _refresh_soon(self) -> None:
        """Re-read the whole slot map in the background after a MOVED (a resharding moves
        many slots; learning them one MOVED at a time would bounce every call)."""
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.ensure_future(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self.refresh()

    def _recover_soon(self) -> None:
        """A node did not answer: start the recovery unless it is running."""
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.ensure_future(self._recover())

    async def _recover(self) -> None:
        """Re-read the slot map with backoff until every master in it answers."""
        wait_s = RECOVERY_WAIT_MIN_S
        while not await self._healthy():
            await asyncio.sleep(wait_s)
            wait_s = min(2 * wait_s, RECOVERY_WAIT_MAX_S)
        log.warning("Redis Cluster: every master answers again (%s)",
                    ", ".join(sorted(set(self._slots))))

    async def _healthy(self) -> bool:
        try:
            await self.refresh()
        except StoreUnavailable:
            return False
        pings = await asyncio.gather(*(self._node(n).call(b"PING") for n in set(self._slots)),
                                     return_exceptions=True)
        return not any(isinstance(p, BaseException) for p in pings)

    async def _broadcast(self, name: bytes, args: tuple[Any, ...]) -> Any:
        replies = await asyncio.gather(*(m.call(*args) for m in await self.masters()))
        errors = [r for r in replies if isinstance(r, ReplyError)]
        if errors:
            return errors[0]
        if name == b"SCRIPT" and _upper(args[1]) == b"EXISTS":
            return [int(all(r[i] for r in replies)) for i in range(len(args) - 2)]
        return replies[0]

    def close(self) -> None:
        for task in (self._recovery, self._refresh_task):
            if task is not None:
                task.cancel()
        for conn in self._nodes.values():
            conn.close()


def _all_nodes(reply: list[Any]) -> set[str]:
    """host:port of every node in a CLUSTER SLOTS reply, masters and replicas."""
    return {f"{_text(node[0])}:{int(node[1])}"
            for _start, _end, *nodes in reply for node in nodes if _text(node[0])}


def _slot_map(reply: list[Any]) -> list[str]:
    slots = [""] * SLOTS
    for start, end, master, *_replicas in reply:
        host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
        for slot in range(int(start), int(end) + 1):
            slots[slot] = f"{host}:{int(master[1])}"
    if "" in slots:
        raise StoreUnavailable("The Redis Cluster does not cover every slot (cluster_state:fail).")
    return slots
