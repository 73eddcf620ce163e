"""The Lua scripts: found inside the package, preloaded at start, run by EVALSHA.

Each script is ``_lib.lua`` followed by the script's own file, so the helpers and the
return-code table exist once. A NOSCRIPT reply (Redis restarted, SCRIPT FLUSH) is
recovered by loading the script again and retrying, never by failing the call.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.store.connections import Connection
from gateway.store.resp import RedisRefused, ReplyError, refusal_kind

SCRIPT_NAMES = (
    "charge", "hold", "capture", "release", "expire_holds", "fund", "create_agent",
    "set_limits", "freeze", "key_add", "key_revoke", "tool_set", "tool_delete", "auth_fail",
    "tool_copy", "agent_scan", "restore", "task_open", "task_close", "refund", "debit",
    "child_create", "reclaim",
)
# One line of a header's Returns: "--   code NAME = N: {N, field, field (note), ...} ...".
_SHAPE_RE = re.compile(r"^--\s+code (\w+) = (\d+): \{\d+((?:, [^,}]+)*)\}", re.M)


def lua_dir() -> Path:
    """The folder of the Lua files. The repository keeps them at the top-level ``lua/``; the
    wheel ships that folder inside the package as ``gateway/lua`` (pyproject's package-dir),
    so an installed gateway finds them beside its modules and a checkout (or an editable
    install) finds them at the repository's root."""
    package = Path(__file__).resolve().parents[1]
    for folder in (package / "lua", package.parent / "lua"):
        if (folder / "_lib.lua").is_file():
            return folder
    raise ScriptError(f"the Lua scripts are missing (looked in {package}/lua and "
                      f"{package.parent}/lua)")


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str
    # The reply's field names after the code, per return code, as the header lists them.
    shapes: dict[int, tuple[str, ...]]


def reply_shapes(header: str) -> dict[int, tuple[str, ...]]:
    """Field names of each reply a script's header lists: ``{13, max, cost, category}``
    gives ``{13: ("max", "cost", "category")}`` (a note in parentheses is dropped)."""
    return {int(m[2]): tuple(part.split()[0] for part in m[3].split(", ")[1:])
            for m in _SHAPE_RE.finditer(header)}


class ScriptError(RuntimeError):
    """Redis failed a script for a reason other than NOSCRIPT or a refusal of its state
    (OOM, LOADING, ...: those are ``RedisRefused``, a 503): a bug, not a refusal."""


CLOCK_LINE = "  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) -- clock\n"


def _test_clock_line(key: str) -> str:
    # Reads a key outside KEYS[]: fine on the single test Redis, never used in production.
    return (f"  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)"
            f" + tonumber(redis.call('GET', '{key}') or '0') -- clock\n")


def _replay_clock_line(key: str) -> str:
    # `iou replay` only, on its scratch server: the clock is the absolute ms stored at the
    # key, set just before each call to the time the ledger recorded for it.
    return f"  return tonumber(redis.call('GET', '{key}')) -- clock\n"


def load_script(name: str, test_clock_key: str | None = None,
                replay_clock_key: str | None = None) -> Script:
    """The script's source (``_lib.lua`` first); with ``test_clock_key`` its clock adds the
    offset in ms stored at that key (tests only); with ``replay_clock_key`` its clock is the
    absolute ms stored at that key (``iou replay``'s scratch server only)."""
    folder = lua_dir()
    lib = (folder / "_lib.lua").read_text()
    clock = (_test_clock_line(test_clock_key) if test_clock_key is not None
             else _replay_clock_line(replay_clock_key) if replay_clock_key is not None
             else None)
    if clock is not None:
        if lib.count(CLOCK_LINE) != 1:
            raise ScriptError("_lib.lua: the clock line moved; update scripts.CLOCK_LINE")
        lib = lib.replace(CLOCK_LINE, clock)
    own = (folder / f"{name}.lua").read_text()
    source = lib + "\n" + own
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest(), reply_shapes(own))


class Scripts:
    """All scripts of the gateway, bound to one connection."""

    def __init__(self, conn: Connection, test_clock_key: str | None = None,
                 replay_clock_key: str | None = None) -> None:
        self._conn = conn
        self.by_name = {name: load_script(name, test_clock_key, replay_clock_key)
                        for name in SCRIPT_NAMES}
        self.reloads = 0

    async def preload(self) -> None:
        """SCRIPT LOAD every script, so that a broken script fails at start."""
        for script in self.by_name.values():
            sha = await self._conn.call(b"SCRIPT", b"LOAD", script.source)
            if isinstance(sha, ReplyError):
                raise _script_error(script.name, sha)
            if sha.decode() != script.sha:
                raise ScriptError(f"{script.name}.lua: Redis computed another SHA1")

    async def loaded(self) -> bool:
        shas = [s.sha for s in self.by_name.values()]
        flags = await self._conn.call_or_raise(b"SCRIPT", b"EXISTS", *shas)
        return all(flags)

    async def run(self, name: str, keys: Sequence[str], args: Sequence[str | bytes]
                  ) -> list[Any]:
        """EVALSHA the script; on NOSCRIPT (it did not run) send it whole with EVAL.

        EVAL both runs and caches the script, so a SCRIPT FLUSH racing with a reload
        cannot fail the call, and the call still runs exactly once.
        """
        script = self.by_name[name]
        reply = await self._conn.call(b"EVALSHA", script.sha, len(keys), *keys, *args)
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            self.reloads += 1
            reply = await self._conn.call(b"EVAL", script.source, len(keys), *keys, *args)
        if isinstance(reply, ReplyError):
            raise _script_error(name, reply)
        assert isinstance(reply, list)
        return reply


def _script_error(name: str, reply: ReplyError) -> Exception:
    """Redis's state (out of memory, loading, a replica, ...) is a 503 that passes when it
    does; anything else is the script's fault. The connection raises refusals itself; this
    is for a connection that returned one as a reply."""
    kind = refusal_kind(reply)
    return RedisRefused(kind) if kind is not None else ScriptError(f"{name}.lua failed: {reply}")
