"""Bearer authentication: the admin token, agent keys (cached 1 s), failure rate limits."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from starlette.requests import Request

from gateway import keys
from gateway.engine import Engine
from gateway.errors import GatewayError

AGENT_CACHE_TTL_S = 1.0  # a revoked key stops working within this long
AGENT_CACHE_SIZE_MAX = 100_000
FAILURES_MAX = 20
FAILURE_WINDOW_S = 60.0
CLIENTS_TRACKED_MAX = 10_000


class Unauthorized(GatewayError):
    code, status = "unauthorized", 401


class Forbidden(GatewayError):
    code, status = "forbidden", 403


class RateLimited(GatewayError):
    code, status = "rate_limited", 429


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


class Authenticator:
    def __init__(self, engine: Engine, admin_token: str) -> None:
        self._engine = engine
        self._admin_token = admin_token.encode()
        self._agents: dict[str, tuple[str | None, float]] = {}
        self._failures: dict[str, tuple[int, float]] = {}

    async def caller(self, request: Request) -> Caller:
        """The authenticated caller; 401 for a missing, unknown or revoked token."""
        client = request.client.host if request.client else "unknown"
        return await self.caller_from(request.headers.get("authorization"), client)

    async def caller_from(self, authorization: str | None, client: str) -> Caller:
        """The caller of an Authorization header value sent from ``client`` (an address)."""
        self._check_rate(client)
        token = _bearer(authorization or "")
        if token is not None:
            if hmac.compare_digest(token.encode(), self._admin_token):
                return ADMIN
            agent = await self._agent_of(token)
            if agent is not None:
                return Caller(agent)
        self._record_failure(client)
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

    async def _agent_of(self, token: str) -> str | None:
        digest = keys.api_key_hash(token)
        now = time.monotonic()
        cached = self._agents.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        agent = await self._engine.authenticate(token)
        if len(self._agents) >= AGENT_CACHE_SIZE_MAX:
            self._agents.clear()
        self._agents[digest] = (agent, now + AGENT_CACHE_TTL_S)
        return agent

    def _check_rate(self, client: str) -> None:
        entry = self._failures.get(client)
        if entry is not None and entry[0] >= FAILURES_MAX and entry[1] > time.monotonic():
            raise RateLimited("Too many failed authentications; try again in a minute.")

    def _record_failure(self, client: str) -> None:
        now = time.monotonic()
        count, until = self._failures.get(client, (0, 0.0))
        if until <= now:
            count, until = 0, now + FAILURE_WINDOW_S
        if len(self._failures) >= CLIENTS_TRACKED_MAX:
            self._failures.clear()
        self._failures[client] = (count + 1, until)


def _bearer(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
