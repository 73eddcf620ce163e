"""Mutation testing of the Lua scripts: plant one-line money bugs, see whether the tests notice.

Usage (from the repository root):

    python scripts/mutate_lua.py                       # every mutant, 1 job
    python scripts/mutate_lua.py --sample 60 --seed 7 --jobs 2
    python scripts/mutate_lua.py --list                # print the mutants, run nothing

Each mutant changes one token (or one ``if`` condition, or removes one writing
``redis.call``) of one script in the Lua folder (``--lua-dir``, default lua/). It is
applied to a private COPY of the repository (one per job, in a temporary directory), never
to the working tree: the copy's tests import the copy's ``gateway`` package, whose loader
reads the copy's Lua files. A mutant that Redis refuses to compile (SCRIPT LOAD into a
redis-server of our own) is discarded as unloadable. The others run the money tests
(``MONEY_TESTS``, fast script-level files first) with ``-x`` and a per-mutant timeout:

- killed: a test failed (or errored) on the mutant;
- survived: every money test passed: a missing test, unless the mutant is equivalent;
- equivalent: listed in ``tests/mutants_equivalent.txt`` with a one-line reason (not run);
- timeout: the run took longer than ``--timeout`` (counted as killed, listed apart).

A mutant is named robustly by ``<file> | <code of its line> | <mutation> #<n>``: the line's
code (comments cut, spaces collapsed), not its number, so edits elsewhere keep the names;
``#n`` counts identical (line, mutation) pairs in the same file.

Exit status: 0 when no mutant survived outside the equivalents list, 1 otherwise, 2 when
the unmutated tree fails its own money tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LUA_DIR_DEFAULT = "lua"
EQUIVALENTS_DEFAULT = "tests/mutants_equivalent.txt"
TIMEOUT_S_DEFAULT = 120.0
# The unmutated tree's run is every money test (no -x stop): on a loaded machine it can take
# longer than a mutant may; it is timed apart so a slow machine is not a failing tree.
BASELINE_TIMEOUT_S = 600.0

# The money tests, in the order they run: fast script- and engine-level files first (most
# mutants die in the first second), the model-based test last. Only the real-Redis
# parameter runs (fakeredis parity is the fast suite's job, and the mutant is the same Lua),
# and no test that starts a gateway process (test_http_*: seconds each, and the same Lua).
MONEY_TESTS = (
    "tests/test_layout.py",
    # Scripts of their own, tested at script level in a second or two: first, so that their
    # mutants die before the slower files run.
    "tests/test_script_refund.py",
    "tests/test_script_tasks.py",
    "tests/test_script_children.py",
    "tests/test_script_gaps.py",
    "tests/test_script_args.py",
    "tests/test_script_events.py",
    "tests/test_script_edges.py",
    "tests/test_script_prices.py",
    "tests/test_script_auth.py",
    "tests/test_script_restore.py",
    "tests/test_script_walls.py",
    "tests/test_script_walls_mutants.py",
    "tests/test_script_walls_layout.py",
    "tests/test_script_shadow.py",
    "tests/test_script_expiry_edges.py",
    "tests/test_script_loops.py",
    "tests/test_script_near.py",
    "tests/test_script_loops_mutants.py",
    "tests/test_script_agent_scan.py",
    "tests/test_scripts.py",
    "tests/test_holds.py",
    "tests/test_raw_args.py",
    "tests/test_clock.py",
    "tests/test_capture_window.py",
    "tests/test_fixed_prices.py",
    "tests/test_concurrency.py",
    "tests/test_stateful.py",
    "tests/test_shadow_model.py",
    "tests/test_walls.py",
    "tests/test_tasks.py",
    "tests/test_loops.py",
)
PYTEST_SELECT = ("-m", "not slow", "-k", "not fakeredis and not test_http_")

# Redis commands that write: removing one of these calls is a mutant.
WRITE_COMMANDS = frozenset({
    "SET", "DEL", "UNLINK", "HSET", "HSETNX", "HMSET", "HDEL", "HINCRBY", "INCR", "INCRBY",
    "DECR", "DECRBY", "ZADD", "ZREM", "ZINCRBY", "SADD", "SREM", "XADD", "XTRIM", "XDEL",
    "EXPIRE", "PEXPIRE", "PEXPIREAT", "LPUSH", "RPUSH", "LTRIM", "SETEX", "PSETEX",
})
SWAPS = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "~=", "~=": "==",
         "and": "or", "or": "and"}
# Tokens after which a '-' is unary (negation), not a subtraction.
UNARY_AFTER = frozenset({
    "(", "[", "{", ",", "=", "==", "~=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "^",
    "..", "return", "and", "or", "not", "then", "do", "else", "elseif", "if", "while",
    "until", "local", "in",
})
BLOCK_OPEN = frozenset({"function", "if", "do", "repeat"})
BLOCK_CLOSE = frozenset({"end", "until"})

# The area of a mutant, for the per-area score (first match on the line's code wins; then
# the enclosing _lib function; then the script's default). The money areas are the checks
# the done-criterion names: balance, cap, window, hold, idempotency.
AREA_BY_FUNCTION = {
    "uint": "args", "name": "args", "token": "args", "istr": "core", "num": "core",
    "now_ms": "clock", "incr": "balance", "window_read": "window", "window_add": "window",
    "retry_after_s": "window", "daily_refusal": "cap", "per_call_refusal": "cap",
    "near_flag": "warnings", "low_flags": "warnings", "outbox_low": "warnings",
    "idem_lookup": "idempotency", "idem_store": "idempotency", "hold_read": "hold",
    "hold_close": "hold", "field_ok": "args", "tool_read": "prices",
    "next_catalog_version": "admin",
    "loop_setting": "loop", "loop_read": "loop", "loop_refusal": "loop",
    "loop_freeze": "loop", "loop_write": "loop", "walls_near": "warnings",
}
AREA_BY_CODE = (
    (re.compile(r"BAD_ARGUMENT|^local \w+ = (uint|name|token)\(ARGV"), "args"),
    (re.compile(r"idem"), "idempotency"),
    (re.compile(r"'XADD'|^'\w+', "), "ledger"),
    (re.compile(r"refusal|LIMIT_"), "cap"),
    (re.compile(r"window|win\b|DAY_MS"), "window"),
    (re.compile(r"low_flags|near_flag|outbox_low|LOW|lowf"), "warnings"),
    (re.compile(r"\bbal\b|BALANCE|'held'|amount|cost"), "balance"),
)
AREA_BY_SCRIPT = {
    "charge": "balance", "fund": "balance", "hold": "hold", "capture": "hold",
    "release": "hold", "expire_holds": "hold", "_lib": "core", "tool_copy": "prices",
    "restore": "recover",
}
MONEY_AREAS = ("balance", "cap", "window", "hold", "idempotency")


# ---- Lua tokens ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Token:
    kind: str  # name, number, string, op, comment
    text: str
    start: int
    end: int
    line: int


_LONG_BRACKET = re.compile(r"\[(=*)\[")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPS = ("...", "..", "==", "~=", "<=", ">=", "+", "-", "*", "/", "%", "^", "#", "<", ">", "=",
        "(", ")", "{", "}", "[", "]", ";", ":", ",", ".")


def _token_end(src: str, i: int, line: int) -> tuple[int, str]:
    """The end offset and kind of the token that starts at ``src[i]`` (not a space)."""
    c, n = src[i], len(src)
    if src.startswith("--", i):
        m = _LONG_BRACKET.match(src, i + 2)
        if m:
            return src.index("]" + m.group(1) + "]", m.end()) + len(m.group(1)) + 2, "comment"
        j = src.find("\n", i)
        return (n if j < 0 else j), "comment"
    if c in "'\"":
        j = i + 1
        while src[j] != c:
            j += 2 if src[j] == "\\" else 1
        return j + 1, "string"
    long_string = _LONG_BRACKET.match(src, i) if c == "[" else None
    if long_string:
        close = "]" + long_string.group(1) + "]"
        return src.index(close, long_string.end()) + len(close), "string"
    number = _NUMBER.match(src, i) if c.isdigit() or c == "." else None
    if number:
        return number.end(), "number"
    if c.isalpha() or c == "_":
        m = _NAME.match(src, i)
        assert m is not None
        return m.end(), "name"
    op = next((o for o in _OPS if src.startswith(o, i)), None)
    if op is None:
        raise ValueError(f"line {line}: unexpected {c!r}")
    return i + len(op), "op"


def tokenize(src: str) -> list[Token]:
    """Lua 5.1 tokens with offsets; comments kept (kind 'comment') so lines can be cut."""
    out: list[Token] = []
    i, line, n = 0, 1, len(src)
    while i < n:
        c = src[i]
        if c in " \t\r\n":
            line += c == "\n"
            i += 1
            continue
        j, kind = _token_end(src, i, line)
        text = src[i:j]
        out.append(Token(kind, text, i, j, line))
        line += text.count("\n")
        i = j
    return out


# ---- mutants ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Mutant:
    file: str  # e.g. "charge.lua"
    line: int  # for the reader only; never part of the name
    code: str  # the line's code, comments cut and spaces collapsed
    mutation: str  # e.g. "'>' -> '>='"
    occurrence: int
    start: int
    end: int
    replacement: str
    area: str

    @property
    def key(self) -> str:
        return f"{self.file} | {self.code} | {self.mutation} #{self.occurrence}"

    def apply(self, src: str) -> str:
        return src[:self.start] + self.replacement + src[self.end:]


def _line_codes(src: str, tokens: Sequence[Token]) -> dict[int, str]:
    """Each line's code: the line with its comment cut and its spaces collapsed."""
    lines = src.split("\n")
    offsets = [0]
    for text in lines:
        offsets.append(offsets[-1] + len(text) + 1)
    cut = {t.line: t.start - offsets[t.line - 1] for t in tokens if t.kind == "comment"}
    return {no: " ".join(text[:cut.get(no, len(text))].split())
            for no, text in enumerate(lines, start=1)}


