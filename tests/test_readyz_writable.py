"""/readyz means writable: a Redis that answers PING but refuses writes is not ready."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.gateway_proc import Gateway, running_gateway
from tests.servers import redis_server


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with redis_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def gw(server: tuple[str, subprocess.Popen[bytes]]) -> Iterator[Gateway]:
    with running_gateway(server[0]) as g:
        yield g


def ready_status(gw: Gateway, want: int, deadline_s: float = 10) -> httpx.Response:
    end = time.monotonic() + deadline_s
    while True:
        answer = httpx.get(gw.url + "/readyz", timeout=5)
        if answer.status_code == want or time.monotonic() > end:
            return answer
        time.sleep(0.1)


@pytest.mark.parametrize("fault", ["oom", "replica"])
def test_readyz_is_503_while_redis_refuses_writes(gw: Gateway, server: tuple[str, object],
                                                  fault: str) -> None:
    r = redis.Redis.from_url(server[0])
    try:
        if fault == "oom":
            r.config_set("maxmemory", int(r.info("memory")["used_memory"]) // 2)
        else:
            r.config_set("min-replicas-to-write", 1)
        answer = ready_status(gw, 503)
        assert answer.status_code == 503, answer.text
        body = answer.json()
        assert body["ready"] is False and body["checks"]["redis"] != "ok"
        port = server[0].rsplit(":", 1)[1].split("/")[0]
        assert port not in answer.text  # never the address
    finally:
        r.config_set("maxmemory", 0)
        r.config_set("min-replicas-to-write", 0)
        r.close()
    assert ready_status(gw, 200).status_code == 200
