"""One typed wrapper per Lua script: arguments in, a typed reply out.

Each wrapper builds the script's KEYS from names (the keys never leave the store), turns
its arguments into the script's ARGV text and reads the reply by the field names of the
script's header (tests/test_script_replies.py checks each reply class against its header).
A business refusal comes back as ``Refused``, with the fields its header names; nothing
outside this module reads a reply by position.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.store import keys
from gateway.store.codes import Code
from gateway.store.connections import Connection
from gateway.store.resp import reply_text as _text
from gateway.store.scripts import Scripts

# The task key passed to charge.lua and hold.lua for a call naming no task (never read:
# minted task ids start with "task_").
NO_TASK = "-"


def _amount(micros: int | None) -> str:
    """An optional amount as script text: '' when not given."""
    return "" if micros is None else str(micros)


@dataclass(frozen=True)
class Refused:
    """A script's refusal: its code and the fields its header lists for that code."""

    code: Code
    fields: Mapping[str, Any]

    def integer(self, name: str) -> int:
        return int(self.fields[name])

    def text(self, name: str) -> str | None:
        value = self.fields.get(name)
        return None if value is None else _text(value)


@dataclass(frozen=True)
class ChargeReply:
    balance: int
    flags: int
    entry_id: str
    cost: int
    category: str
    # The limit the agent's shadow limits would have refused the call with ('' when none).
    shadow: str
    replayed: bool


@dataclass(frozen=True)
class HoldReply:
    balance: int
    flags: int
    hold_id: str
    expires_at_ms: int
    amount: int
    fixed: bool
    shadow: str  # as ChargeReply's
    replayed: bool


@dataclass(frozen=True)
class CaptureReply:
    balance: int
    flags: int
    entry_id: str
    released: int
    cost: int
    replayed: bool


@dataclass(frozen=True)
class ReleaseReply:
    balance: int
    flags: int
    entry_id: str
    released: int
    replayed: bool


@dataclass(frozen=True)
class TaskOpenReply:
    created_ms: int
    expires_at_ms: int


@dataclass(frozen=True)
class TaskCloseReply:
    released_count: int


@dataclass(frozen=True)
class FundReply:
    balance: int
    flags: int
    entry_id: str
    replayed: bool


@dataclass(frozen=True)
class RefundReply:
    balance: int
    flags: int
    entry_id: str
    amount: int
    replayed: bool


@dataclass(frozen=True)
class DebitReply:
    balance: int
    flags: int
    entry_id: str
    replayed: bool


@dataclass(frozen=True)
class ChildReply:
    balance: int  # the parent's, after
    child_balance: int
    created_at_ms: int


@dataclass(frozen=True)
class ReclaimReply:
    balance: int  # the child's, after
    flags: int
    entry_id: str
    amount: int
    replayed: bool


@dataclass(frozen=True)
class ChargeRef:
    """What refund.lua needs to know of the refunded charge (read from the ledger)."""

    charge_id: str
    agent: str
    tool: str
    category: str
    cost_micros: int
    at_ms: int
    refunded_micros: int  # the ledger's sum of this charge's refunds
    task: str | None = None  # the task the charge counted against


@dataclass(frozen=True)
class ExpireReply:
    expired_count: int


@dataclass(frozen=True)
class AgentReply:
    balance: int
    created_at_ms: int


@dataclass(frozen=True)
class FreezeReply:
    frozen: bool


@dataclass(frozen=True)
class Done:
    """The reply of a script whose success carries no field ({0})."""


@dataclass(frozen=True)
class VersionReply:
    version: int


@dataclass(frozen=True)
class CopyReply:
    written: bool


@dataclass(frozen=True)
class AuthFailReply:
    scope: int
    retry_ms: int


@dataclass(frozen=True)
class RestoreReply:
    written: int


@dataclass(frozen=True)
class ScannedAgent:
    """One agent of an agent_scan page (micros; low and daily 0 when unset)."""

    name: str
    balance: int
    held: int
    frozen: bool
    low: int
    daily: int
    spent_today: int


@dataclass(frozen=True)
class ScanReply:
    """A page of agent_scan: the header's per-agent fields repeat (``ScannedAgent``)."""

    agents: tuple[ScannedAgent, ...]