def _functions(tokens: Sequence[Token]) -> list[str]:
    """For each token, the name of the innermost named function around it ('' at top)."""
    names: list[str] = []
    stack: list[tuple[int, str]] = []  # (block depth at which it opened, name)
    depth = 0
    for i, t in enumerate(tokens):
        if t.kind == "name" and t.text in BLOCK_OPEN:
            depth += 1
            if t.text == "function":
                after = tokens[i + 1] if i + 1 < len(tokens) else None
                name = after.text if after is not None and after.kind == "name" else "<anon>"
                stack.append((depth, name))
        elif t.kind == "name" and t.text in BLOCK_CLOSE:
            if stack and stack[-1][0] == depth:
                stack.pop()
            depth -= 1
        names.append(stack[0][1] if stack else "")
    return names


def _area(script: str, function: str, code: str) -> str:
    if script == "_lib" and not function:
        return "core"  # the code tables and constants
    if function in AREA_BY_FUNCTION:
        return AREA_BY_FUNCTION[function]
    for pattern, area in AREA_BY_CODE:
        if pattern.search(code):
            return area
    return AREA_BY_SCRIPT.get(script, "admin")


def _matching(tokens: Sequence[Token], i: int, open_: str, close: str) -> int:
    depth = 0
    for j in range(i, len(tokens)):
        if tokens[j].text == open_ and tokens[j].kind == "op":
            depth += 1
        elif tokens[j].text == close and tokens[j].kind == "op":
            depth -= 1
            if depth == 0:
                return j
    raise ValueError("unbalanced brackets")


