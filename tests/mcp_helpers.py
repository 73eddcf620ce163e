"""An upstream MCP server for tests: loadtests/mcp_upstream.py in a subprocess."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.servers import free_port

START_S_MAX = 30


@contextmanager
def mcp_upstream(secret: str) -> Iterator[str]:
    """The upstream on a free loopback port, requiring header ``x-upstream-secret: secret``;
    yields its base URL (its endpoint is /mcp, its counts /calls, its last receipts
    /receipts) and stops it afterwards."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "loadtests.mcp_upstream", str(port),
                                secret])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S_MAX
        while True:
            try:
                if httpx.get(url + "/calls", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "no upstream"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)
