"""The walls hash as lua/_lib.lua lays it out: one record per scope ('@', '@:<category>',
'@/<tool>') and the earlier minutes of the rolling hour ('H<minute>', 'H<minute>:<category>')."""

from __future__ import annotations

from tests.script_helpers import Lua

RECORD = ("T", "N", "O", "D", "H", "R", "h", "W", "w", "M", "m")


def parse_records(fields: dict[str, str]) -> dict[str, dict[str, int]]:
    """The records of a walls hash by scope ('' the agent's, ':<category>', '/<tool>')."""
    return {f[1:]: dict(zip(RECORD, (int(n) for n in v.split(" ")), strict=False))
            for f, v in fields.items() if f.startswith("@")}


def records(lua: Lua) -> dict[str, dict[str, int]]:
    return parse_records(lua.hash(lua.k().walls))


def minutes(lua: Lua) -> dict[str, int]:
    """The walls hash's fields of earlier minutes of the rolling hour."""
    return {f: int(v) for f, v in lua.hash(lua.k().walls).items() if f.startswith("H")}