def _edits(tokens: Sequence[Token]) -> Iterator[tuple[int, str, int, int, str]]:
    """(token index, description, start, end, replacement) of every mutation."""
    code = [t for t in tokens if t.kind != "comment"]
    index = {id(t): k for k, t in enumerate(tokens)}
    for k, t in enumerate(code):
        i = index[id(t)]
        prev = code[k - 1] if k > 0 else None
        if (t.kind == "op" or t.text in ("and", "or")) and t.text in SWAPS:
            yield i, f"'{t.text}' -> '{SWAPS[t.text]}'", t.start, t.end, SWAPS[t.text]
        elif t.kind == "op" and t.text in ("+", "-"):
            unary = t.text == "-" and (prev is None or prev.text in UNARY_AFTER)
            if unary:
                yield i, "drop unary '-'", t.start, t.end, ""
            else:
                flip = "-" if t.text == "+" else "+"
                yield i, f"'{t.text}' -> '{flip}'", t.start, t.end, flip
        elif t.kind == "number" and re.fullmatch(r"\d+", t.text):
            n = int(t.text)
            new = {0: 1, 1: 0}.get(n, n + 1)
            yield i, f"{n} -> {new}", t.start, t.end, str(new)
        elif t.kind == "name" and t.text in ("if", "elseif"):
            then = next(j for j in range(k + 1, len(code)) if code[j].text == "then")
            first, last = code[k + 1], code[then - 1]
            for forced in ("true", "false"):
                yield i, f"{t.text} condition -> {forced}", first.start, last.end, forced
        elif (t.text == "redis" and k + 4 < len(code) and code[k + 1].text == "."
              and code[k + 2].text == "call" and code[k + 4].kind == "string"):
            command = code[k + 4].text[1:-1].upper()
            if command not in WRITE_COMMANDS:
                continue
            close = _matching(code, k + 3, "(", ")")
            statement = prev is None or prev.text not in UNARY_AFTER | {"return"}
            replacement = "" if statement else "nil"
            yield (i, f"remove redis.call('{command}')", t.start, code[close].end,
                   replacement)


