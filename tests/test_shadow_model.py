"""Model-based proof of shadow limits, on the real scripts (seeded random sequences).

Three agents receive the same random operations (charges and holds on tools of several
categories, captures and releases, the clock moving by seconds to hours):
  - "sh" has random shadow limits and nothing enforced,
  - "no" has no limits at all,
  - "en" has the same random limits enforced.
Claims:
  1. every answer of "sh" equals that of "no" (but for ids and the shadow name), and so do
     their balances and daily windows: shadow limits never change an answer;
  2. until "en" first refuses, its refusals and the shadow marks of "sh" are the same calls
     with the same limit names (both agents are in the same state until then), and at that
     first refusal the shadow mark names the same limit;
  3. afterwards every call "en" refuses is marked on "sh" (the counters of "sh", which also
     count what "en" refused, are never below those of "en"); with only per-call limits
     (no state) the marks equal the refusals exactly, by limit;
  4. the sums the scripts keep (sn:/sa:) equal the marks of the replies and of the events.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from typing import Any

import pytest

from tests.script_helpers import Lua
from tests.test_script_shadow import refused_limit, shadowed

AGENTS = ("sh", "no", "en")
CATS = ("tool", "llm", "web")
TOOLS = ("v_tool", "v_llm", "v_web", "fx_tool", "free")
LIMIT_CODES = {13, 14, 15, 16, 31, 32, 33, 44}
STATELESS = {"pc", "c:tool:pc", "c:llm:pc", "c:web:pc", "t:v_tool:pc", "t:v_llm:pc", "rt"}
GRANT = 10**12  # the balance never refuses: only limits do
SEEDS = range(24)
OPS = 120


def random_limits(rng: random.Random) -> tuple[str, ...]:
    amount_fields = ["pc", "dl", "hr", "wk", "mo", "c:tool:pc", "c:llm:pc", "c:web:pc",
                     "c:llm:dl", "c:tool:hr", "c:web:wk", "c:llm:mo", "t:v_tool:pc",
                     "t:v_llm:pc"]
    count_fields = ["nm", "nh", "nd", "c:tool:nd", "c:llm:nh", "t:v_web:nm", "t:free:nd"]
    pairs: list[str] = []
    for f in rng.sample(amount_fields, rng.randint(1, 4)):
        pairs += [f, str(rng.randint(1, 40) * 25_000 * (8 if f in ("dl", "wk", "mo") else 1))]
    for f in rng.sample(count_fields, rng.randint(0, 2)):
        pairs += [f, str(rng.randint(2, 12))]
    if rng.random() < 0.1:
        pairs += ["rt", "1"]
    return tuple(pairs)


def stateless_limits(rng: random.Random) -> tuple[str, ...]:
    pairs: list[str] = []
    for f in rng.sample(sorted(STATELESS - {"rt"}), rng.randint(1, 3)):
        pairs += [f, str(rng.randint(1, 12) * 25_000)]
    return tuple(pairs)


class Model:
    def __init__(self, lua: Lua, rng: random.Random, limits: tuple[str, ...]) -> None:
        self.lua, self.rng = lua, rng
        lua.shift_to(int(dt.datetime(2026, 11, 30, 23, 10, tzinfo=dt.UTC).timestamp() * 1000))
        for agent in AGENTS:
            lua.create(agent, grant=GRANT)
        lua.set_limits(*shadowed(*limits), agent="sh")
        lua.set_limits(*limits, agent="en")
        self.holds: dict[str, list[str]] = {a: [] for a in AGENTS}
        self.n = 0
        self.marks: list[str | None] = []  # "sh"'s shadow name of each charge and hold
        self.refusals: list[str | None] = []  # "en"'s refused limit of the same calls

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.08:
            self.lua.shift_to(self.lua.now_ms() + self.rng.choice(
                (1_000, 30_000, 61_000, 600_000, 3_600_000, 86_400_000)))
        elif roll < 0.6:
            self._call("charge")
        elif roll < 0.8:
            self._call("hold")
        else:
            self._close()

    def _call(self, kind: str) -> None:
        tool = self.rng.choice(TOOLS)
        low = 0 if kind == "charge" else 1  # a hold holds something
        cost = None if tool in ("fx_tool", "free") else self.rng.randint(low, 12) * 25_000
        if kind == "hold" and tool == "free":
            tool, cost = "v_llm", 50_000
        self.n += 1
        hold_id = f"h{self.n}"
        replies = {}
        for agent in AGENTS:
            if kind == "charge":
                replies[agent] = self.lua.charge(cost, agent=agent, tool=tool)
            else:
                replies[agent] = self.lua.hold(cost, hold_id=f"{hold_id}{agent}", agent=agent,
                                               tool=tool)
            if replies[agent][0] == 0 and kind == "hold":
                self.holds[agent].append(hold_id)
        sh, no, en = replies["sh"], replies["no"], replies["en"]
        assert same_answer(sh, no, kind), (kind, tool, cost, sh, no)
        assert sh[0] == 0, sh  # nothing is enforced on "sh": it always pays
        self.marks.append(sh[-1] or None)
        self.refusals.append(refused_limit(en) if en[0] in LIMIT_CODES else None)
        assert en[0] in LIMIT_CODES or en[0] == 0, en

    def _close(self) -> None:
        if not self.holds["sh"]:
            return
        hold_id = self.rng.choice(self.holds["sh"])
        capture = self.rng.random() < 0.6
        amount = int(self.lua.hash(self.lua.k("sh").hold(f"{hold_id}sh"))["amount"])
        cost = self.rng.randint(0, amount)
        replies = {}
        for agent in AGENTS:
            if hold_id not in self.holds[agent]:
                continue
            self.holds[agent].remove(hold_id)
            hid = f"{hold_id}{agent}"
            replies[agent] = (self.lua.capture(cost, hold_id=hid, agent=agent) if capture
                              else self.lua.release(hold_id=hid, agent=agent))
        assert strip_ids(replies["sh"]) == strip_ids(replies["no"])

    def check(self, stateless: bool) -> None:
        lua = self.lua
        assert lua.bal("sh") == lua.bal("no")
        assert lua.window("sh") == lua.window("no")
        first = next((i for i, r in enumerate(self.refusals) if r), len(self.refusals))
        assert self.marks[:first] == [None] * first  # claim 2: the same calls
        if first < len(self.refusals):
            assert self.marks[first] == self.refusals[first]
        for mark, refused in zip(self.marks, self.refusals, strict=True):
            assert refused is None or mark is not None  # claim 3
        if stateless:
            assert self.marks == self.refusals
        counted = Counter(m for m in self.marks if m)
        a = lua.agent("sh")
        sums = {f[3:]: int(v) for f, v in a.items() if f.startswith("sn:")}
        assert sums == dict(counted)  # claim 4
        events = [e.get("shadow") for e in lua.events(lua.k("sh").events)
                  if e.get("agent") == "sh" and e["kind"] in ("charge", "hold")]
        assert events == self.marks


def strip_ids(reply: list[Any] | None) -> list[Any] | None:
    """A capture or release reply without its entry id (index 3)."""
    return None if reply is None else [v for i, v in enumerate(reply) if i != 3]


def same_answer(sh: list[Any], no: list[Any], kind: str) -> bool:
    """Equal but for ids (index 3), a hold's expiry time (index 4: the clock runs between
    the two calls) and the shadow name that only "sh" may carry."""
    if sh[0] != 0 or no[0] != 0:
        return sh == no
    skip = {3} if kind == "charge" else {3, 4}
    return no[-1] == "" and [v for i, v in enumerate(sh[:-1]) if i not in skip] == [
        v for i, v in enumerate(no[:-1]) if i not in skip]


@pytest.mark.parametrize("seed", SEEDS)
def test_random_shadow_limits_change_no_answer(clocked_lua: Lua, seed: int) -> None:
    rng = random.Random(seed)
    stateless = seed % 4 == 0
    model = Model(clocked_lua, rng, stateless_limits(rng) if stateless else random_limits(rng))
    for _ in range(OPS):
        model.step()
    model.check(stateless)
    assert any(model.marks) or not any(model.refusals)