# Each script's success reply class (tests check their fields against the headers).
REPLY_CLASSES: dict[str, type] = {
    "charge": ChargeReply, "hold": HoldReply, "capture": CaptureReply,
    "release": ReleaseReply, "fund": FundReply, "expire_holds": ExpireReply,
    "create_agent": AgentReply, "freeze": FreezeReply, "set_limits": Done, "key_add": Done,
    "key_revoke": Done, "tool_set": VersionReply, "tool_delete": VersionReply,
    "tool_copy": CopyReply, "auth_fail": AuthFailReply, "restore": RestoreReply,
    "agent_scan": ScanReply, "task_open": TaskOpenReply, "task_close": TaskCloseReply,
    "refund": RefundReply, "debit": DebitReply, "child_create": ChildReply,
    "reclaim": ReclaimReply,
}
# Replies whose header lists one group of fields repeated: the class of one group.
REPEATED_CLASSES: dict[str, type] = {"agent_scan": ScannedAgent}


@dataclass(frozen=True)
class Idempotency:
    """A keyed call's idempotency: the caller's key and the hash of the request's inputs
    (a retry with the same key must carry the same inputs to be replayed)."""

    key: str
    body_hash: str


class ScriptCalls:
    """The scripts of the gateway as typed async calls, bound to one connection."""

    def __init__(self, conn: Connection, partitions: int,
                 test_clock_key: str | None = None, replay_clock_key: str | None = None
                 ) -> None:
        self.scripts = Scripts(conn, test_clock_key, replay_clock_key)
        # Settled at start (the store's recorded count wins over the configured one).
        self.partitions = partitions

    def agent_keys(self, agent: str) -> keys.AgentKeys:
        return keys.agent_keys(agent, self.partitions)

    async def _run(self, name: str, key_names: Sequence[str], args: Sequence[str | bytes]
                   ) -> tuple[Code, list[Any]]:
        reply = await self.scripts.run(name, key_names, args)
        return Code(reply[0]), reply

    def _refused(self, name: str, code: Code, reply: list[Any]) -> Refused:
        shape = self.scripts.by_name[name].shapes.get(code, ())
        return Refused(code, dict(zip(shape, reply[1:], strict=False)))

    @staticmethod
    def _idem(k: keys.AgentKeys, idem: Idempotency | None) -> tuple[str, str, str]:
        """(record key, body hash, key) of a call. Without a key the scripts never touch
        KEYS[idem]; a fixed name in the agent's slot (never a digest: those are hex) saves
        hashing on every such call."""
        if idem is None:
            return k.idempotency("none"), "", ""
        return k.idempotency(keys.short_digest(idem.key)), idem.body_hash, idem.key

    # ---- money ------------------------------------------------------------------------

    async def charge(  # noqa: PLR0913 - one parameter per ARGV the script takes
            self, agent: str, entry_id: str, tool: str, cost_micros: int | None,
            amount_max_micros: int, idem: Idempotency | None, metadata: str,
            task_id: str | None = None, loop_digest: str = "") -> ChargeReply | Refused:
        """``loop_digest``: the call's tool and arguments (metering/inputs.py loop_digest)
        for the loop breaker; the script reads its list only for agents with a loop limit."""
        k = self.agent_keys(agent)
        record, body_hash, key = self._idem(k, idem)
        code, r = await self._run(
            "charge", [k.agent_hash, k.window, record, k.events, k.webhooks, k.tools, k.walls,
                       k.task(task_id or NO_TASK), k.loop(loop_digest)],
            [agent, entry_id, tool, _amount(cost_micros), str(amount_max_micros), body_hash,
             key, metadata, task_id or ""])
        if code not in (Code.OK, Code.REPLAY):
            return self._refused("charge", code, r)
        return ChargeReply(int(r[1]), int(r[2]), _text(r[3]), int(r[4]), _text(r[5]),
                           _text(r[6]), code == Code.REPLAY)

    async def hold(  # noqa: PLR0913 - one parameter per ARGV the script takes
            self, agent: str, entry_id: str, hold_id: str, tool: str,
            max_cost_micros: int | None, amount_max_micros: int, ttl_ms: int,
            ttl_max_ms: int, idem: Idempotency | None, metadata: str,
            task_id: str | None = None, loop_digest: str = "") -> HoldReply | Refused:
        k = self.agent_keys(agent)
        record, body_hash, key = self._idem(k, idem)
        code, r = await self._run(
            "hold", [k.agent_hash, k.window, k.hold(hold_id), k.holds, record, k.events,
                     k.webhooks, k.tools, k.walls, k.task(task_id or NO_TASK),
                     k.loop(loop_digest)],
            [agent, entry_id, hold_id, tool, _amount(max_cost_micros), str(amount_max_micros),
             str(ttl_ms), str(ttl_max_ms), body_hash, key, metadata, task_id or ""])
        if code not in (Code.OK, Code.REPLAY):
            return self._refused("hold", code, r)
        return HoldReply(int(r[1]), int(r[2]), _text(r[3]), int(r[4]), int(r[5]),
                         int(r[6]) == 1, _text(r[7]), code == Code.REPLAY)

    async def capture(  # noqa: PLR0913 - one parameter per ARGV the script takes
            self, agent: str, entry_id: str, hold_id: str, cost_micros: int | None,
            amount_max_micros: int, idem: Idempotency | None, metadata: str
            ) -> CaptureReply | Refused:
        k = self.agent_keys(agent)
        record, body_hash, key = self._idem(k, idem)
        code, r = await self._run(
            "capture", [k.agent_hash, k.window, k.hold(hold_id), k.holds, record, k.events,
                        k.tools, k.walls],
            [agent, entry_id, hold_id, _amount(cost_micros), str(amount_max_micros),
             body_hash, key, metadata])
        if code not in (Code.OK, Code.REPLAY):
            return self._refused("capture", code, r)
        return CaptureReply(int(r[1]), int(r[2]), _text(r[3]), int(r[4]), int(r[5]),
                            code == Code.REPLAY)

    async def release(self, agent: str, entry_id: str, hold_id: str,
                      idem: Idempotency | None) -> ReleaseReply | Refused:
        k = self.agent_keys(agent)
        record, body_hash, key = self._idem(k, idem)
        code, r = await self._run(
            "release", [k.agent_hash, k.window, k.hold(hold_id), k.holds, record, k.events,
                        k.walls],
            [agent, entry_id, hold_id, body_hash, key])
        if code not in (Code.OK, Code.REPLAY):
            return self._refused("release", code, r)
        return ReleaseReply(int(r[1]), int(r[2]), _text(r[3]), int(r[4]), code == Code.REPLAY)

    async def expire_holds(self, partition: int, entry_ids: Sequence[str]
                           ) -> ExpireReply | Refused:
        """Release the partition's holds past their expiry, one minted id per hold."""
        code, r = await self._run(
            "expire_holds", [keys.holds_index(partition), keys.events(partition)],
            [keys.tag(partition), *entry_ids])
        if code != Code.OK:
            return self._refused("expire_holds", code, r)
        return ExpireReply(int(r[1]))

    async def fund(  # noqa: PLR0913 - one parameter per ARGV the script takes
            self, agent: str, entry_id: str, amount_micros: int,
            amount_max_micros: int, balance_max_micros: int, kind: str,
            idem: Idempotency | None, metadata: str) -> FundReply | Refused:
        k = self.agent_keys(agent)
        record, body_hash, key = self._idem(k, idem)
        code, r = await self._run(
            "fund", [k.agent_hash, record, k.events],
            [agent, entry_id, str(amount_micros), str(amount_max_micros),
             str(balance_max_micros), kind, body_hash, key, metadata])
        if code not in (Code.OK, Code.REPLAY):
            return self._refused("fund", code, r)
        return FundReply(int(r[1]), int(r[2]), _text(r[3]), code == Code.REPLAY)

    # ---- tasks ------------------------------------------------------------------------

    async def task_open(  # noqa: PLR0913 - one parameter per ARGV the script takes
            self, agent: str, task_id: str, budget_micros: int, amount_max_micros: int,
            ttl_ms: int, ttl_max_ms: int, name: str, max_calls: Mapping[str, int]
            ) -> TaskOpenReply | Refused:
        k = self.agent_keys(agent)
        pairs = [item for n, count in max_calls.items() for item in (n, str(count))]
        code, r = await self._run(
            "task_open", [k.agent_hash, k.task(task_id), k.tasks()],
            [agent, task_id, str(budget_micros), str(amount_max_micros), str(ttl_ms),
             str(ttl_max_ms), name, *pairs])
        if code != Code.OK:
            return self._refused("task_open", code, r)
        return TaskOpenReply(int(r[1]), int(r[2]))

    async def task_close(self, agent: str, task_id: str, entry_ids: Sequence[str]
                         ) -> TaskCloseReply | Refused:
        """Close the task, releasing its open holds (one minted entry id per hold; too few
        is TASK_IDS_SHORT with the number needed, and nothing written)."""
        k = self.agent_keys(agent)
        code, r = await self._run(
            "task_close", [k.agent_hash, k.task(task_id), k.window, k.walls, k.holds, k.events],
            [agent, task_id, *entry_ids])
        if code != Code.OK:
            return self._refused("task_close", code, r)
        return TaskCloseReply(int(r[1]))

    async def refund(  # noqa: PLR0913 - one parameter per ARGV the script takes
            self, charge: ChargeRef, entry_id: str, amount_micros: int | None,
            amount_max_micros: int, balance_max_micros: int, idem: Idempotency | None,
            reason: str) -> RefundReply | Refused:
        k = self.agent_keys(charge.agent)
        record, body_hash, key = self._idem(k, idem)
        code, r = await self._run(
            "refund", [k.agent_hash, k.window, record, k.events, k.refunded(charge.charge_id),
                       k.walls, k.task(charge.task or "none")],
            [charge.agent, entry_id, charge.charge_id, str(charge.cost_micros),
             str(charge.refunded_micros), _amount(amount_micros), str(amount_max_micros),
             str(balance_max_micros), str(charge.at_ms), charge.tool, charge.category,
             body_hash, key, reason, charge.task or ""])
        if code not in (Code.OK, Code.REPLAY):
            return self._refused("refund", code, r)
        return RefundReply(int(r[1]), int(r[2]), _text(r[3]), int(r[4]), code == Code.REPLAY)

    async def debit(
            self, agent: str, entry_id: str, amount_micros: int, amount_max_micros: int,
            idem: Idempotency | None, reason: str) -> DebitReply | Refused:
        k = self.agent_keys(agent)
        record, body_hash, key = self._idem(k, idem)
        code, r = await self._run(
            "debit", [k.agent_hash, record, k.events, k.webhooks],
            [agent, entry_id, str(amount_micros), str(amount_max_micros), body_hash, key,
             reason])
        if code not in (Code.OK, Code.REPLAY):
            return self._refused("debit", code, r)
        return DebitReply(int(r[1]), int(r[2]), _text(r[3]), code == Code.REPLAY)

    async def child_create(  # noqa: PLR0913 - one parameter per ARGV the script takes
            self, parent: str, child: str, entry_ids: tuple[str, str, str, str],
            amount_micros: int, amount_max_micros: int, low_balance_micros: int,
            key: tuple[str, str], limits_text: str, limit_pairs: Sequence[str]
            ) -> ChildReply | Refused:
        """Create ``child`` funded with ``amount_micros`` from ``parent`` (same partition:
        the caller checked); ``key`` is (key id, key hash) of its first key."""
        p, c = self.agent_keys(parent), self.agent_keys(child)
        key_id, key_hash = key
        code, r = await self._run(
            "child_create", [p.agent_hash, c.agent_hash, c.keys, c.api_key_lookup(key_hash),
                             p.events, p.agents_index, p.webhooks, p.children()],
            [parent, child, *entry_ids, str(amount_micros), str(amount_max_micros),
             str(low_balance_micros), key_id, key_hash, limits_text, *limit_pairs])
        if code != Code.OK:
            return self._refused("child_create", code, r)
        return ChildReply(int(r[1]), int(r[2]), int(r[3]))

    async def reclaim(  # noqa: PLR0913 - one parameter per ARGV the script takes
            self, child: str, parent: str, entry_ids: tuple[str, str],
            amount_micros: int | None, amount_max_micros: int, balance_max_micros: int,
            idem: Idempotency | None) -> ReclaimReply | Refused:
        c, p = self.agent_keys(child), self.agent_keys(parent)
        record, body_hash, key = self._idem(c, idem)
        code, r = await self._run(
            "reclaim", [c.agent_hash, p.agent_hash, c.events, record],
            [child, parent, *entry_ids, _amount(amount_micros), str(amount_max_micros),
             str(balance_max_micros), body_hash, key])
        if code not in (Code.OK, Code.REPLAY):
            return self._refused("reclaim", code, r)
        return ReclaimReply(int(r[1]), int(r[2]), _text(r[3]), int(r[4]), code == Code.REPLAY)

    # ---- agents and keys --------------------------------------------------------------

    async def create_agent(  # noqa: PLR0913 - one parameter per ARGV the script takes
            self, agent: str, entry_ids: tuple[str, str], grant_micros: int,
            amount_max_micros: int, low_balance_micros: int, key_id: str,
            key_hash: str) -> AgentReply | Refused:
        k = self.agent_keys(agent)
        code, r = await self._run(
            "create_agent", [k.agent_hash, k.keys, k.api_key_lookup(key_hash), k.events,
                             k.agents_index],
            [agent, *entry_ids, str(grant_micros), str(amount_max_micros),
             str(low_balance_micros), key_id, key_hash])
        if code != Code.OK:
            return self._refused("create_agent", code, r)
        return AgentReply(int(r[1]), int(r[2]))

    async def freeze(self, agent: str, entry_id: str, frozen: bool) -> FreezeReply | Refused:
        k = self.agent_keys(agent)
        code, r = await self._run("freeze", [k.agent_hash, k.events],
                                  [agent, entry_id, "1" if frozen else "0"])
        if code != Code.OK:
            return self._refused("freeze", code, r)
        return FreezeReply(bool(int(r[1])))

    async def set_limits(self, agent: str, entry_id: str, amount_max_micros: int, patch: str,
                         pairs: Sequence[str]) -> Done | Refused:
        k = self.agent_keys(agent)
        code, r = await self._run("set_limits", [k.agent_hash, k.events],
                                  [agent, entry_id, str(amount_max_micros), patch, *pairs])
        return Done() if code == Code.OK else self._refused("set_limits", code, r)

    async def key_add(self, agent: str, entry_id: str, key_id: str, key_hash: str,
                      keys_max: int) -> Done | Refused:
        k = self.agent_keys(agent)
        code, r = await self._run(
            "key_add", [k.agent_hash, k.keys, k.api_key_lookup(key_hash), k.events],
            [agent, entry_id, key_id, key_hash, str(keys_max)])
        return Done() if code == Code.OK else self._refused("key_add", code, r)

    async def key_revoke(self, agent: str, entry_id: str, key_id: str, key_hash: str
                         ) -> Done | Refused:
        k = self.agent_keys(agent)
        code, r = await self._run(
            "key_revoke", [k.agent_hash, k.keys, k.api_key_lookup(key_hash), k.events],
            [agent, entry_id, key_id, key_hash])
        return Done() if code == Code.OK else self._refused("key_revoke", code, r)

    async def auth_fail(self, client: str, credential: str | None, window_ms: int,
                        limits: tuple[int, int, int]) -> AuthFailReply | Refused:
        """Count one failed authentication; ``limits``: (everyone, per client, per
        credential) failures per window."""
        counters = [keys.AUTH_FAILURES_ALL, keys.auth_failures_client(client)]
        if credential is not None:
            counters.append(keys.auth_failures_credential(credential))
        code, r = await self._run("auth_fail", counters,
                                  [str(window_ms), *(str(n) for n in limits)])
        if code != Code.OK:
            return self._refused("auth_fail", code, r)
        return AuthFailReply(int(r[1]), int(r[2]))

    async def agent_scan(self, partition: int, after: str, page_agents: int, today: int
                         ) -> ScanReply | Refused:
        """Up to ``page_agents`` agents of the partition after the name ``after`` ('' = from
        the first), with today's (UTC day number ``today``) spending."""
        code, r = await self._run(
            "agent_scan", [keys.agents_index(partition)],
            [keys.tag(partition), after, str(page_agents), str(today)])
        if code != Code.OK:
            return self._refused("agent_scan", code, r)
        width = len(dataclasses.fields(ScannedAgent))
        return ScanReply(tuple(
            ScannedAgent(_text(r[i]), int(r[i + 1]), int(r[i + 2]), int(r[i + 3]) == 1,
                         int(r[i + 4]), int(r[i + 5]), int(r[i + 6]))
            for i in range(1, len(r), width)))

    # ---- catalog ----------------------------------------------------------------------

    async def tool_set(  # noqa: PLR0913 - one parameter per ARGV the script takes
            self, tool: str, entry_id: str, price_micros: int,
            amount_max_micros: int, category: str, pricing: str, upstream: str,
            sealed_headers: str) -> VersionReply | Refused:
        code, r = await self._run(
            "tool_set", [keys.tool(tool), keys.TOOL_NAMES, keys.TOOLS_VERSION,
                         keys.TOOL_EVENTS],
            [tool, entry_id, str(price_micros), str(amount_max_micros), category, pricing,
             upstream, sealed_headers])
        return VersionReply(int(r[1])) if code == Code.OK else self._refused("tool_set", code, r)

    async def tool_delete(self, tool: str, entry_id: str) -> VersionReply | Refused:
        code, r = await self._run(
            "tool_delete", [keys.tool(tool), keys.TOOL_NAMES, keys.TOOLS_VERSION,
                            keys.TOOL_EVENTS], [tool, entry_id])
        if code != Code.OK:
            return self._refused("tool_delete", code, r)
        return VersionReply(int(r[1]))

    async def tool_copy(self, partition: int, tool: str, version: int,
                        entry: tuple[int, str, str] | None, force: bool
                        ) -> CopyReply | Refused:
        """Write one partition's copy of one entry ((price, category, pricing); None:
        deleted); ``written`` is False when a newer version was already there."""
        price, category, pricing = ("", "", "") if entry is None else (str(entry[0]), *entry[1:])
        code, r = await self._run(
            "tool_copy", [keys.tools_copy(partition)],
            [tool, str(version), price, category, pricing, "1" if force else "0"])
        if code != Code.OK:
            return self._refused("tool_copy", code, r)
        return CopyReply(int(r[1]) == 1)

    # ---- recovery from the ledger -----------------------------------------------------

    async def _restore(self, key_names: Sequence[str], args: Sequence[str]
                       ) -> RestoreReply | Refused:
        code, r = await self._run("restore", key_names, args)
        return RestoreReply(int(r[1])) if code == Code.OK else self._refused("restore", code, r)

    async def restore_agent(self, agent: str, balance_micros: int, held_micros: int,
                            frozen: bool, created_ms: int, limit_fields: Mapping[str, str]
                            ) -> RestoreReply | Refused:
        """The agent hash (limits as set_limits.lua stores them) and its listing entry."""
        k = self.agent_keys(agent)
        pairs = [item for pair in limit_fields.items() for item in pair]
        return await self._restore(
            [k.agent_hash, k.agents_index],
            ["agent", agent, str(balance_micros), str(held_micros), "1" if frozen else "0",
             str(created_ms), *pairs])

    async def restore_hold(  # noqa: PLR0913 - one parameter per ARGV the script takes
            self, agent: str, hold_id: str, tool: str, category: str,
            amount_micros: int, at_ms: int, expires_at_ms: int,
            walls_periods: tuple[int, int] | None = None) -> RestoreReply | Refused:
        """An open hold; ``walls_periods`` (its ISO week and month numbers) when it counts in
        the agent's walls (restored by ``restore_walls``), so that closing it gives back."""
        k = self.agent_keys(agent)
        counted = [] if walls_periods is None else [str(walls_periods[0]),
                                                     str(walls_periods[1])]
        return await self._restore(
            [k.hold(hold_id), k.holds],
            ["hold", hold_id, agent, tool, category, str(amount_micros), str(at_ms),
             str(expires_at_ms), *counted])

    async def restore_walls(self, agent: str, fields: Mapping[str, str]
                            ) -> RestoreReply | Refused:
        """The agent's walls hash: field -> value as _lib.lua writes them (its records and the
        minutes of the rolling hour, gateway/metering/walls.py)."""
        pairs = [item for name, value in fields.items() for item in (name, value)]
        return await self._restore([self.agent_keys(agent).walls], ["walls", *pairs])

    async def restore_window(self, agent: str, day_ms: int, micros: Mapping[str, int]
                             ) -> RestoreReply | Refused:
        """Today's window: ``micros`` by field (s, h, s:<category>, h:<category>)."""
        pairs = [item for field, value in micros.items() for item in (field, str(value))]
        return await self._restore([self.agent_keys(agent).window],
                                   ["window", str(day_ms), *pairs])

    async def restore_idempotency(self, agent: str, key: str, body_hash: str,
                                  balance_micros: int, answer_id: str, extra_micros: int
                                  ) -> RestoreReply | Refused:
        """The first answer of a keyed call (after its agent: the replay's warning bit is
        computed from the agent's low_balance)."""
        k = self.agent_keys(agent)
        return await self._restore(
            [k.idempotency(keys.short_digest(key)), k.agent_hash],
            ["idem", body_hash, str(balance_micros), answer_id, str(extra_micros)])

    async def restore_tool(self, tool: str, price_micros: int, category: str, pricing: str,
                           upstream: str | None, sealed_headers: str | None
                           ) -> RestoreReply | Refused:
        """One catalog entry, at the next catalog version (no event: the ledger has it)."""
        return await self._restore(
            [keys.tool(tool), keys.TOOL_NAMES, keys.TOOLS_VERSION],
            ["tool", tool, str(price_micros), category, pricing, upstream or "",
             sealed_headers or ""])
