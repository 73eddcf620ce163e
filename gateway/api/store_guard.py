"""Authentication behind the store's identity check (gateway/ledger/identity.py).

Every authenticated route passes here, so a store that is not the ledger's (wiped or
replaced) answers 503 ``unavailable`` on all of them, paid calls included, instead of
answering 401 to agents whose keys the store lost or charging balances the ledger does not
describe. A key the store does not know triggers an immediate re-check, which closes the
second between a wipe and the background check noticing it.
"""

from __future__ import annotations

from typing import Any

from gateway.api.auth import Authenticator, Caller
from gateway.ledger.identity import StoreGuard
from gateway.metering.errors import Unauthorized


class GuardedAuthenticator(Authenticator):
    def __init__(self, guard: StoreGuard, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        # Keys looked up in the wiped store were cached as unknown: forget them once the
        # store is recovered, so they work again at once rather than after the cache TTL.
        guard.when_ok_again(self._agents.clear)

    async def caller_from(self, authorization: str | None, *args: Any, **kwargs: Any
                          ) -> Caller:
        self.guard.check()
        try:
            return await super().caller_from(authorization, *args, **kwargs)
        except Unauthorized:
            await self.guard.verify_now()  # raises Unavailable when the store lost the key
            raise