def mutants_of(path: Path) -> list[Mutant]:
    src = path.read_text()
    tokens = tokenize(src)
    codes = _line_codes(src, tokens)
    functions = _functions(tokens)
    script = path.stem
    seen: Counter[tuple[str, str]] = Counter()
    out = []
    for i, description, start, end, replacement in _edits(tokens):
        line = tokens[i].line
        code = codes[line]
        seen[(code, description)] += 1
        out.append(Mutant(path.name, line, code, description, seen[(code, description)],
                          start, end, replacement, _area(script, functions[i], code)))
    return out


def walls_lines(lua_dir: Path) -> range:
    """The lines of _lib.lua's walls section: from its heading to the next section's heading
    (``-- ---- ...``) or to hold_close, exclusive."""
    lines = (lua_dir / "_lib.lua").read_text().splitlines()
    first = next(i for i, t in enumerate(lines, 1) if "---- Walls beyond the balance" in t)
    last = next(i for i, t in enumerate(lines, 1)
                if i > first and (t.startswith(("-- ----", "local function hold_close"))))
    return range(first, last)


def in_lines(m: Mutant, spans: Sequence[str]) -> bool:
    """Whether the mutant is on one of ``spans``: ``<file>:<first>-<last>`` (line numbers,
    inclusive), e.g. ``_lib.lua:425-508``."""
    for span in spans:
        file, _, numbers = span.rpartition(":")
        first, _, last = numbers.partition("-")
        if m.file == file and int(first) <= m.line <= int(last or first):
            return True
    return False


def is_walls(m: Mutant, lua_dir: Path) -> bool:
    """A mutant of the walls beyond the balance (#16, still being built): its section of
    _lib.lua, or a line of another script that calls into it."""
    if m.file == "_lib.lua" and m.line in walls_lines(lua_dir):
        return True
    return "walls" in m.code


