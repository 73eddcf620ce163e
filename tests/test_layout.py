"""Lua headers agree with codes.py; every key an operation touches is in one cluster slot."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from redis.crc import key_slot

from gateway.metering.engine import Engine
from gateway.store.codes import Code, Flag
from gateway.store.scripts import SCRIPT_NAMES, lua_dir
from tests.helpers import T, setup_catalog


def test_lib_table_matches_codes() -> None:
    lib = (lua_dir() / "_lib.lua").read_text()
    table = re.search(r"local C = \{(.*?)\n\}", lib, re.S)
    assert table is not None
    pairs = dict(re.findall(r"([A-Z_]+) = (\d+)", table.group(1)))
    assert {k: int(v) for k, v in pairs.items()} == {c.name: c.value for c in Code}
    flags = re.search(r"local F = \{(.*?)\}", lib)
    assert flags is not None
    found = {k: int(v) for k, v in re.findall(r"([A-Z_]+) = (\d+)", flags.group(1))}
    assert found == {f.name: f.value for f in Flag}


def test_every_header_lists_exactly_the_codes_its_script_returns() -> None:
    for name in SCRIPT_NAMES:
        text = (lua_dir() / f"{name}.lua").read_text()
        header = {m: int(v) for m, v in re.findall(r"^--\s+code (\w+) = (\d+)", text, re.M)}
        for code_name, value in header.items():
            assert Code[code_name].value == value, f"{name}.lua: {code_name}"
        returned = set(re.findall(r"return \{ C\.(\w+)", text))
        assert returned <= set(header), f"{name}.lua returns {returned - set(header)} unlisted"
        for i in set(re.findall(r"KEYS\[(\d+)\]", text)):
            assert re.search(rf"^-- KEYS\[{i}\] ", text, re.M), f"{name}.lua KEYS[{i}]"
        exact = {int(i) for i in re.findall(r"^-- ARGV\[(\d+)\] ", text, re.M)}
        open_from = [int(i) for i in re.findall(r"^-- ARGV\[(\d+)\.\.", text, re.M)]
        for i in {int(i) for i in re.findall(r"ARGV\[(\d+)\]", text)}:
            documented = i in exact or any(i >= start for start in open_from)
            assert documented, f"{name}.lua ARGV[{i}] undocumented"


async def test_every_operation_touches_one_slot(real_engine: Engine) -> None:
    engine = real_engine
    seen: list[tuple[str, list[str]]] = []
    original = engine.scripts.run

    async def recording(name: str, keys: Sequence[str], args: Sequence[str | bytes]
                        ) -> list[Any]:
        seen.append((name, list(keys)))
        return await original(name, keys, args)

    engine.scripts.run = recording  # type: ignore[method-assign]
    await setup_catalog(engine)
    for i in range(40):
        agent = f"agent-{i}"
        await engine.create_agent(agent, grant_micros=T)
        await engine.charge(agent, "web_search", idempotency_key=f"k{i}")
        hold = await engine.hold(agent, "llm_summarize", 100_000, idempotency_key=f"h{i}")
        await engine.capture(agent, hold.hold_id, 50_000, idempotency_key=f"c{i}")
        other = await engine.hold(agent, "llm_summarize", 100_000)
        await engine.release(agent, other.hold_id)
        await engine.fund(agent, T, idempotency_key=f"f{i}")
        await engine.set_limits(agent, {"daily": T})
        await engine.freeze(agent, True)
        key_id, _ = await engine.add_key(agent)
        await engine.revoke_key(agent, key_id)
    await engine.expire_holds()
    assert {name for name, _ in seen} >= {"charge", "hold", "capture", "release", "fund",
                                          "set_limits", "freeze", "create_agent", "key_add",
                                          "key_revoke", "tool_set", "expire_holds"}
    for name, keys in seen:
        assert len({key_slot(k.encode()) for k in keys}) == 1, (name, keys)
