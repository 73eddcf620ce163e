"""Many copies of one keyed request at once, each refused (nothing kept): every copy gets the
request's own answer. A refused copy gives its binding back, so the others keep meeting a
binding that vanishes between their two commands; the bind gave up after 3 such misses and
answered 409 "changing hands" to a client that had sent the very same request."""

from __future__ import annotations

import asyncio

import httpx

from tests.gateway_proc import ADMIN_TOKEN, running_gateway
from tests.http_helpers import error_of, unique
from tests.servers import redis_server

COPIES = 40


async def _send_copies(url: str, name: str) -> list[httpx.Response]:
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}", "idempotency-key": unique("same")}
    limits = httpx.Limits(max_connections=COPIES)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        return await asyncio.gather(*(client.post("/v1/agents", json={"name": name},
                                                  headers=headers) for _ in range(COPIES)))


def test_copies_of_a_refused_keyed_request_all_get_its_refusal() -> None:
    with redis_server() as (url, _), running_gateway(url) as gateway:
        name = unique("taken")
        with gateway.admin() as admin:
            assert admin.post("/v1/agents", json={"name": name}).status_code == 201
        for _ in range(3):
            answers = asyncio.run(_send_copies(gateway.url, name))
            codes = [(a.status_code, error_of(a)) for a in answers]
            assert set(codes) == {(409, "agent_exists")}, sorted(set(codes))
