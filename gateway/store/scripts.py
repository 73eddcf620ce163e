"""The Lua scripts: found inside the package, preloaded at start, run by EVALSHA or FCALL.

Each script is ``_lib.lua`` followed by the script's own file, so the helpers and the
return-code table exist once. A NOSCRIPT reply (Redis restarted, SCRIPT FLUSH) is
recovered by loading the script again and retrying, never by failing the call.

The scripts of FUNCTION_SCRIPTS (the charge, the call agents make most, and the hold,
capture and release of a priced call) also run as a Redis Function where the server has
them (Redis 7, Valkey): a library whose top level is ``_lib.lua`` and whose one function is
the script's own file. EVALSHA runs the whole source on every call, so every call builds
again the library's closures and tables; a library runs its top level once, at FUNCTION
LOAD (measured: a quarter of the charge script's Redis CPU). A missing function (FUNCTION
FLUSH, a server without the library) is recovered as NOSCRIPT is: EVAL of the whole source,
then the library loaded again.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.store.connections import Connection
from gateway.store.errors import StoreUnavailable
from gateway.store.resp import RedisRefused, ReplyError, refusal_kind, reply_text

SCRIPT_NAMES = (
    "charge", "hold", "capture", "release", "expire_holds", "fund", "create_agent",
    "set_limits", "freeze", "key_add", "key_revoke", "tool_set", "tool_delete", "auth_fail",
    "tool_copy", "agent_scan", "restore", "task_open", "task_close", "refund", "debit",
    "child_create", "reclaim",
)
# Run as Redis Functions (FCALL) where the server has them; the others by EVALSHA.
FUNCTION_SCRIPTS = ("charge", "hold", "capture", "release")
# A server without FUNCTION (Redis 6) answers one of these to FUNCTION LOAD.
_NO_FUNCTIONS = ("ERR unknown command", "ERR unknown subcommand")
# One line of a header's Returns: "--   code NAME = N: {N, field, field (note), ...} ...".
_SHAPE_RE = re.compile(r"^--\s+code (\w+) = (\d+): \{\d+((?:, [^,}]+)*)\}", re.M)
# FCALL of a function no library defines: "Function not found" where the user may run
# FCALL, NOPERM where its ACL denies it (nothing runs either way).
_FCALL_PROBE = "iou_fcall_probe"

log = logging.getLogger(__name__)


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
    # Where the script's own file starts in ``source`` (before it: ``_lib.lua``).
    body_at: int = 0

    @functools.cached_property
    def function(self) -> str:
        """The name of the script as a Redis Function (and of its library): one per library
        text (the source and the wrapper around it), so gateways of two versions (or a test
        clock) on one server never replace, nor take for their own, each other's."""
        digest = hashlib.sha1(self._library_named("").encode()).hexdigest()
        return f"iou_{self.name}_{digest[:16]}"

    @property
    def library(self) -> str:
        """The script as a Redis Function library: ``_lib.lua`` at its top level (run once,
        at FUNCTION LOAD) and the script's own file as the body of its one function, which
        takes KEYS and ARGV as EVAL gives them."""
        return self._library_named(self.function)

    def _library_named(self, function: str) -> str:
        return (f"#!lua name={function}\n{self.source[:self.body_at]}\n"
                f"redis.register_function('{function}', function(KEYS, ARGV)\n"
                f"{self.source[self.body_at:]}\nend)\n")


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
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest(), reply_shapes(own),
                  len(lib) + 1)


