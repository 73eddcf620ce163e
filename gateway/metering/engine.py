"""The metering domain: typed async operations over the Lua scripts. No HTTP here.

Every operation is one EVALSHA (one Redis round trip, auto-pipelined with the calls of
concurrent callers). Python validates inputs for clear errors; the scripts validate them
again and hold every rule that matters for money.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.config import HOLD_TTL_S_MAX, TEST_CLOCK_KEY, Settings
from gateway.metering import ids, money, secrets_store
from gateway.metering.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
)
from gateway.metering.limits import check_name, limit_pair, limits_of
from gateway.metering.models import (
    AgentCreated,
    AgentState,
    CaptureResult,
    ChargeResult,
    FundResult,
    HoldResult,
    Limits,
    ReleaseResult,
    Tool,
    warnings_of,
)
from gateway.metering.refusals import refusal
from gateway.store import keys
from gateway.store.codes import Code, Flag
from gateway.store.connections import Connection
from gateway.store.scripts import Scripts

log = logging.getLogger("iou.engine")

IDEMPOTENCY_KEY_RE = re.compile(r"[\x20-\x7e]{1,128}", re.ASCII)
METADATA_BYTES_MAX = 2048
KEYS_PER_AGENT_MAX = 16
HOLD_TTL_S_DEFAULT = 300
EXPIRE_BATCH_MAX = 100
EXPIRE_FIRST_BATCH = 4  # entry ids minted per partition per sweep when nothing is due
CATALOG_REFRESH_S = 0.5
SWEEP_INTERVAL_S = 0.25


def _check_idempotency_key(key: str | None) -> None:
    if key is not None and not IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise InvalidRequest("Idempotency-Key", "must be 1 to 128 printable ASCII characters")


# A caller's key is printable ASCII, so it never holds this character: a derived key (the
# caller's key, this separator, a part name) can never equal a key a caller chose.
DERIVED_KEY_SEPARATOR = "\u00b7"
DERIVED_PART_RE = re.compile(r"[a-z0-9_]{1,32}", re.ASCII)


def derived_key(key: str | None, part: str | None) -> str | None:
    """The idempotency key of one part of a keyed request (a batch item, an invoke's
    capture), after checking the caller's ``key``; ``key`` itself when ``part`` is None."""
    _check_idempotency_key(key)
    if key is None or part is None:
        return key
    if not DERIVED_PART_RE.fullmatch(part):
        raise ValueError(f"bad idempotency part {part!r}")
    return f"{key}{DERIVED_KEY_SEPARATOR}{part}"


def _body_hash(*parts: object) -> str:
    """Hash of an operation's inputs: a retry must carry the same ones to be replayed."""
    return hashlib.sha256(orjson.dumps(parts)).hexdigest()[:48]


def _metadata_text(metadata: Mapping[str, Any] | None) -> str:
    if metadata is None:
        return ""
    if not isinstance(metadata, Mapping):
        raise InvalidRequest("metadata", "must be a JSON object")
    text = orjson.dumps(metadata).decode()
    if len(text.encode()) > METADATA_BYTES_MAX:
        raise InvalidRequest("metadata", f"must be at most {METADATA_BYTES_MAX} bytes")
    return text


