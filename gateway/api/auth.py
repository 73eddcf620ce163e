"""Bearer authentication: the admin token, agent keys (cached 1 s), failed-auth limits.

The credential is checked first: a valid one is never counted or refused, whatever others
sent from the same address. Only a wrong or missing credential reaches the limiter, which
counts it in Redis (one script, one round trip, shared by every worker and host) per
presented credential, per client address and for everyone together, in fixed windows. Over
a limit the answer is 429 ``rate_limited`` with Retry-After instead of 401.

What the limit is for: telling a misbehaving client to back off, keeping failure floods off
Redis (a refused scope is remembered locally until its window ends), and a metric to alert
on. What keeps keys from being guessed is their size (256 random bits per agent key), since
a valid credential must pass whatever the counters say.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from gateway.config import Settings
from gateway.logs import AGENT
from gateway.metering.engine import Engine
from gateway.metering.errors import Forbidden, RateLimited, Unauthorized
from gateway.observability import AUTH_FAILURES
from gateway.store import agents as stored
from gateway.store import keys
from gateway.store.calls import Refused

log = logging.getLogger("iou.auth")

AGENT_CACHE_TTL_S = 1.0  # a revoked key stops working within this long
AGENT_CACHE_SIZE_MAX = 100_000
BLOCKED_CACHE_SIZE_MAX = 10_000  # only a cache: Redis keeps counting when it is cleared
KEY_USE_WRITE_EVERY_S = 60.0  # "last used" is written at most this often per key and process
KEY_USE_CACHE_SIZE_MAX = 100_000
CLIENT_CHARS_MAX = 64  # an unparsable forwarded address is kept, truncated, as the client
SCOPES = {1: "everyone", 2: "client", 3: "credential"}


@dataclass(frozen=True)
class Caller:
    """Who is calling: the admin, or one agent."""

    agent: str | None

    @property
    def is_admin(self) -> bool:
        return self.agent is None

    @property
    def scope(self) -> str:
        """The namespace of this caller's idempotency keys."""
        return "admin" if self.agent is None else "agent:" + self.agent


ADMIN = Caller(None)


@dataclass(frozen=True)
class FailureLimits:
    """Failed authentications allowed per window (IOU_AUTH_FAILURES_*)."""

    window_s: int = 60
    per_client: int = 20
    per_credential: int = 10
    everyone: int = 1000

    @classmethod
    def of(cls, settings: Settings) -> FailureLimits:
        return cls(settings.auth_failure_window_s, settings.auth_failures_per_client,
                   settings.auth_failures_per_credential, settings.auth_failures_global)


