"""GET /v1/agents/{agent}/keys (the admin, or the agent's own key): an agent's key ids with
their creation and last use; never a key, nor the hash it is stored as.

Creation time is the ``created`` field the creating script writes into the key's lookup
record; a record without it (rebuilt by ``iou recover``, or older) falls back to the time
inside the key id (``key_`` + a UUIDv7 in hex, whose first 48 bits are Unix ms), else null.
Last use is written by the authenticator at most once a minute per key and worker
(gateway/api/auth.py), so it is exact to about a minute and costs no Redis write per
request.
"""

from __future__ import annotations

import asyncio
import re

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.context import Context, endpoint
from gateway.api.responses import iso_ms, json_response
from gateway.metering.errors import NotFound
from gateway.metering.limits import check_name

TIMED_KEY_ID_RE = re.compile(r"key_([0-9a-f]{12})7[0-9a-f]{19}")


def created_ms(key_id: str) -> int | None:
    """The creation time (Unix ms) written into a key id, or None for an older id."""
    match = TIMED_KEY_ID_RE.fullmatch(key_id)
    return None if match is None else int(match.group(1), 16)


@endpoint
async def list_keys(ctx: Context, request: Request) -> Response:
    agent = request.path_params["agent"]
    caller = await ctx.auth.admin_or_agent(request, agent)
    if caller.is_admin:
        check_name("agent", agent)
    k = ctx.engine.agent_keys(agent)
    conn = ctx.engine.conn
    stored, used, exists = await asyncio.gather(
        conn.call_or_raise(b"HGETALL", k.keys), conn.call_or_raise(b"HGETALL", k.keys_used()),
        conn.call_or_raise(b"EXISTS", k.agent_hash))
    if not exists:
        raise NotFound(f"No agent named {agent}.")
    used_ms = {_text(used[i]): int(used[i + 1]) for i in range(0, len(used), 2)}
    pairs = [(_text(stored[i]), _text(stored[i + 1])) for i in range(0, len(stored), 2)]
    recorded = await asyncio.gather(*(conn.call_or_raise(b"HGET", k.api_key_lookup(h),
                                                         b"created") for _, h in pairs))
    rows = []
    for (key_id, key_hash), written in zip(pairs, recorded, strict=True):
        created = int(written) if written is not None else created_ms(key_id)
        last = used_ms.get(key_hash)
        rows.append((created or 0, key_id, {
            "key_id": key_id, "created_at": None if created is None else iso_ms(created),
            "last_used_at": None if last is None else iso_ms(last)}))
    rows.sort(key=lambda row: (row[0], row[1]))
    return json_response(200, {"keys": [row[2] for row in rows]})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
