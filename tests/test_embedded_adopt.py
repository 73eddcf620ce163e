"""An embedded server left running by a process that is gone (``iou serve``'s process group
killed with SIGKILL: the server runs in a session of its own) is adopted by the next process
that uses it: stopped when that process stops. Before, the next ``iou serve`` used it and left
it running after a clean SIGTERM, for ever."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway.store.embedded import OWNER_FILE, ping, start_embedded
from tests.gateway_proc import ADMIN_TOKEN, SECRET_KEY, WEBHOOK_SECRET, _wait_healthy
from tests.servers import free_port

GONE_S_MAX = 30


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    return state == "Z"


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + GONE_S_MAX
    while not _gone(pid):
        assert time.monotonic() < deadline, f"process {pid} still runs"
        time.sleep(0.1)


def _orphan_server(data_dir: Path) -> int:
    """A server of ``data_dir`` started by a process that was then killed: its pid."""
    starter = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; "
        "from gateway.store.embedded import start_embedded; "
        "start_embedded(Path(sys.argv[1])); print('up', flush=True); time.sleep(600)"),
        str(data_dir)], stdout=subprocess.PIPE)
    assert starter.stdout is not None and starter.stdout.readline() == b"up\n"
    starter.kill()
    starter.wait()
    server_pid, owner_pid = (int(x) for x in (data_dir / OWNER_FILE).read_text().split())
    assert owner_pid == starter.pid and not _gone(server_pid)
    return server_pid


def test_a_server_whose_starter_is_gone_is_adopted_and_stopped(tmp_path: Path) -> None:
    server_pid = _orphan_server(tmp_path)
    try:
        adopted = start_embedded(tmp_path)
        assert adopted.owned and adopted.pid == server_pid
        assert (tmp_path / OWNER_FILE).read_text().split() == [str(server_pid),
                                                                 str(os.getpid())]
        assert start_embedded(tmp_path).owned is False  # its owner (this process) is alive
        adopted.stop()
        _wait_gone(server_pid)
        assert not ping(adopted.url)
    finally:
        if not _gone(server_pid):
            os.kill(server_pid, signal.SIGKILL)


def test_a_process_that_reused_the_servers_pid_is_never_signalled(tmp_path: Path) -> None:
    # The owner file names a live process that is not a server of this data dir.
    first = start_embedded(tmp_path)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / OWNER_FILE).write_text(f"{bystander.pid} 999999999\n")
        found = start_embedded(tmp_path)
        assert not found.owned
        found.stop()
        assert bystander.poll() is None and ping(first.url)
    finally:
        bystander.kill()
        bystander.wait()
        first.stop()


def test_serve_killed_with_its_group_then_served_again_stops_the_server_at_the_end() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="iou-adopt-"))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IOU_")}
    environ.update({"IOU_DATA_DIR": str(data_dir), "IOU_ADMIN_TOKEN": ADMIN_TOKEN,
                    "IOU_WEBHOOK_SECRET": WEBHOOK_SECRET, "IOU_SECRET_KEY": SECRET_KEY})

    def serve() -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        with open(data_dir / "gateway.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli.main", "serve", "--port", str(port)],
                stdout=log, stderr=subprocess.STDOUT, env=environ, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, process, data_dir / "gateway.log")
        return process, url

    first, _ = serve()
    server_pid = int((data_dir / OWNER_FILE).read_text().split()[0])
    try:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        time.sleep(1.0)  # the writer sees its parent gone and stops
        assert not _gone(server_pid), "the server was expected to outlive its serve"
        second, _ = serve()
        second.terminate()
        second.wait(60)
        _wait_gone(server_pid)
    finally:
        if not _gone(server_pid):
            os.kill(server_pid, signal.SIGKILL)