def all_mutants(lua_dir: Path) -> list[Mutant]:
    return [m for path in sorted(lua_dir.glob("*.lua")) for m in mutants_of(path)]


# ---- equivalents ----------------------------------------------------------------------------

def read_equivalents(path: Path) -> dict[str, str]:
    """key -> reason, from lines ``<file> | <code> | <mutation> #<n> | <reason>``."""
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for raw in path.read_text().splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        key, sep, reason = raw.rpartition(" | ")
        if not sep or not reason.strip():
            raise ValueError(f"{path}: no reason in {raw!r}")
        out[key.strip()] = reason.strip()
    return out


# ---- Redis: is the mutant loadable ---------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def redis_for_loading() -> Iterator[socket.socket]:
    """A redis-server of our own (stopped by pid), and a socket to it."""
    sys.path.insert(0, str(ROOT))
    from gateway.store.embedded import find_server_binary

    found = find_server_binary()
    if found is None:
        raise SystemExit("no redis-server found")
    port = _free_port()
    proc = subprocess.Popen([found[0], "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)
        with conn:
            yield conn
    finally:
        proc.terminate()
        proc.wait(10)


def _resp(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for p in parts:
        b = p.encode()
        out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
    return b"".join(out)


def _read_line(conn: socket.socket) -> bytes:
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = conn.recv(1)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        buf += chunk
    return buf[:-2]


def script_loads(conn: socket.socket, source: str) -> bool:
    conn.sendall(_resp("SCRIPT", "LOAD", source))
    head = _read_line(conn)
    if head.startswith(b"$"):
        conn.recv(int(head[1:]) + 2, socket.MSG_WAITALL)
        return True
    return False


def loadable(conn: socket.socket, lua_dir: Path, mutant: Mutant) -> bool:
    """Compile the mutant the way gateway/store/scripts.py assembles it: the library, then the
    script (a mutated library is compiled in front of every script)."""
    files = {p.name: p.read_text() for p in lua_dir.glob("*.lua")}
    files[mutant.file] = mutant.apply(files[mutant.file])
    libs = "".join(files[f] + "\n" for f in sorted(files) if f.startswith("_"))
    scripts = [f for f in sorted(files) if not f.startswith("_")]
    if not mutant.file.startswith("_"):
        scripts = [mutant.file]
    return all(script_loads(conn, libs + files[f]) for f in scripts)


# ---- running the tests on a copy -------------------------------------------------------------

def make_copy(dest: Path) -> Path:
    """A copy of what the tests need (no .git, no .venv): the mutants are applied here."""
    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", ".mypy_cache",
                                    ".ruff_cache", ".pytest_cache", "node_modules")
    for entry in ROOT.iterdir():
        if entry.name in (".git", ".venv") or entry.name.endswith(".egg-info"):
            continue
        if entry.is_dir():
            shutil.copytree(entry, dest / entry.name, ignore=ignore)
        else:
            shutil.copy2(entry, dest / entry.name)
    return dest


def pytest_args(copy: Path, first: Sequence[str] = ()) -> list[str]:
    """The money tests' command line; the files in ``first`` run before the others (a run
    of one script's mutants kills faster with that script's tests in front)."""
    order = [*first, *(f for f in MONEY_TESTS if f not in first)]
    files = [f for f in order if (copy / f).exists()]
    # A fixed Hypothesis seed: a mutant is killed or not, the same on every run.
    return ["-x", "-q", "-p", "no:cacheprovider", "--hypothesis-seed=0", *PYTEST_SELECT,
            *files]


# The fork server: imports pytest, the gateway and every money test once (a collect-only
# pass), then forks one child per mutant, which runs the tests in its own process group
# (its redis-server included, so a timeout kills both). The Lua files are read by the child
# when its tests start engines, so each child sees the mutant planted before it was forked.
# Protocol on the pipe whose fd is in MUTANT_PROTO_FD: "run" in; "<child pid>", then
# "<exit code>" out, one line each.
FORK_SERVER = r"""
import os, sys
import pytest
proto = os.fdopen(int(os.environ["MUTANT_PROTO_FD"]), "w", buffering=1)
args = sys.argv[1:]
log = sys.argv[0]
null = os.open(os.devnull, os.O_WRONLY)
os.dup2(null, 1)
os.dup2(null, 2)
pytest.main(["--collect-only", *args])
for _line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os._exit(int(pytest.main(args)))
    proto.write(f"{pid}\n")
    _, status = os.waitpid(pid, 0)
    proto.write(f"{os.waitstatus_to_exitcode(status)}\n")
"""


class ForkServer:
    """One fork server per repository copy."""

    def __init__(self, copy: Path, first: Sequence[str] = ()) -> None:
        self.copy = copy
        self.log = copy / ".mutant-run.log"
        read_fd, write_fd = os.pipe()
        env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1",
               "MUTANT_PROTO_FD": str(write_fd)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FORK_SERVER.replace("sys.argv[0]", repr(str(self.log))),
             *pytest_args(copy, first)], cwd=copy, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(write_fd,))
        os.close(write_fd)
        self.replies = os.fdopen(read_fd, "r")

    def _reply(self, timeout_s: float | None) -> str | None:
        if timeout_s is not None:
            ready, _, _ = select.select([self.replies], [], [], max(timeout_s, 0))
            if not ready:
                return None
        line = self.replies.readline()
        if not line:
            raise RuntimeError(f"the fork server in {self.copy} died")
        return line.strip()

    def run(self, timeout_s: float) -> tuple[str, float, str]:
        """('passed' | 'failed' | 'timeout', seconds, first failure)."""
        assert self.proc.stdin is not None
        started = time.monotonic()
        self.proc.stdin.write(b"run\n")
        self.proc.stdin.flush()
        pid = int(self._reply(None) or 0)
        code = self._reply(timeout_s - (time.monotonic() - started))
        if code is None:
            os.killpg(pid, signal.SIGKILL)  # the tests and the redis-server they started
            self._reply(None)
            return "timeout", time.monotonic() - started, ""
        elapsed = time.monotonic() - started
        lines = self.log.read_text(errors="replace").splitlines()
        failed = next((ln for ln in lines if ln.startswith(("FAILED", "ERROR"))), "")
        summary = failed or (lines[-1] if lines else "")
        return ("passed" if code == "0" else "failed"), elapsed, summary

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.replies.close()


