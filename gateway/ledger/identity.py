"""The store's identity: is this Redis the one the ledger describes?

A random id is written when a store is created, into the Redis meta hash (field
``store_id``) and into the ledger (table ``store_identity``, one row, never changed). A
Redis without it while the ledger has one was wiped (an AOF deleted, a new empty server); a
Redis with another one was replaced (another deployment's store). Serving either would
answer 401 to every agent and grow balances the ledger does not describe, so both are "not
ready" and paid calls get 503 until ``iou recover`` rebuilds Redis and writes the ledger's id
back. A brand-new pair (both empty) gets a new id in both; a Redis that has one next to a
ledger that has none (a new ledger, or one from before identities) lends it to the ledger.

Each gateway worker checks once at start and then every second in the background (one HGET:
the ledger's id never changes once written, so it is read until known, then cached); the
hot path only reads the verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from gateway.ledger.store import LedgerStore, StoreUnavailable
from gateway.metering.engine import Engine
from gateway.metering.errors import Unavailable, maps_store_errors
from gateway.store import meta

log = logging.getLogger("iou.identity")

CHECK_EVERY_S = 1.0


class StoreState(enum.Enum):
    OK = "ok"
    WIPED = "wiped"  # Redis has no identity while the ledger has one
    REPLACED = "replaced"  # Redis has another identity
    UNVERIFIED = "unverified"  # Redis has no identity and the ledger cannot be read


REASONS = {
    StoreState.WIPED: "the Redis store is empty but the ledger describes one (it was wiped "
                      "or replaced by an empty server); run `iou recover`",
    StoreState.REPLACED: "the Redis store is not the one the ledger describes (another "
                         "identity); point IOU_REDIS_URL at the right one, or rebuild it with "
                         "`iou recover --force`",
    StoreState.UNVERIFIED: "the Redis store has no identity and the ledger cannot be reached "
                           "to tell a new store from a wiped one",
}


@dataclass(frozen=True)
class Verdict:
    state: StoreState
    ledger_id: str | None  # None while the ledger's id is unknown (unreachable or absent)


def new_identity() -> str:
    return uuid.uuid4().hex


@maps_store_errors
async def redis_identity(engine: Engine) -> str | None:
    return await meta.identity(engine.conn)


def compare(redis_id: str | None, ledger_id: str) -> StoreState:
    if redis_id is None:
        return StoreState.WIPED
    return StoreState.OK if redis_id == ledger_id else StoreState.REPLACED


async def settle(engine: Engine, store: LedgerStore) -> Verdict:
    """Compare the two identities, creating or lending one where the pair allows it.

    Safe when several workers settle at once: Redis keeps the first id (HSETNX) and the
    ledger the first claim, and every caller compares what was kept."""
    redis_id = await redis_identity(engine)
    try:
        ledger_id = await store.identity()
        if ledger_id is None:
            ledger_id = await _initialise(engine, store, redis_id)
    except StoreUnavailable as exc:
        log.warning("cannot check the store's identity against the ledger yet: %s", exc)
        return Verdict(StoreState.OK if redis_id else StoreState.UNVERIFIED, None)
    if ledger_id is None:
        return Verdict(StoreState.WIPED, None)
    return Verdict(compare(await redis_identity(engine), ledger_id), ledger_id)


@maps_store_errors
async def _initialise(engine: Engine, store: LedgerStore, redis_id: str | None) -> str | None:
    """The ledger has no identity yet: lend it Redis's, or give both a new one. None when
    the ledger knows agents that an identity-less, agent-less Redis lacks (wiped before
    identities existed)."""
    if redis_id is None:
        if await store.count("agents") > 0 and not await engine.agent_names(1):
            return None
        await meta.offer_identity(engine.conn, new_identity())
        redis_id = await redis_identity(engine)
        assert redis_id is not None
    return await store.claim_identity(redis_id)


@maps_store_errors
async def restore(engine: Engine, store: LedgerStore) -> str:
    """After a recover: write the ledger's identity into Redis (creating it if the ledger
    had none); returns it."""
    ledger_id = await store.identity() or await store.claim_identity(new_identity())
    await meta.set_identity(engine.conn, ledger_id)
    return ledger_id


class StoreGuard:
    """The current verdict for one process, refreshed every second in the background."""

    def __init__(self, engine: Engine, store: LedgerStore) -> None:
        self._engine = engine
        self._store = store
        self._ledger_id: str | None = None
        self.state = StoreState.UNVERIFIED
        self._checked_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._on_ok: list[Callable[[], None]] = []
        self._first = True  # the first verdict (at start) is not news

    def when_ok_again(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` each time the store becomes the ledger's again (after a
        recover), e.g. to forget what was looked up in the wiped store."""
        self._on_ok.append(callback)

    @property
    def ok(self) -> bool:
        return self.state is StoreState.OK

    @property
    def reason(self) -> str:
        return "ok" if self.ok else f"{self.state.value}: {REASONS[self.state]}"

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def check(self) -> None:
        """Raise Unavailable (503) unless the store is the ledger's (no I/O)."""
        if self.state is StoreState.UNVERIFIED:
            raise Unavailable("The ledger cannot be reached to vouch for the store; calls "
                              "resume once it can.")
        if self.state is not StoreState.OK:
            raise Unavailable("The store is not the one the ledger describes (wiped or "
                              "replaced); paid calls resume once it is recovered.")

    async def verify_now(self) -> None:
        """Re-check now, then check(). For a failed authentication: an unknown key may mean
        a store wiped since the last check. (One HGET, as cheap as counting the failure;
        floods of wrong keys are turned into 429s by the failed-auth limits first.)"""
        await self.refresh()
        self.check()

    async def passable(self, max_age_s: float = CHECK_EVERY_S) -> bool:
        """For loops without a background task (the writer): refresh when older than
        ``max_age_s``, then say whether the store is the ledger's."""
        if time.monotonic() - self._checked_at >= max_age_s:
            await self.refresh()
        return self.ok

    async def refresh(self) -> None:
        self._checked_at = time.monotonic()
        try:
            if self._ledger_id is None:
                verdict = await settle(self._engine, self._store)
                self._ledger_id = verdict.ledger_id
                state = verdict.state
            else:
                state = compare(await redis_identity(self._engine), self._ledger_id)
        except Exception as exc:  # Redis down or loading: its own 503s say so
            log.debug("store identity check failed: %s", exc)
            return
        self._set(state)

    def _set(self, state: StoreState) -> None:
        first, self._first = self._first, False
        if state is self.state and not first:
            return
        self.state = state
        if state is StoreState.OK:
            if not first:
                log.warning("the store is the ledger's again: serving")
            for callback in self._on_ok:
                callback()
        else:
            log.error("store not ready: %s", REASONS[state])

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            await self.refresh()