class Authenticator:
    def __init__(self, engine: Engine, admin_token: str, limits: FailureLimits | None = None,
                 trusted_proxies: Sequence[str] = ()) -> None:
        self._engine = engine
        self._admin_token = admin_token.encode()
        self._limits = limits or FailureLimits()
        self._trusted = tuple(ipaddress.ip_network(n) for n in trusted_proxies)
        self._agents: dict[str, tuple[str | None, float]] = {}
        # Limiter scopes ("*", "c:<address>", "k:<digest>") known to be over their limit,
        # with the monotonic time their window ends: no Redis call until then.
        self._blocked: dict[str, float] = {}
        self._key_used_written: dict[str, float] = {}
        self._background: set[asyncio.Task[Any]] = set()

    async def caller(self, request: Request) -> Caller:
        """The authenticated caller; 401 for a missing, unknown or revoked token."""
        peer = request.client.host if request.client else "unknown"
        forwarded = ",".join(request.headers.getlist("x-forwarded-for")) or None
        return await self.caller_from(request.headers.get("authorization"), peer, forwarded)

    async def caller_from(self, authorization: str | None, peer: str,
                          forwarded_for: str | None = None) -> Caller:
        """The caller of an Authorization header value sent by ``peer`` (an address), with
        the X-Forwarded-For value if any (believed only from a trusted proxy)."""
        token = _bearer(authorization or "")
        if token is not None:
            if hmac.compare_digest(token.encode(), self._admin_token):
                return ADMIN
            agent, digest = await self._agent_of(token)
            if agent is not None:
                self._note_key_use(agent, digest)
                AGENT.set(agent)  # log lines of this request name it (own task, own context)
                return Caller(agent)
        await self._failed(token, client_address(peer, forwarded_for, self._trusted))
        raise Unauthorized("A valid bearer token is required.")

    async def agent(self, request: Request) -> str:
        return self.require_agent(await self.caller(request))

    @staticmethod
    def require_agent(caller: Caller) -> str:
        if caller.agent is None:
            raise Forbidden("This route takes an agent key, not the admin token.")
        return caller.agent

    async def admin(self, request: Request) -> Caller:
        caller = await self.caller(request)
        if not caller.is_admin:
            raise Forbidden("This route needs the admin token.")
        return caller

    async def admin_or_agent(self, request: Request, agent: str) -> Caller:
        """The admin, or the agent ``agent`` itself; any other agent is 403."""
        caller = await self.caller(request)
        if not caller.is_admin and caller.agent != agent:
            raise Forbidden("An agent key acts for its own agent only.")
        return caller

    async def _agent_of(self, token: str) -> tuple[str | None, str]:
        digest = keys.api_key_hash(token)
        now = time.monotonic()
        cached = self._agents.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0], digest
        agent = await self._engine.authenticate(token)
        if len(self._agents) >= AGENT_CACHE_SIZE_MAX:
            self._agents.clear()
        self._agents[digest] = (agent, now + AGENT_CACHE_TTL_S)
        return agent, digest

    # ---- failures ---------------------------------------------------------------------

    async def _failed(self, token: str | None, client: str) -> None:
        """Count a failed authentication; raise RateLimited when a limit is passed."""
        credential = None if token is None else keys.short_digest(token)
        scopes = ["*", "c:" + client] + ([] if credential is None else ["k:" + credential])
        now = time.monotonic()
        for scope in scopes:
            until = self._blocked.get(scope)
            if until is not None and until > now:
                AUTH_FAILURES.labels("rate_limited").inc()
                raise RateLimited(math.ceil(until - now))
        over, retry_ms = await self._count(client, credential)
        if over == 0:
            AUTH_FAILURES.labels("unauthorized").inc()
            return
        if len(self._blocked) >= BLOCKED_CACHE_SIZE_MAX:
            self._blocked.clear()
        self._blocked[scopes[over - 1]] = now + retry_ms / 1000
        AUTH_FAILURES.labels("rate_limited").inc()
        log.info("failed authentications over the %s limit", SCOPES[over])
        raise RateLimited(max(1, math.ceil(retry_ms / 1000)))

    async def _count(self, client: str, credential: str | None) -> tuple[int, int]:
        """(scope over its limit or 0, ms until its window ends), from the auth_fail script.

        When Redis cannot count, the failure is still a 401: the limiter never turns a
        wrong credential into a 503, and valid credentials never reach it."""
        limits = self._limits
        try:
            reply = await self._engine.calls.auth_fail(
                client, credential, limits.window_s * 1000,
                (limits.everyone, limits.per_client, limits.per_credential))
        except Exception as exc:  # any store failure: count nothing
            log.warning("failed-auth counter unavailable: %s", type(exc).__name__)
            return 0, 0
        if isinstance(reply, Refused):
            log.warning("failed-auth counter refused its arguments: %s", dict(reply.fields))
            return 0, 0
        return reply.scope, reply.retry_ms

    # ---- last use of agent keys -------------------------------------------------------

    def _note_key_use(self, agent: str, digest: str) -> None:
        """Record when a key was last used, at most once a minute per key and process, off
        the request's path (so a charge never waits for it, and Redis sees one write per
        key per minute per worker, not one per request)."""
        now = time.monotonic()
        written = self._key_used_written.get(digest)
        if written is not None and now - written < KEY_USE_WRITE_EVERY_S:
            return
        if len(self._key_used_written) >= KEY_USE_CACHE_SIZE_MAX:
            self._key_used_written.clear()
        self._key_used_written[digest] = now
        task = asyncio.ensure_future(self._write_key_use(agent, digest))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _write_key_use(self, agent: str, digest: str) -> None:
        try:
            await stored.note_key_use(self._engine.conn, self._engine.partitions, agent, digest,
                                      int(time.time() * 1000))
        except Exception as exc:  # a lost "last used" is not worth a failure
            log.info("could not record a key's last use: %s", type(exc).__name__)


def client_address(peer: str, forwarded_for: str | None,
                   trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    """The client's address: the peer, or, when the peer is a trusted proxy, the rightmost
    X-Forwarded-For hop that is not a trusted proxy (each proxy appends its own peer, so
    the hops left of it are whatever the client chose to send)."""
    if not trusted or not forwarded_for or not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop[:CLIENT_CHARS_MAX]
    return hops[0][:CLIENT_CHARS_MAX] if hops else peer


def _is_trusted(address: str, trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
                ) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def _bearer(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