@dataclasses.dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed, survived, timeout, equivalent, unloadable
    seconds: float = 0.0
    detail: str = ""


CANARY = "error('mutation runner canary: the tests must see this')\n"


class Workers:
    """One repository copy (and fork server) per job; a job plants one mutant in a free
    copy, runs the money tests there, and restores the file."""

    def __init__(self, jobs: int, lua_rel: str, timeout_s: float,
                 first: Sequence[str] = ()) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="iou-mutants-"))
        self.servers: list[ForkServer] = []
        self.lua_rel = lua_rel
        self.timeout_s = timeout_s
        for i in range(jobs):
            self.servers.append(ForkServer(make_copy(self.tmp / f"copy{i}"), first))
        self.free = list(self.servers)
        self.lock = threading.Lock()

    def close(self) -> None:
        for server in self.servers:
            server.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def check(self) -> tuple[str, float, str]:
        """The unmutated copies pass (all at once: the whole money selection, the slowest run
        there is, under its own generous timeout); a canary (every script fails) is caught in
        each."""
        with ThreadPoolExecutor(len(self.servers)) as pool:
            baselines = list(pool.map(lambda s: s.run(BASELINE_TIMEOUT_S), self.servers))
        for result, seconds, detail in baselines:
            if result != "passed":
                return result, seconds, detail
        for server in self.servers:
            lib = sorted((server.copy / self.lua_rel).glob("_*.lua"))[0]
            original = lib.read_text()
            lib.write_text(CANARY + original)
            try:
                canary, _, _ = server.run(self.timeout_s)
            finally:
                lib.write_text(original)
            if canary != "failed":
                return "canary not caught (do the tests read the copy's Lua?)", 0.0, ""
        return "passed", max(seconds for _, seconds, _ in baselines), ""

    def run(self, mutant: Mutant) -> Outcome:
        with self.lock:
            server = self.free.pop()
        path = server.copy / self.lua_rel / mutant.file
        original = path.read_text()
        try:
            path.write_text(mutant.apply(original))
            result, seconds, detail = server.run(self.timeout_s)
        finally:
            path.write_text(original)
            with self.lock:
                self.free.append(server)
        status = {"passed": "survived", "failed": "killed"}.get(result, result)
        return Outcome(mutant, status, seconds, detail)


