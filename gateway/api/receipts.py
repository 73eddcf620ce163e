"""Receipts over HTTP: the public JWKS, a receipt for any charge in the ledger, and the
``X-IOU-Receipt: true`` request header that asks a charge, batch or capture for one.

Signing is in gateway/receipts/; this module only decides when and answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.context import Context, endpoint
from gateway.api.responses import json_response
from gateway.ledger.entries import LedgerEntry
from gateway.metering.errors import Forbidden, InvalidRequest, NotFound
from gateway.receipts import ReceiptSigner, sign_receipt

ASK_HEADER = "x-iou-receipt"
CHARGE_ID_CHARS_MAX = 64
PAID_KINDS = ("charge", "capture")  # the rows a receipt can be signed for


def asked(headers: Mapping[str, str]) -> bool:
    """Whether the request carries ``X-IOU-Receipt: true`` (signing costs CPU: only then)."""
    value = headers.get(ASK_HEADER)
    if value is None:
        return False
    if value.lower() not in ("true", "false"):
        raise InvalidRequest("X-IOU-Receipt", "must be true or false")
    return value.lower() == "true"


def signer(ctx: Context) -> ReceiptSigner:
    if ctx.receipts is None:
        raise NotFound("This gateway signs no receipts.")
    return ctx.receipts


def signed(ctx: Context, *, charge_id: str, agent: str, tool: str,  # noqa: PLR0913 - the claims
           cost_micros: int, balance_after_micros: int, task: str | None) -> str | None:
    """A receipt, or None on a gateway without a signer (tests that build a bare Context)."""
    if ctx.receipts is None:
        return None
    return sign_receipt(ctx.receipts, charge_id=charge_id, agent=agent, tool=tool,
                        cost_micros=cost_micros, balance_after_micros=balance_after_micros,
                        task=task)


def from_entry(ctx: Context, entry: LedgerEntry) -> str:
    assert entry.agent is not None and entry.amount is not None
    return sign_receipt(signer(ctx), charge_id=entry.entry_id, agent=entry.agent,
                        tool=entry.tool or "", cost_micros=entry.amount,
                        balance_after_micros=entry.balance_after or 0,
                        task=getattr(entry, "task", None), at_ms=entry.at_ms)


@endpoint
async def get_keys(ctx: Context, request: Request) -> Response:
    """The public keys that check receipts (JWKS, RFC 7517); no authentication."""
    return json_response(200, signer(ctx).jwks(), {"Cache-Control": "public, max-age=300"})


@endpoint
async def get_receipt(ctx: Context, request: Request) -> Response:
    """A receipt for one charge or capture of the ledger (the agent's own key, or admin)."""
    caller = await ctx.auth.caller(request)
    charge_id = request.path_params["charge_id"]
    if not (0 < len(charge_id) <= CHARGE_ID_CHARS_MAX and charge_id.isascii()):
        raise NotFound(f"No charge {charge_id[:CHARGE_ID_CHARS_MAX]} in the ledger.")
    entry = await ctx.ledger.entry(charge_id)
    if entry is None or entry.kind not in PAID_KINDS:
        raise NotFound(f"No charge {charge_id} in the ledger (a charge reaches it within "
                       "about a second).")
    if not caller.is_admin and caller.agent != entry.agent:
        raise Forbidden("An agent key acts for its own agent only.")
    body: dict[str, Any] = {"charge_id": charge_id, "receipt": from_entry(ctx, entry)}
    return json_response(200, body)
