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

import re

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.context import Context, endpoint
from gateway.api.responses import iso_ms, json_response
from gateway.metering.errors import NotFound, maps_store_errors
from gateway.metering.limits import check_name
from gateway.store import agents as stored

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
    found = await _stored_keys(ctx, agent)
    if found is None:
        raise NotFound(f"No agent named {agent}.")
    rows = []
    for key in found:
        created = key.created_ms if key.created_ms is not None else created_ms(key.key_id)
        last = key.last_used_ms
        rows.append((created or 0, key.key_id, {
            "key_id": key.key_id, "created_at": None if created is None else iso_ms(created),
            "last_used_at": None if last is None else iso_ms(last)}))
    rows.sort(key=lambda row: (row[0], row[1]))
    return json_response(200, {"keys": [row[2] for row in rows]})


@maps_store_errors
async def _stored_keys(ctx: Context, agent: str) -> list[stored.StoredKey] | None:
    return await stored.stored_keys(ctx.engine.conn, ctx.engine.partitions, agent)
