"""Typed requests: each body and header validated once, here, into the values the domain
takes (names checked, amounts in micros, metadata as a plain storable tree, the
Idempotency-Key checked against the one pattern). The domain then only asserts its
invariants, and each Lua script stays the last guard of what it writes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.api.body import Fields
from gateway.metering.errors import InvalidRequest
from gateway.metering.inputs import check_fingerprint

# The one pattern of an Idempotency-Key (header, or a batch item's field): 1 to 128
# printable ASCII characters.
IDEMPOTENCY_KEY_RE = re.compile(r"[\x20-\x7e]{1,128}", re.ASCII)
IDEMPOTENCY_KEY_CHARS_MAX = 128
CHARGE_FIELDS = ("tool", "cost", "metadata", "task", "fingerprint")
TASK_ID_CHARS_MAX = 64
BATCH_ITEM_FIELDS = (*CHARGE_FIELDS, "idempotency_key")


def idempotency_key(value: str | None, field: str = "Idempotency-Key") -> str | None:
    """``value`` as an Idempotency-Key (None when absent); 422 on ``field`` otherwise."""
    if value is not None and not IDEMPOTENCY_KEY_RE.fullmatch(value):
        raise InvalidRequest(field, "must be 1 to 128 printable ASCII characters")
    return value


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """One charge: POST /v1/charge, or one item of POST /v1/charges.

    A batch item charges under the key derived from the batch's key and its ``part`` (its
    index), unless it carries its own key (then ``part`` is None)."""

    tool: str
    cost_micros: int | None  # only for variable-priced tools
    metadata: dict[str, Any] | None  # plain JSON, checked storable
    idempotency_key: str | None
    part: str | None = None
    index: int | None = None  # the item's position in a batch
    task: str | None = None  # the task the call counts against
    fingerprint: str | None = None  # the call's arguments for the loop breaker


def charge_request(body: dict[str, Any], amount_max_micros: int, key: str | None,
                   index: int | None = None) -> ChargeRequest:
    """The charge of ``body`` (a batch item when ``index`` is given), under the request's
    Idempotency-Key ``key``."""
    prefix = "" if index is None else f"charges[{index}]."
    fields = Fields(body, CHARGE_FIELDS if index is None else BATCH_ITEM_FIELDS, prefix)
    tool = fields.name("tool")
    assert tool is not None
    cost = fields.amount("cost", False, allow_zero=True, max_micros=amount_max_micros)
    part = None if index is None else str(index)
    if index is not None and fields.has("idempotency_key"):
        own = fields.text("idempotency_key", IDEMPOTENCY_KEY_CHARS_MAX)
        key, part = idempotency_key(own, prefix + "idempotency_key"), None
    fingerprint = check_fingerprint(body.get("fingerprint"), prefix + "fingerprint")
    return ChargeRequest(tool, cost, fields.metadata(), key, part if key is not None else None,
                         index, task_field(fields), fingerprint)


def task_field(fields: Fields) -> str | None:
    """The optional ``task`` of a charge, batch item or hold: a task id (any other text is
    no task of the agent's: 404 when the call is made)."""
    return fields.text("task", TASK_ID_CHARS_MAX)
