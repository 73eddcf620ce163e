"""The embedded server belongs to ``iou serve``: its workers and its ledger writer use it and
wait for it, and never start one themselves. Before, a writer restarted while the server was
down (killed) started it as its own child, and stopped it under the serving gateway when that
writer exited; a server started again on the TCP fallback moved to a new port, where the
workers' connections never looked."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from gateway.config import load_settings
from gateway.runtime import open_runtime
from gateway.store.embedded import ping, start_embedded
from tests.gateway_proc import running_gateway
from tests.http_helpers import new_agent, seed_tools

BACK_S_MAX = 30


async def test_an_attached_process_waits_for_the_server_instead_of_starting_one(
        tmp_path: Path) -> None:
    owner = start_embedded(tmp_path)
    assert owner.process is not None
    owner.process.kill()
    owner.process.wait()
    settings = load_settings({"IOU_DATA_DIR": str(tmp_path), "IOU_EMBEDDED_ATTACH": "1"})
    opening = asyncio.ensure_future(open_runtime(settings, background=False, wait=True))
    try:
        await asyncio.sleep(2.0)
        assert not opening.done(), "the attached process did not wait for the server"
        assert not ping(owner.url), "the attached process started the server itself"
        again = start_embedded(tmp_path)  # what `iou serve`'s watch does
        runtime = await asyncio.wait_for(opening, 15)
        assert runtime.embedded is not None and not runtime.embedded.owned
        await runtime.close()
        assert ping(again.url), "closing the attached process stopped the owner's server"
        again.stop()
    finally:
        opening.cancel()


async def test_a_server_on_tcp_is_started_again_on_its_port() -> None:
    # A data dir whose socket path is too long for a unix socket: the server listens on TCP.
    root = Path(tempfile.mkdtemp(prefix="iou-attach-"))
    data_dir = root / ("d" * 100)
    first = start_embedded(data_dir)
    try:
        assert first.url.startswith("redis://127.0.0.1:"), first.url
        assert first.process is not None
        first.process.kill()
        first.process.wait()
        second = start_embedded(data_dir)
        assert second.url == first.url
        assert (data_dir / "redis.url").read_text().strip() == first.url
        second.stop()
    finally:
        first.stop()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _embedded_pid(serve_pid: int, data_dir: Path) -> int | None:
    """The redis-server running on ``data_dir`` among ``iou serve``'s children."""
    for pid in _children(serve_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"redis-server" in cmdline and data_dir.name.encode() in cmdline:
            return pid
    return None


def test_serve_hands_its_server_to_its_writer_and_starts_it_again_itself() -> None:
    with running_gateway(None) as gateway:
        seed_tools(gateway)
        _, key = new_agent(gateway, grant="10")
        writers = [p for p in _children(gateway.process.pid)
                   if b"writer" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(writers) == 1, writers
        environ = Path(f"/proc/{writers[0]}/environ").read_bytes().split(b"\0")
        assert b"IOU_EMBEDDED_ATTACH=1" in environ
        with gateway.agent(key) as agent:
            for _ in range(2):  # the server and the writer killed together, twice
                first = _embedded_pid(gateway.process.pid, gateway.data_dir)
                assert first is not None
                os.kill(first, signal.SIGKILL)
                for pid in _children(gateway.process.pid):
                    if b"writer" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + BACK_S_MAX
                while True:
                    try:
                        status = agent.post("/v1/charge", json={"tool": "web_search"}
                                            ).status_code
                    except httpx.HTTPError:
                        status = 0
                    if status == 200:
                        break
                    assert status in (0, 503), status
                    assert time.monotonic() < deadline, "the gateway did not come back"
                    time.sleep(0.2)
                again = _embedded_pid(gateway.process.pid, gateway.data_dir)
                assert again is not None and again != first, "not started again by iou serve"
            assert agent.get("/v1/balance").json()["balance"] == "9.9"
        assert gateway.process.poll() is None