# ---- report ------------------------------------------------------------------------------

def score(outcomes: Sequence[Outcome]) -> tuple[int, int]:
    """(killed incl. timeouts, non-equivalent loadable mutants run)."""
    counted = [o for o in outcomes if o.status in ("killed", "survived", "timeout")]
    return sum(o.status != "survived" for o in counted), len(counted)


def report(outcomes: Sequence[Outcome], stale: Sequence[str], seconds: float) -> str:
    counts = Counter(o.status for o in outcomes)
    killed, total = score(outcomes)
    lines = [
        f"mutants: {len(outcomes)}  killed: {counts['killed']}  timeout: {counts['timeout']}  "
        f"survived: {counts['survived']}  equivalent: {counts['equivalent']}  "
        f"unloadable: {counts['unloadable']}",
        f"score: {killed}/{total} = {100 * killed / total if total else 100:.1f} % of the "
        f"non-equivalent mutants killed ({seconds:.0f} s)",
    ]
    by_area: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_area[o.mutant.area].append(o)
    for area in sorted(by_area):
        k, t = score(by_area[area])
        tag = "  (money check)" if area in MONEY_AREAS else ""
        lines.append(f"  {area:<12} {k}/{t} killed{tag}")
    runs = [o.seconds for o in outcomes if o.status in ("killed", "survived")]
    if runs:
        lines.append(f"per mutant: mean {sum(runs) / len(runs):.1f} s, max {max(runs):.1f} s")
    for o in outcomes:
        if o.status in ("survived", "timeout"):
            lines.append(f"{o.status.upper()}: {o.mutant.key}   (line {o.mutant.line}, "
                         f"{o.mutant.area})")
    for key in stale:
        lines.append(f"STALE EQUIVALENT (no such mutant any more): {key}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lua-dir", default=LUA_DIR_DEFAULT,
                        help="the scripts' folder, relative to the repository root")
    parser.add_argument("--sample", type=int, default=0, help="run N random mutants only")
    parser.add_argument("--skip-walls", action="store_true",
                        help="leave out the walls' mutants (_lib.lua's walls section and its "
                             "callers)")
    parser.add_argument("--walls", action="store_true",
                        help="only the walls' mutants (_lib.lua's walls section and its callers)")
    parser.add_argument("--lines", action="append", default=[],
                        help="only the mutants on these lines: <file>:<first>-<last> "
                             "(repeatable; line numbers of today's scripts)")
    parser.add_argument("--first", action="append", default=[],
                        help="a test file to run before the other money tests (repeatable; "
                             "e.g. tests/test_script_tasks.py for the tasks' mutants)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the sample")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S_DEFAULT,
                        help="seconds per mutant")
    parser.add_argument("--equivalents", default=EQUIVALENTS_DEFAULT)
    parser.add_argument("--only", default="", help="regex on the mutant's name")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--json", default="", help="write every outcome to this file")
    return parser.parse_args(argv)


