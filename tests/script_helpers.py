"""Calling the Lua scripts straight (no engine in between), for the script-level tests.

``Lua`` runs a script by name on the session's real Redis with the sources the gateway
ships (``gateway.store.scripts.load_script``), and builds valid arguments for every script so a
test can change just the one it is about. Synchronous on purpose: these tests are the
first the mutation runner runs, and they stay fast (no event loop, no engine start).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any

import redis

from gateway.store import keys
from gateway.store.keys import TEST_CLOCK_KEY
from gateway.store.scripts import SCRIPT_NAMES, load_script

P = 16  # partitions
AMAX = 1_000_000_000_000_000  # IOU_AMOUNT_MAX default, micros
MICROS_MAX = 2**53 - 1
DAY_MS = 86_400_000
TTL_MAX_MS = 3_600_000
AGENT = "a1"
CATEGORIES = ("tool", "llm", "web", "commerce")


def key_hash(n: int) -> str:
    return hashlib.sha256(f"key-{n}".encode()).hexdigest()


@functools.cache
def _sources(clock: bool) -> dict[str, str]:
    clock_key = TEST_CLOCK_KEY if clock else None
    return {n: load_script(n, clock_key).source for n in SCRIPT_NAMES}


@functools.cache
def _sha(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()


class Lua:
    """The scripts on one Redis. With ``clock`` their clock is Redis TIME plus the test
    offset (moved by ``shift_to``); without it, the production scripts exactly."""

    def __init__(self, client: redis.Redis, clock: bool = False) -> None:
        self.r = client
        self.clock = clock
        self.sources = _sources(clock)
        self.n = 0

    def run(self, name: str, keys_: Sequence[str], args: Sequence[str]) -> list[Any]:
        """EVALSHA the script (loading it first when Redis does not have it)."""
        sha = _sha(self.sources[name])
        try:
            reply: list[Any] = self.r.evalsha(sha, len(keys_), *keys_, *args)
        except redis.exceptions.NoScriptError:
            self.r.script_load(self.sources[name])
            reply = self.r.evalsha(sha, len(keys_), *keys_, *args)
        return reply

    def eid(self) -> str:
        """A fresh entry id (any printable token will do for the scripts)."""
        self.n += 1
        return f"e{self.n:04d}"

    def now_ms(self) -> int:
        sec, usec = self.r.time()
        return int(sec) * 1000 + usec // 1000 + int(self.r.get(TEST_CLOCK_KEY) or 0)

    def shift_to(self, target_ms: int) -> None:
        """Move the scripts' clock so that it now reads ``target_ms``."""
        assert self.clock, "use the clocked_lua fixture to move the clock"
        self.r.delete(TEST_CLOCK_KEY)
        self.r.set(TEST_CLOCK_KEY, target_ms - self.now_ms())

    def today(self) -> int:
        return self.now_ms() // DAY_MS

    # ---- keys -------------------------------------------------------------------------

    def k(self, agent: str = AGENT) -> keys.AgentKeys:
        return keys.agent_keys(agent, P)

    def idem_key(self, agent: str = AGENT, idem: str = "") -> str:
        return self.k(agent).idempotency(hashlib.sha256(idem.encode()).hexdigest()[:32]
                                         if idem else "none")

    # ---- state ------------------------------------------------------------------------

    def agent(self, agent: str = AGENT) -> dict[str, str]:
        out: dict[str, str] = self.r.hgetall(self.k(agent).agent_hash)  # type: ignore[assignment]
        return out

    def hash(self, key: str) -> dict[str, str]:
        out: dict[str, str] = self.r.hgetall(key)  # type: ignore[assignment]
        return out

    def bal(self, agent: str = AGENT) -> int:
        return int(self.agent(agent)["bal"])

    def window(self, agent: str = AGENT) -> dict[str, str]:
        out: dict[str, str] = self.r.hgetall(self.k(agent).window)  # type: ignore[assignment]
        return out

    def events(self, stream: str | None = None) -> list[dict[str, str]]:
        raw: Any = self.r.xrange(stream or self.k().events)
        return [dict(fields) for _id, fields in raw]

    def snapshot(self) -> dict[str, Any]:
        """Every key (but the test clock) with its content and TTL presence."""
        out: dict[str, Any] = {}
        names: Any = self.r.keys("*")
        for name in sorted(names):
            if name == TEST_CLOCK_KEY:
                continue
            kind = self.r.type(name)
            content: Any
            if kind == "hash":
                content = self.r.hgetall(name)
            elif kind == "stream":
                content = self.r.xrange(name)
            elif kind == "zset":
                content = self.r.zrange(name, 0, -1, withscores=True)
            elif kind == "set":
                content = sorted(self.r.smembers(name))
            elif kind == "list":
                content = self.r.lrange(name, 0, -1)
            else:
                content = self.r.get(name)
            out[name] = (kind, content, self.r.pttl(name) > 0)
        return out

    # ---- valid calls (a test changes one argument) -----------------------------------

    def create_args(self, agent: str = AGENT, grant: int = 1_000_000, low: int = 0,
                    n: int = 1) -> tuple[list[str], list[str]]:
        k = self.k(agent)
        kh = key_hash(n)
        return ([k.agent_hash, k.keys, k.api_key_lookup(kh), k.events, k.agents_index],
                [agent, self.eid(), self.eid(), str(grant), str(AMAX), str(low), f"key{n}", kh])

    def create(self, agent: str = AGENT, grant: int = 1_000_000, low: int = 0) -> list[Any]:
        reply = self.run("create_agent", *self.create_args(agent, grant, low,
                                                           n=abs(hash(agent)) % 10**6))
        assert reply[0] == 0, reply
        return reply

    def seed_tools(self) -> None:
        """Every partition's copy of the catalog: a variable tool per category (``v_<cat>``),
        fixed ones (``fx_tool`` at 50000, ``free`` at 0), as tool_copy.lua writes them."""
        for p in range(P):
            self.r.hset(keys.tools_copy(p), mapping={
                **{f"v_{cat}": f"1 80000 {cat} variable" for cat in CATEGORIES},
                "fx_tool": "1 50000 tool fixed", "free": "1 0 tool fixed"})

    def reset(self) -> None:
        """FLUSHALL, then the catalog copies again."""
        self.r.flushall()
        self.seed_tools()

    def charge_args(  # noqa: PLR0913 - one argument per script input
            self, cost: int | None, agent: str = AGENT, cat: str = "tool",
                    idem: str = "", ih: str = "", meta: str = "", tool: str = "",
                    loop: str | None = None) -> tuple[list[str], list[str]]:
        """A charge of ``cost`` on the variable tool of ``cat`` (or on ``tool``; None = no
        cost, as for a fixed-price tool); ``loop`` names its loop list (its arguments),
        after no task's key (without it, the keys end at the walls', as before tasks)."""
        k = self.k(agent)
        return ([k.agent_hash, k.window, self.idem_key(agent, idem), k.events, k.webhooks,
                 k.tools, k.walls, *self._loop_keys(k, loop)],
                [agent, self.eid(), tool or f"v_{cat}", "" if cost is None else str(cost),
                 str(AMAX), ih, idem, meta])

    def charge(self, cost: int | None, agent: str = AGENT, cat: str = "tool", idem: str = "",
               ih: str = "", tool: str = "") -> list[Any]:
        return self.run("charge", *self.charge_args(cost, agent, cat, idem, ih or
                                                    ("h" + idem if idem else ""), tool=tool))

    def hold_args(  # noqa: PLR0913 - one argument per script input
            self, amount: int | None, hold_id: str = "hold1", agent: str = AGENT,
                  cat: str = "llm", ttl_ms: int = 60_000, idem: str = "", ih: str = "",
                  meta: str = "", tool: str = "", loop: str | None = None
                  ) -> tuple[list[str], list[str]]:
        k = self.k(agent)
        return ([k.agent_hash, k.window, k.hold(hold_id), k.holds, self.idem_key(agent, idem),
                 k.events, k.webhooks, k.tools, k.walls, *self._loop_keys(k, loop)],
                [agent, self.eid(), hold_id, tool or f"v_{cat}",
                 "" if amount is None else str(amount), str(AMAX), str(ttl_ms),
                 str(TTL_MAX_MS), ih, idem, meta])

    @staticmethod
    def _loop_keys(k: keys.AgentKeys, loop: str | None) -> list[str]:
        """The task key (none named) and the loop list of ``loop``, or nothing."""
        return [] if loop is None else [k.task("-"), k.loop(loop)]

    def hold(  # noqa: PLR0913 - one argument per script input
            self, amount: int | None, hold_id: str = "hold1", agent: str = AGENT,
             cat: str = "llm", ttl_ms: int = 60_000, idem: str = "", tool: str = ""
             ) -> list[Any]:
        return self.run("hold", *self.hold_args(amount, hold_id, agent, cat, ttl_ms, idem,
                                                "h" + idem if idem else "", tool=tool))

    def close_keys(self, hold_id: str, agent: str = AGENT, idem: str = "") -> list[str]:
        k = self.k(agent)
        return [k.agent_hash, k.window, k.hold(hold_id), k.holds, self.idem_key(agent, idem),
                k.events]

    def capture_args(self, cost: int | None, hold_id: str = "hold1", agent: str = AGENT,
                     idem: str = "", ih: str = "", meta: str = ""
                     ) -> tuple[list[str], list[str]]:
        return ([*self.close_keys(hold_id, agent, idem), self.k(agent).tools, self.k(agent).walls],
                [agent, self.eid(), hold_id, "" if cost is None else str(cost), str(AMAX), ih,
                 idem, meta])

    def capture(self, cost: int | None, hold_id: str = "hold1", agent: str = AGENT,
                idem: str = "") -> list[Any]:
        return self.run("capture", *self.capture_args(cost, hold_id, agent, idem,
                                                      "h" + idem if idem else ""))

    def release_args(self, hold_id: str = "hold1", agent: str = AGENT, idem: str = "",
                     ih: str = "") -> tuple[list[str], list[str]]:
        return ([*self.close_keys(hold_id, agent, idem), self.k(agent).walls],
                [agent, self.eid(), hold_id, ih, idem])

    def release(self, hold_id: str = "hold1", agent: str = AGENT, idem: str = "") -> list[Any]:
        return self.run("release", *self.release_args(hold_id, agent, idem,
                                                      "h" + idem if idem else ""))

    def expire_args(self, ids: int = 4, agent: str = AGENT) -> tuple[list[str], list[str]]:
        p = self.k(agent).partition
        return ([keys.holds_index(p), keys.events(p)],
                [keys.tag(p), *(self.eid() for _ in range(ids))])

    def expire(self, ids: int = 4, agent: str = AGENT) -> list[Any]:
        return self.run("expire_holds", *self.expire_args(ids, agent))

    def fund_args(  # noqa: PLR0913 - one argument per script input
            self, amount: int, agent: str = AGENT, balance_max: int = MICROS_MAX,
                  kind: str = "fund", idem: str = "", ih: str = "", meta: str = ""
                  ) -> tuple[list[str], list[str]]:
        k = self.k(agent)
        return ([k.agent_hash, self.idem_key(agent, idem), k.events],
                [agent, self.eid(), str(amount), str(AMAX), str(balance_max), kind, ih, idem,
                 meta])

    def fund(self, amount: int, agent: str = AGENT, balance_max: int = MICROS_MAX,
             idem: str = "") -> list[Any]:
        return self.run("fund", *self.fund_args(amount, agent, balance_max, "fund", idem,
                                                "h" + idem if idem else ""))

    def limits_args(self, *pairs: str, agent: str = AGENT) -> tuple[list[str], list[str]]:
        k = self.k(agent)
        return [k.agent_hash, k.events], [agent, self.eid(), str(AMAX), "{}", *pairs]

    def set_limits(self, *pairs: str, agent: str = AGENT) -> list[Any]:
        reply = self.run("set_limits", *self.limits_args(*pairs, agent=agent))
        assert reply == [0], reply
        return reply

    def freeze_args(self, flag: str, agent: str = AGENT) -> tuple[list[str], list[str]]:
        k = self.k(agent)
        return [k.agent_hash, k.events], [agent, self.eid(), flag]

    def key_add_args(self, n: int, agent: str = AGENT, keys_max: int = 16
                     ) -> tuple[list[str], list[str]]:
        k = self.k(agent)
        kh = key_hash(n)
        return ([k.agent_hash, k.keys, k.api_key_lookup(kh), k.events],
                [agent, self.eid(), f"key{n}", kh, str(keys_max)])

    def key_revoke_args(self, n: int, agent: str = AGENT) -> tuple[list[str], list[str]]:
        k = self.k(agent)
        kh = key_hash(n)
        return ([k.agent_hash, k.keys, k.api_key_lookup(kh), k.events],
                [agent, self.eid(), f"key{n}", kh])

    def tool_set_args(self, name: str = "web_search", price: int = 50_000, cat: str = "tool",
                      pricing: str = "fixed", upstream: str = "", headers: str = ""
                      ) -> tuple[list[str], list[str]]:
        return ([keys.tool(name), keys.TOOL_NAMES, keys.TOOLS_VERSION, keys.TOOL_EVENTS],
                [name, self.eid(), str(price), str(AMAX), cat, pricing, upstream, headers])

    def tool_copy_args(  # noqa: PLR0913 - one argument per script input
            self, tool: str, version: int, price: int | None = None, cat: str = "",
                       pricing: str = "", force: str = "0", partition: int | None = None
                       ) -> tuple[list[str], list[str]]:
        p = self.k().partition if partition is None else partition
        return ([keys.tools_copy(p)],
                [tool, str(version), "" if price is None else str(price), cat, pricing, force])

    def tool_delete_args(self, name: str = "web_search") -> tuple[list[str], list[str]]:
        return ([keys.tool(name), keys.TOOL_NAMES, keys.TOOLS_VERSION, keys.TOOL_EVENTS],
                [name, self.eid()])
