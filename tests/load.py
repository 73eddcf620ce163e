"""A bounded background load for fault tests: charges from this process, all to loopback."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from gateway.metering import errors
from gateway.metering.engine import Engine

T = 1_000_000


@dataclass
class Load:
    engine: Engine
    agents: list[str]
    rate_per_s: int = 2000
    accepted: list[str] = field(default_factory=list)  # charge ids the client got back
    refused: int = 0
    failed: int = 0  # Redis unreachable: outcome unknown to the client
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, seconds_max: float) -> None:
        """Charge in waves until stop() or seconds_max (bounded either way)."""
        rng = random.Random(11)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds_max
        wave = max(self.rate_per_s // 20, 1)
        while not self._stop.is_set() and loop.time() < deadline:
            started = loop.time()
            names = [rng.choice(self.agents) for _ in range(wave)]
            await asyncio.gather(*(self._one(n) for n in names))
            await asyncio.sleep(max(0.05 - (loop.time() - started), 0))

    async def _one(self, agent: str) -> None:
        try:
            self.accepted.append((await self.engine.charge(agent, "web_search")).charge_id)
        except errors.BalanceInsufficient:
            self.refused += 1
        except errors.Unavailable:
            self.failed += 1

    def stop(self) -> None:
        self._stop.set()


async def make_agents(engine: Engine, count: int, grant: int = 1000 * T) -> list[str]:
    await engine.set_tool("web_search", 50_000, "tool")
    names = [f"load-{i}" for i in range(count)]
    await asyncio.gather(*(engine.create_agent(n, grant_micros=grant) for n in names))
    return names