def _int(value: Any) -> int:
    return int(value) if not isinstance(value, bytes) else int(value.decode())


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Engine:
    """The typed domain API the HTTP layer and the CLI call."""

    def __init__(self, conn: Connection, settings: Settings) -> None:
        self.conn = conn
        self.settings = settings
        self.test_clock_key = TEST_CLOCK_KEY if settings.test_clock else None
        self.scripts = Scripts(conn, self.test_clock_key)
        self.partitions = settings.partitions
        self._agent_keys: dict[str, keys.AgentKeys] = {}
        self._catalog: dict[str, Tool] = {}
        self._catalog_version = -1
        self._tasks: list[asyncio.Task[None]] = []

    # ---- life cycle -------------------------------------------------------------------

    async def start(self, background: bool = True) -> None:
        """Load scripts, settle the partition count, load the catalog, start the sweeper."""
        await self.scripts.preload()
        await self.conn.call_or_raise(b"HSETNX", keys.META, b"partitions", self.partitions)
        stored = _int(await self.conn.call_or_raise(b"HGET", keys.META, b"partitions"))
        if stored != self.partitions:
            log.warning("store was initialised with %d partitions; using %d, not %d",
                        stored, stored, self.settings.partitions)
            self.partitions = stored
        await self.refresh_catalog()
        if background:
            self._tasks.append(asyncio.create_task(self._sweep_forever()))
            self._tasks.append(asyncio.create_task(self._refresh_catalog_forever()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def clock_ms(self) -> int:
        """The scripts' clock: Redis TIME in ms (plus the test offset under IOU_TEST_CLOCK)."""
        now = await self.conn.call_or_raise(b"TIME")
        ms = _int(now[0]) * 1000 + _int(now[1]) // 1000
        if self.test_clock_key is not None:
            ms += _int(await self.conn.call_or_raise(b"GET", self.test_clock_key) or 0)
        return ms

    def agent_keys(self, agent: str) -> keys.AgentKeys:
        cached = self._agent_keys.get(agent)
        if cached is None:
            cached = keys.agent_keys(agent, self.partitions)
            if len(self._agent_keys) < 100_000:
                self._agent_keys[agent] = cached
        return cached

    # ---- charges ----------------------------------------------------------------------

    async def charge(self, agent: str, tool: str, cost_micros: int | None = None,
                     idempotency_key: str | None = None,
                     metadata: Mapping[str, Any] | None = None,
                     idempotency_part: str | None = None) -> ChargeResult:
        """Charge one call of ``tool``: the catalog price, or ``cost_micros`` for variable
        tools. The script reads the price, category and pricing from the agent's partition's
        copy of the catalog, so a price change applies to every call after its PUT. Raises
        the contract's refusal; on success the balance is already lower.
        ``idempotency_part`` (e.g. a batch item's index) derives the key of one part of a
        keyed request, see ``derived_key``."""
        check_name("agent", agent)
        check_name("tool", tool)
        idempotency_key = derived_key(idempotency_key, idempotency_part)
        given = self._given_amount("cost", cost_micros, 0)
        meta = _metadata_text(metadata)
        k = self.agent_keys(agent)
        body_hash = "" if idempotency_key is None else _body_hash("charge", tool, cost_micros,
                                                                  meta)
        idem = idempotency_key or ""
        reply = await self.scripts.run(
            "charge", [k.agent_hash, k.window, self._idem_key(k, idem), k.events, k.webhooks,
                       k.tools],
            [agent, ids.uuid7(), tool, given, str(self.settings.amount_max_micros), body_hash,
             idem, meta])
        code = Code(reply[0])
        if code not in (Code.OK, Code.REPLAY):
            raise refusal(code, reply, agent=agent, tool=tool, op="charge",
                          **self._cached_category(tool))
        flags = _int(reply[2])
        return ChargeResult(_text(reply[3]), agent, tool, _text(reply[5]), _int(reply[4]),
                            _int(reply[1]), warnings_of(flags),
                            code == Code.OK and bool(flags & Flag.LOW_CROSSED),
                            code == Code.REPLAY)

    def _given_amount(self, field: str, micros: int | None, low: int) -> str:
        """A client's amount as script text ('' when not given), after its range check."""
        if micros is None:
            return ""
        if isinstance(micros, bool) or not isinstance(micros, int) or not (
                low <= micros <= self.settings.amount_max_micros):
            bounds = "above 0 and at most" if low else "between 0 and"
            raise InvalidRequest(field, f"must be an amount {bounds} IOU_AMOUNT_MAX")
        return str(micros)

    def _cached_category(self, tool: str) -> dict[str, str]:
        """The tool's category as this worker last saw it, for refusal details and metrics
        labels only (the scripts' own category wins where a reply carries one)."""
        entry = self._catalog.get(tool)
        return {} if entry is None else {"category": entry.category}

    def _idem_key(self, k: keys.AgentKeys, idempotency_key: str) -> str:
        # The key name holds a digest, so any printable key maps to a short, safe name.
        # Without a key the scripts never touch KEYS[idem]; a fixed name in the agent's slot
        # (never a digest: those are hex) saves hashing on every such call.
        if not idempotency_key:
            return k.idempotency("none")
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
        return k.idempotency(digest)

    # ---- holds ------------------------------------------------------------------------

    async def hold(self, agent: str, tool: str, max_cost_micros: int | None = None,
                   ttl_s: int = HOLD_TTL_S_DEFAULT, idempotency_key: str | None = None,
                   metadata: Mapping[str, Any] | None = None) -> HoldResult:
        """Hold for ``ttl_s``: a fixed-price tool holds exactly its price (a
        ``max_cost_micros`` below it is refused, one above it holds the price); a variable
        tool holds ``max_cost_micros``, by default its catalog price."""
        check_name("agent", agent)
        check_name("tool", tool)
        _check_idempotency_key(idempotency_key)
        given = self._given_amount("max_cost", max_cost_micros, 1)
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not (
                1 <= ttl_s <= HOLD_TTL_S_MAX):
            raise InvalidRequest("ttl_s", f"must be a whole number from 1 to {HOLD_TTL_S_MAX}")
        meta = _metadata_text(metadata)
        k = self.agent_keys(agent)
        hold_id = ids.hold_id()
        idem = idempotency_key or ""
        body_hash = "" if not idem else _body_hash("hold", tool, max_cost_micros, ttl_s, meta)
        reply = await self.scripts.run(
            "hold", [k.agent_hash, k.window, k.hold(hold_id), k.holds,
                     self._idem_key(k, idem), k.events, k.webhooks, k.tools],
            [agent, ids.uuid7(), hold_id, tool, given, str(self.settings.amount_max_micros),
             str(ttl_s * 1000), str(HOLD_TTL_S_MAX * 1000), body_hash, idem, meta])
        code = Code(reply[0])
        if code not in (Code.OK, Code.REPLAY):
            raise refusal(code, reply, agent=agent, tool=tool, op="hold",
                          **self._cached_category(tool))
        flags = _int(reply[2])
        return HoldResult(_text(reply[3]), agent, tool, _int(reply[5]), _int(reply[4]),
                          _int(reply[1]), warnings_of(flags), bool(flags & Flag.LOW_CROSSED),
                          code == Code.REPLAY, fixed=_int(reply[6]) == 1)

    async def capture(self, agent: str, hold_id: str, cost_micros: int | None = None,
                      idempotency_key: str | None = None,
                      metadata: Mapping[str, Any] | None = None,
                      idempotency_part: str | None = None) -> CaptureResult:
        """Settle a hold at ``cost_micros`` (<= held); the rest returns to the balance.
        A hold on a fixed-price tool charges exactly its price: omit the cost (or give
        exactly that price)."""
        check_name("agent", agent)
        idempotency_key = derived_key(idempotency_key, idempotency_part)
        given = self._given_amount("cost", cost_micros, 0)
        k = self.agent_keys(agent)
        meta = _metadata_text(metadata)
        idem = idempotency_key or ""
        body_hash = "" if not idem else _body_hash("capture", hold_id, cost_micros, meta)
        reply = await self.scripts.run(
            "capture", [k.agent_hash, k.window, k.hold(_hold_ref(hold_id)), k.holds,
                        self._idem_key(k, idem), k.events, k.tools],
            [agent, ids.uuid7(), hold_id, given, str(self.settings.amount_max_micros),
             body_hash, idem, meta])
        code = Code(reply[0])
        if code not in (Code.OK, Code.REPLAY):
            raise refusal(code, reply, agent=agent, hold_id=hold_id, op="capture")
        return CaptureResult(_text(reply[3]), hold_id, _int(reply[5]), _int(reply[4]),
                             _int(reply[1]), warnings_of(_int(reply[2])), code == Code.REPLAY)

    async def release(self, agent: str, hold_id: str,
                      idempotency_key: str | None = None) -> ReleaseResult:
        """Cancel a hold; its whole amount returns to the balance."""
        check_name("agent", agent)
        _check_idempotency_key(idempotency_key)
        k = self.agent_keys(agent)
        idem = idempotency_key or ""
        body_hash = "" if not idem else _body_hash("release", hold_id)
        reply = await self.scripts.run(
            "release", [k.agent_hash, k.window, k.hold(_hold_ref(hold_id)), k.holds,
                        self._idem_key(k, idem), k.events],
            [agent, ids.uuid7(), hold_id, body_hash, idem])
        code = Code(reply[0])
        if code not in (Code.OK, Code.REPLAY):
            raise refusal(code, reply, agent=agent, hold_id=hold_id)
        return ReleaseResult(hold_id, _int(reply[4]), _int(reply[1]), code == Code.REPLAY)

    async def expire_holds(self) -> int:
        """Release every open hold past its expiry, in every partition; returns how many.

        All partitions are swept in one round trip; a partition that used its whole batch
        of entry ids is swept again with a larger one."""
        counts = await asyncio.gather(*(self._expire_partition(p, EXPIRE_FIRST_BATCH)
                                        for p in range(self.partitions)))
        return sum(counts)

    async def _expire_partition(self, partition: int, batch: int) -> int:
        total = 0
        while True:
            reply = await self.scripts.run(
                "expire_holds", [keys.holds_index(partition), keys.events(partition)],
                [keys.tag(partition), *(ids.uuid7() for _ in range(batch))])
            if reply[0] != Code.OK:
                raise refusal(Code(reply[0]), reply)
            total += _int(reply[1])
            if _int(reply[1]) < batch:
                return total
            batch = EXPIRE_BATCH_MAX

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.expire_holds()
            except GatewayError as exc:
                log.warning("hold sweeper: %s", exc.message)
            except Exception:
                log.exception("hold sweeper failed; retrying")
            await asyncio.sleep(SWEEP_INTERVAL_S)

    # ---- agents -----------------------------------------------------------------------

    async def create_agent(self, agent: str, grant_micros: int | None = None,
                           key_id: str | None = None) -> AgentCreated:
        """Create an agent with its sign-up grant (default IOU_SIGNUP_GRANT) and first key
        (``key_id`` given by an idempotent caller, so that a retry can recognise it)."""
        check_name("name", agent)
        grant = self.settings.signup_grant_micros if grant_micros is None else grant_micros
        if isinstance(grant, bool) or not isinstance(grant, int) or not (
                0 <= grant <= self.settings.amount_max_micros):
            raise InvalidRequest("grant", "must be an amount between 0 and IOU_AMOUNT_MAX")
        k = self.agent_keys(agent)
        api_key, key_hash = ids.new_api_key(k.partition, self.partitions)
        key_id = key_id or ids.key_id()
        reply = await self.scripts.run(
            "create_agent", [k.agent_hash, k.keys, k.api_key_lookup(key_hash), k.events,
                             k.agents_index],
            [agent, ids.uuid7(), ids.uuid7(), str(grant), str(self.settings.amount_max_micros),
             str(self.settings.low_balance_default_micros), key_id, key_hash])
        if reply[0] != Code.OK:
            raise refusal(Code(reply[0]), reply, agent=agent)
        return AgentCreated(agent, api_key, key_id, _int(reply[1]), _int(reply[2]))

    async def fund(self, agent: str, amount_micros: int, idempotency_key: str | None = None,
                   kind: str = "fund", metadata: Mapping[str, Any] | None = None) -> FundResult:
        """Add ``amount_micros`` (> 0) to the agent's balance."""
        check_name("agent", agent)
        _check_idempotency_key(idempotency_key)
        if isinstance(amount_micros, bool) or not isinstance(amount_micros, int) or not (
                0 < amount_micros <= self.settings.amount_max_micros):
            raise InvalidRequest("amount", "must be above 0 and at most IOU_AMOUNT_MAX")
        k = self.agent_keys(agent)
        idem = idempotency_key or ""
        meta = _metadata_text(metadata)
        body_hash = "" if not idem else _body_hash("fund", amount_micros, kind, meta)
        reply = await self.scripts.run(
            "fund", [k.agent_hash, self._idem_key(k, idem), k.events],
            [agent, ids.uuid7(), str(amount_micros), str(self.settings.amount_max_micros),
             str(money.BALANCE_MAX_MICROS), kind, body_hash, idem, meta])
        code = Code(reply[0])
        if code not in (Code.OK, Code.REPLAY):
            raise refusal(code, reply, agent=agent)
        return FundResult(agent, _text(reply[3]), _int(reply[1]), code == Code.REPLAY)

    async def freeze(self, agent: str, frozen: bool) -> bool:
        check_name("agent", agent)
        k = self.agent_keys(agent)
        reply = await self.scripts.run("freeze", [k.agent_hash, k.events],
                                       [agent, ids.uuid7(), "1" if frozen else "0"])
        if reply[0] != Code.OK:
            raise refusal(Code(reply[0]), reply, agent=agent)
        return bool(reply[1])

    async def set_limits(self, agent: str, changes: Mapping[str, int | str | None]) -> Limits:
        """Merge limit changes; keys are per_call, daily, low_balance, webhook_url,
        categories.<name>.per_call and categories.<name>.daily; None removes a limit."""
        check_name("agent", agent)
        pairs = [item for name, value in changes.items() for item in limit_pair(name, value)]
        k = self.agent_keys(agent)
        patch = orjson.dumps(dict(changes)).decode()
        reply = await self.scripts.run(
            "set_limits", [k.agent_hash, k.events],
            [agent, ids.uuid7(), str(self.settings.amount_max_micros), patch, *pairs])
        if reply[0] != Code.OK:
            raise refusal(Code(reply[0]), reply, agent=agent)
        return (await self.agent_state(agent)).limits

    async def add_key(self, agent: str, key_id: str | None = None) -> tuple[str, str]:
        """A further key for the agent: returns (key_id, api_key); the key is shown once.
        An idempotent caller passes ``key_id``, so that a retry can recognise its key."""
        check_name("agent", agent)
        k = self.agent_keys(agent)
        api_key, key_hash = ids.new_api_key(k.partition, self.partitions)
        key_id = key_id or ids.key_id()
        reply = await self.scripts.run(
            "key_add", [k.agent_hash, k.keys, k.api_key_lookup(key_hash), k.events],
            [agent, ids.uuid7(), key_id, key_hash, str(KEYS_PER_AGENT_MAX)])
        if reply[0] != Code.OK:
            raise refusal(Code(reply[0]), reply, agent=agent)
        return key_id, api_key

    async def has_key(self, agent: str, key_id: str) -> bool:
        """Whether the agent has (an unrevoked) key ``key_id``."""
        check_name("agent", agent)
        return bool(await self.conn.call_or_raise(b"HEXISTS", self.agent_keys(agent).keys,
                                                  key_id))

    async def revoke_key(self, agent: str, key_id: str) -> None:
        check_name("agent", agent)
        k = self.agent_keys(agent)
        key_hash = await self.conn.call_or_raise(b"HGET", k.keys, key_id)
        if key_hash is None:
            if not await self.conn.call_or_raise(b"EXISTS", k.agent_hash):
                raise NotFound(f"No agent named {agent}.")
            raise NotFound(f"Agent {agent} has no key {key_id}.")
        reply = await self.scripts.run(
            "key_revoke", [k.agent_hash, k.keys, k.api_key_lookup(_text(key_hash)), k.events],
            [agent, ids.uuid7(), key_id, _text(key_hash)])
        if reply[0] != Code.OK:
            raise refusal(Code(reply[0]), reply, agent=agent)

    async def authenticate(self, api_key: str) -> str | None:
        """The agent an agent key acts for, or None for unknown and revoked keys alike."""
        if not api_key.startswith(ids.API_KEY_PREFIX) or len(api_key) > 128:
            return None
        key_hash = keys.api_key_hash(api_key)
        agent = await self.conn.call_or_raise(
            b"HGET", keys.api_key_lookup(key_hash, self.partitions), b"agent")
        return None if agent is None else _text(agent)

    async def agent_state(self, agent: str) -> AgentState:
        """Balance, held, today's spending and limits of one agent (one round trip)."""
        check_name("agent", agent)
        k = self.agent_keys(agent)
        fields, window, now_ms = await asyncio.gather(
            self.conn.call_or_raise(b"HGETALL", k.agent_hash),
            self.conn.call_or_raise(b"HGETALL", k.window),
            self.clock_ms())
        if not fields:
            raise NotFound(f"No agent named {agent}.")
        a = _pairs(fields)
        w = _pairs(window)
        today = now_ms // 86_400_000
        fresh = w.get("day") == str(today)
        by_category = {f[2:]: int(v) for f, v in w.items() if f.startswith("s:")} if fresh else {}
        return AgentState(agent, int(a["bal"]), int(a.get("held", "0")),
                          int(w.get("s", "0")) if fresh else 0, by_category,
                          a.get("frozen") == "1", limits_of(a), int(a.get("created", "0")))

    async def agent_names(self, limit: int, after: str | None = None) -> list[str]:
        """Up to ``limit`` agent names in name order, after ``after`` (a paging cursor).

        Each partition keeps a sorted index of its names; the pages of all partitions
        are fetched in one round trip and merged."""
        start = b"(" + after.encode() if after else b"-"
        pages = await asyncio.gather(*(
            self.conn.call_or_raise(b"ZRANGE", keys.agents_index(p), start, b"+", b"BYLEX",
                                    b"LIMIT", 0, limit) for p in range(self.partitions)))
        return sorted(_text(n) for page in pages for n in page)[:limit]

    # ---- catalog ----------------------------------------------------------------------

    async def set_tool(self, tool: str, price_micros: int, category: str, pricing: str = "fixed",
                       upstream: str | None = None,
                       upstream_headers: Mapping[str, str] | None = None) -> Tool:
        check_name("tool", tool)
        check_name("category", category)
        if pricing not in ("fixed", "variable"):
            raise InvalidRequest("pricing", "must be fixed or variable")
        if isinstance(price_micros, bool) or not isinstance(price_micros, int) or not (
                0 <= price_micros <= self.settings.amount_max_micros):
            raise InvalidRequest("price", "must be an amount between 0 and IOU_AMOUNT_MAX")
        if upstream is not None and not re.fullmatch(r"https?://[!-~]{1,2040}", upstream):
            raise InvalidRequest("upstream", "must be an http:// or https:// URL")
        # Sealed here, before the script: Redis, the stream and the ledger see ciphertext only.
        headers = secrets_store.seal_headers(self.settings, tool, upstream_headers)
        reply = await self.scripts.run(
            "tool_set", [keys.tool(tool), keys.TOOL_NAMES, keys.TOOLS_VERSION, keys.TOOL_EVENTS],
            [tool, ids.uuid7(), str(price_micros), str(self.settings.amount_max_micros),
             category, pricing, upstream or "", headers])
        if reply[0] != Code.OK:
            raise refusal(Code(reply[0]), reply, tool=tool)
        # Every partition's copy before the PUT answers: the scripts price from them.
        await self._copy_everywhere(tool, _int(reply[1]), (price_micros, category, pricing))
        await self.refresh_catalog()
        return self._catalog[tool]

    async def delete_tool(self, tool: str) -> None:
        check_name("tool", tool)
        reply = await self.scripts.run(
            "tool_delete", [keys.tool(tool), keys.TOOL_NAMES, keys.TOOLS_VERSION,
                            keys.TOOL_EVENTS], [tool, ids.uuid7()])
        if reply[0] != Code.OK:
            raise refusal(Code(reply[0]), reply, tool=tool)
        await self._copy_everywhere(tool, _int(reply[1]), None)
        await self.refresh_catalog()

    async def _copy_everywhere(self, tool: str, version: int,
                               entry: tuple[int, str, str] | None) -> None:
        """One tool_copy per partition, all in one pipelined round trip."""
        await asyncio.gather(*(self._copy(p, tool, version, entry, False)
                               for p in range(self.partitions)))

    async def _copy(self, partition: int, tool: str, version: int,
                    entry: tuple[int, str, str] | None, force: bool) -> int:
        """Write one partition's copy of one entry (None: deleted); 1 if written, 0 if a
        newer version was already there."""
        price, category, pricing = ("", "", "") if entry is None else (str(entry[0]), *entry[1:])
        reply = await self.scripts.run(
            "tool_copy", [keys.tools_copy(partition)],
            [tool, str(version), price, category, pricing, "1" if force else "0"])
        if reply[0] != Code.OK:
            raise refusal(Code(reply[0]), reply, tool=tool)
        return _int(reply[1])

    async def sync_tool_copies(self, force: bool = False) -> int:
        """Make every partition's copy agree with the catalog; returns how many were written.

        Repairs copies a change did not reach (a worker stopped between the catalog write
        and its copies; a store written before the copies existed). Copies carry the catalog
        version of their change and tool_copy.lua keeps the newest, so this never undoes a
        newer change made meanwhile; ``force`` (iou recover) replaces whatever is stored."""
        catalog, version = self._catalog, self._catalog_version
        stored = await asyncio.gather(*(self.conn.call_or_raise(b"HGETALL", keys.tools_copy(p))
                                        for p in range(self.partitions)))
        calls = []
        for partition, flat in enumerate(stored):
            rows = _pairs(flat)
            for name, t in catalog.items():
                if rows.get(name) != f"{t.version} {t.price_micros} {t.category} {t.pricing}":
                    calls.append(self._copy(partition, name, t.version,
                                            (t.price_micros, t.category, t.pricing), force))
            for name, row in rows.items():
                if name not in catalog and " " in row:  # deleted from the catalog
                    calls.append(self._copy(partition, name, version, None, force))
        return sum(await asyncio.gather(*calls))

    def tools(self) -> list[Tool]:
        return sorted(self._catalog.values(), key=lambda t: t.name)

    async def refresh_catalog(self) -> None:
        """Reload the catalog when its version moved (tool changes reach every worker's
        listing and proxy), then repair the partitions' copies if a change missed one."""
        version = _int(await self.conn.call_or_raise(b"GET", keys.TOOLS_VERSION) or 0)
        if version == self._catalog_version:
            return
        names = sorted(_text(n) for n in await self.conn.call_or_raise(b"SMEMBERS",
                                                                        keys.TOOL_NAMES))
        rows = await asyncio.gather(*(self.conn.call_or_raise(b"HGETALL", keys.tool(n))
                                      for n in names))
        catalog = {}
        for name, row in zip(names, rows, strict=True):
            if row:
                f = _pairs(row)
                catalog[name] = Tool(name, int(f["price"]), f["category"], f["pricing"],
                                     f.get("upstream") or None, f.get("headers") or None,
                                     int(f.get("version", "0")))
        self._catalog, self._catalog_version = catalog, version
        written = await self.sync_tool_copies()
        if written:
            log.warning("catalog copies: repaired %d partition entries", written)

    async def _refresh_catalog_forever(self) -> None:
        while True:
            await asyncio.sleep(CATALOG_REFRESH_S)
            try:
                await self.refresh_catalog()
            except GatewayError as exc:
                log.warning("catalog refresh: %s", exc.message)
            except Exception:
                log.exception("catalog refresh failed; retrying")


def _hold_ref(hold_id: str) -> str:
    if not isinstance(hold_id, str) or not re.fullmatch(r"hold_[0-9a-f]{32}", hold_id):
        raise NotFound("No such hold.")
    return hold_id


def _pairs(flat: list[Any]) -> dict[str, str]:
    it = iter(flat)
    return {_text(k): _text(v) for k, v in zip(it, it, strict=True)}