class Scripts:
    """All scripts of the gateway, bound to one connection."""

    def __init__(self, conn: Connection, test_clock_key: str | None = None,
                 replay_clock_key: str | None = None) -> None:
        self._conn = conn
        self.by_name = {name: load_script(name, test_clock_key, replay_clock_key)
                        for name in SCRIPT_NAMES}
        self.reloads = 0
        # The scripts that run by FCALL: set by preload when the server took their library.
        self.functions: set[str] = set()
        self._function_load: asyncio.Future[None] | None = None

    async def preload(self) -> None:
        """SCRIPT LOAD every script, so that a broken script fails at start; then FUNCTION
        LOAD the libraries of FUNCTION_SCRIPTS where the server has functions."""
        for script in self.by_name.values():
            sha = await self._conn.call(b"SCRIPT", b"LOAD", script.source)
            if isinstance(sha, ReplyError):
                raise _script_error(script.name, sha)
            if reply_text(sha) != script.sha:
                raise ScriptError(f"{script.name}.lua: Redis computed another SHA1")
        await self._load_functions()

    async def _load_functions(self) -> None:
        try:
            await self._load_libraries()
            if self.functions:
                await self._conn.call(b"FCALL", _FCALL_PROBE, 0)
        except RedisRefused as refused:
            if refused.kind != "NOPERM":
                raise
            # A user whose ACL allows EVALSHA but not FUNCTION or FCALL: the same scripts
            # run by EVALSHA, rather than a gateway that cannot start or refuses every call.
            self.functions.clear()
            log.warning("this Redis user may not run FUNCTION LOAD or FCALL: charge, hold, "
                        "capture and release run by EVALSHA (grant +function +fcall to run "
                        "them as Redis Functions)")

    async def _load_libraries(self) -> None:
        for name in FUNCTION_SCRIPTS:
            script = self.by_name[name]
            reply = await self._conn.call(b"FUNCTION", b"LOAD", script.library)
            if not isinstance(reply, ReplyError) or "already exists" in str(reply):
                self.functions.add(name)
            elif str(reply).startswith(_NO_FUNCTIONS):
                self.functions.discard(name)  # an older server: EVALSHA
            else:  # the connection raised Redis's refusals itself (RedisRefused)
                raise ScriptError(f"{name}.lua as a function: {reply}")

    async def _reload_functions(self) -> None:
        """FUNCTION LOAD again after a call found its function missing: once at a time, for
        every call that found it missing meanwhile."""
        if self._function_load is None or self._function_load.done():
            self._function_load = asyncio.ensure_future(self._load_functions())
        try:
            await asyncio.shield(self._function_load)
        except ScriptError:
            self.functions.clear()  # the call itself was answered: fall back to EVALSHA
        except StoreUnavailable:
            pass  # the call was answered; the next one finds the function missing again

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
        if name in self.functions:
            return await self._fcall(script, keys, args)
        reply = await self._conn.call(b"EVALSHA", script.sha, len(keys), *keys, *args)
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            self.reloads += 1
            reply = await self._conn.call(b"EVAL", script.source, len(keys), *keys, *args)
        if isinstance(reply, ReplyError):
            raise _script_error(name, reply)
        assert isinstance(reply, list)
        return reply


    async def _fcall(self, script: Script, keys: Sequence[str], args: Sequence[str | bytes]
                     ) -> list[Any]:
        """FCALL the script's function; when the server does not have it (it did not run),
        EVAL the whole source, as for NOSCRIPT, and load the library again."""
        reply = await self._conn.call(b"FCALL", script.function, len(keys), *keys, *args)
        # Missing, or no FCALL at all (the server was replaced by one without functions):
        # it did not run either way, and the reload finds which.
        if isinstance(reply, ReplyError) and str(reply).startswith(
                (_FUNCTION_MISSING, *_NO_FUNCTIONS)):
            self.reloads += 1
            reply = await self._conn.call(b"EVAL", script.source, len(keys), *keys, *args)
            await self._reload_functions()
        if isinstance(reply, ReplyError):
            raise _script_error(script.name, reply)
        assert isinstance(reply, list)
        return reply


_FUNCTION_MISSING = "ERR Function not found"


def _script_error(name: str, reply: ReplyError) -> Exception:
    """Redis's state (out of memory, loading, a replica, ...) is a 503 that passes when it
    does; anything else is the script's fault. The connection raises refusals itself; this
    is for a connection that returned one as a reply."""
    kind = refusal_kind(reply)
    return RedisRefused(kind) if kind is not None else ScriptError(f"{name}.lua failed: {reply}")