def choose(args: argparse.Namespace, mutants: list[Mutant], lua_dir: Path) -> list[Mutant]:
    """The mutants --only, --skip-walls, --walls and --lines keep."""
    if args.only:
        mutants = [m for m in mutants if re.search(args.only, m.key)]
    if args.skip_walls:
        mutants = [m for m in mutants if not is_walls(m, lua_dir)]
    if args.walls:
        mutants = [m for m in mutants if is_walls(m, lua_dir)]
    if args.lines:
        mutants = [m for m in mutants if in_lines(m, args.lines)]
    return mutants


def sample(mutants: list[Mutant], equivalents: dict[str, str], size: int,
           seed: int | None) -> list[Mutant]:
    """A seeded random sample of the non-equivalent mutants (the seed printed to replay it)."""
    seed = seed if seed is not None else random.SystemRandom().randrange(10**6)
    print(f"sample of {size} mutants, seed {seed}", flush=True)
    candidates = [m for m in mutants if m.key not in equivalents]
    return random.Random(seed).sample(candidates, min(size, len(candidates)))


def triage(mutants: Sequence[Mutant], equivalents: dict[str, str],
           lua_dir: Path) -> tuple[list[Outcome], list[Mutant]]:
    """(the equivalent and unloadable outcomes, the mutants to run)."""
    outcomes: list[Outcome] = []
    to_run: list[Mutant] = []
    with redis_for_loading() as conn:
        for m in mutants:
            if m.key in equivalents:
                outcomes.append(Outcome(m, "equivalent", detail=equivalents[m.key]))
            elif not loadable(conn, lua_dir, m):
                outcomes.append(Outcome(m, "unloadable"))
            else:
                to_run.append(m)
    return outcomes, to_run


def run_all(args: argparse.Namespace, to_run: Sequence[Mutant]) -> list[Outcome] | None:
    """Every mutant's outcome, or None when the unmutated tree fails its money tests."""
    # A TERM (CI's timeout, a kill by pid) still stops the fork servers and removes the copies.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workers = Workers(args.jobs, args.lua_dir, args.timeout, args.first)
    outcomes: list[Outcome] = []
    try:
        result, seconds, detail = workers.check()
        print(f"baseline (no mutant): {result} in {seconds:.1f} s; canary caught", flush=True)
        if result != "passed":
            print(f"the money tests fail without any mutant: {detail}")
            return None
        with ThreadPoolExecutor(args.jobs) as pool:
            for n, outcome in enumerate(pool.map(workers.run, to_run), start=1):
                outcomes.append(outcome)
                print(f"[{n}/{len(to_run)}] {outcome.status:<8} {outcome.seconds:5.1f} s  "
                      f"{outcome.mutant.key}", flush=True)
    finally:
        workers.close()
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    lua_dir = ROOT / args.lua_dir
    mutants = all_mutants(lua_dir)
    equivalents = read_equivalents(ROOT / args.equivalents)
    keys = {m.key for m in mutants}
    stale = sorted(k for k in equivalents if k not in keys)
    mutants = choose(args, mutants, lua_dir)
    if args.list:
        for m in mutants:
            mark = "  [equivalent]" if m.key in equivalents else ""
            print(f"{m.area:<12} line {m.line:<4} {m.key}{mark}")
        print(f"{len(mutants)} mutants")
        return 0
    if args.sample:
        mutants = sample(mutants, equivalents, args.sample, args.seed)

    started = time.monotonic()
    outcomes, to_run = triage(mutants, equivalents, lua_dir)
    print(f"{len(mutants)} mutants: {len(to_run)} to run, {len(outcomes)} equivalent or "
          f"unloadable; jobs {args.jobs}, timeout {args.timeout:.0f} s", flush=True)
    ran = run_all(args, to_run)
    if ran is None:
        return 2
    outcomes += ran
    print(report(outcomes, stale, time.monotonic() - started))
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{"key": o.mutant.key, "line": o.mutant.line, "area": o.mutant.area,
              "status": o.status, "seconds": round(o.seconds, 2), "detail": o.detail}
             for o in outcomes], indent=1))
    return 1 if any(o.status == "survived" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
