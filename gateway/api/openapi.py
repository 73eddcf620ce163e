"""The OpenAPI 3.1 document: what the server accepts and answers, route by route.

Every schema here mirrors a check the server makes (gateway/api/*.py): a request the
schema accepts is never refused as invalid (422), and one it refuses is never acted on.
tests/test_schemathesis.py holds the two to each other from outside, and a test checks that
the document lists exactly the app's routes.

Amounts: the string pattern is built from IOU_AMOUNT_MAX, so "0" is refused where zero
is, and nothing above the maximum or with more than 6 decimals passes. JSON numbers are
read from their literal text (plain decimal notation only): the number form here starts
at 0.0001, since most serializers write smaller numbers with an exponent, which is
refused.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.ledger.entries import MONEY_KINDS
from gateway.metering import money

Schema = dict[str, Any]

NAME_PATTERN = "^[a-z0-9_.-]{1,64}$"
NAME: Schema = {"type": "string", "pattern": NAME_PATTERN,
                "description": "1 to 64 characters of a-z 0-9 - _ ."}
HOLD_ID: Schema = {"type": "string", "pattern": "^hold_[0-9a-f]{32}$"}
TASK_ID: Schema = {"type": "string", "pattern": "^task_[0-9a-f]{32}$",
                   "description": "one of the caller's tasks (any other id is 404 not_found)"}
# A tasks page's cursor: the last task's creation ms and id (gateway/metering/tasks.py).
TASK_CURSOR: Schema = {"type": "string",
                       "pattern": r"^(0|[1-9][0-9]{0,15})\.task_[0-9a-f]{32}$"}
TASK_TTL_S_MAX = 604_800
CALLS_MAX = 1_000_000_000
KEY_ID: Schema = {"type": "string", "pattern": "^key_[0-9a-f]{16}([0-9a-f]{16})?$"}
UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# An HTTP header value loses leading and trailing spaces on the way, so a key starts and
# ends with a visible character; inside, any printable ASCII (the server's rule).
IDEMPOTENCY_KEY_HEADER: Schema = {
    "type": "string", "pattern": "^[!-~]([ -~]{0,126}[!-~])?$",
    "description": "1 to 128 printable ASCII characters; retries with the same key and body "
                   "answer the first success and charge nothing more (24 h)"}
ITEM_IDEMPOTENCY_KEY: Schema = {"type": "string", "pattern": "^[ -~]{1,128}$"}
URL: Schema = {"type": "string", "maxLength": 2048, "pattern": "^https?://[!-~]+$",
               "description": "an http:// or https:// URL"}
# An upstream MCP server's name: no dot (its tools are offered as <server>.<tool>).
MCP_SERVER_NAME: Schema = {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$",
                           "description": "1 to 64 characters of a-z 0-9 - _ (no dot)"}
# Below 0.0001 most serializers write a number with an exponent, which is refused.
NUMBER_FORM_MIN_MICROS = 100
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def nullable(schema: Schema) -> Schema:
    """``schema`` or JSON null (the server reads null as "not given" there)."""
    return {"anyOf": [schema, {"type": "null"}]}


# ---- amounts -------------------------------------------------------------------------


def _digits_at_most(bound: str) -> str:
    """A regex for digit strings as long as ``bound`` whose value is at most ``bound``."""
    alternatives = []
    for i, digit in enumerate(bound):
        if digit != "0":
            rest = len(bound) - i - 1
            tail = f"[0-9]{{{rest}}}" if rest else ""
            alternatives.append(f"{bound[:i]}[0-{int(digit) - 1}]{tail}")
    alternatives.append(bound)
    return "(?:" + "|".join(alternatives) + ")"


def _whole_at_most(bound: int, *, from_one: bool) -> str | None:
    """A regex for whole numbers without leading zeros from 0 (or 1) to ``bound``; None when
    the range is empty."""
    low = 1 if from_one else 0
    if bound < low:
        return None
    text = str(bound)
    alternatives = [] if from_one else ["0"]
    for length in range(1, len(text)):
        alternatives.append("[1-9]" + (f"[0-9]{{{length - 1}}}" if length > 1 else ""))
    first = int(text[0])
    if first > 1:
        rest = len(text) - 1
        alternatives.append(f"[1-{first - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    alternatives.append(text[0] + (_digits_at_most(text[1:]) if len(text) > 1 else ""))
    return "(?:" + "|".join(alternatives) + ")"


def _fraction_at_most(fraction_micros: int) -> str:
    """A regex for an optional fraction (1 to 6 digits) worth at most ``fraction_micros``."""
    options = []
    for length in range(1, money.DECIMALS_MAX + 1):
        bound = fraction_micros // 10 ** (money.DECIMALS_MAX - length)
        options.append(_digits_at_most(str(bound).zfill(length)))
    return r"(?:\.(?:" + "|".join(options) + "))?"


ANY_FRACTION = r"(?:\.[0-9]{1,6})?"
# 1 to 6 decimals, at least one of them not 0.
NONZERO_FRACTION = r"\.(?:" + "|".join(
    f"{'0' * zeros}[1-9]" + (f"[0-9]{{0,{5 - zeros}}}" if zeros < 5 else "")
    for zeros in range(money.DECIMALS_MAX)) + ")"


def amount_pattern(max_micros: int, *, allow_zero: bool) -> str:
    """The decimal strings the server accepts as an amount up to ``max_micros``: ASCII digits,
    no sign, no leading zeros, at most 6 decimals, and above zero unless ``allow_zero``."""
    whole_max, fraction_max = divmod(max_micros, money.MICROS_PER_TOKEN)
    alternatives = []
    below = _whole_at_most(whole_max - 1, from_one=True)
    if below is not None:
        alternatives.append(below + ANY_FRACTION)
    if whole_max > 0:
        alternatives.append("0" + (ANY_FRACTION if allow_zero else NONZERO_FRACTION))
    alternatives.append(str(whole_max) + _fraction_at_most(fraction_max))
    return "^(?:" + "|".join(alternatives) + ")$"


def _tokens(micros: int) -> int | float:
    whole, fraction = divmod(micros, money.MICROS_PER_TOKEN)
    return whole if fraction == 0 else float(money.format_amount(micros))


def amount_text(max_micros: int, *, allow_zero: bool) -> Schema:
    """An amount as a decimal string (the form the contract prefers)."""
    text: Schema = {"type": "string", "pattern": amount_pattern(max_micros, allow_zero=allow_zero)}
    if max_micros < money.MICROS_PER_TOKEN and not allow_zero:
        # Below one token the pattern's only whole part is 0, zero included: refuse it here.
        text["not"] = {"pattern": r"^0(\.0+)?$"}
    return text


def amount_schema(max_micros: int, *, allow_zero: bool) -> Schema:
    """An amount in a body: a decimal string, or a JSON number written in plain decimals."""
    branches = [amount_text(max_micros, allow_zero=allow_zero)]
    if max_micros >= NUMBER_FORM_MIN_MICROS:
        branches.append({"type": "number", "minimum": NUMBER_FORM_MIN_MICROS / 1_000_000,
                         "maximum": _tokens(max_micros), "multipleOf": 0.000001})
    if allow_zero:
        branches.append({"const": 0})
    return {"anyOf": branches, "description": (
        "IOU tokens as a decimal string (at most 6 decimals, at most "
        f"{money.format_amount(max_micros)}{'' if allow_zero else ', above 0'}); a JSON "
        "number in plain decimal notation (no exponent) is read the same way")}


AMOUNT_OUT: Schema = {"type": "string", "pattern": r"^(0|[1-9][0-9]*)(\.[0-9]{0,5}[1-9])?$",
                      "description": "IOU tokens, trailing zeros trimmed"}
SIGNED_AMOUNT_OUT: Schema = {"type": "string",
                             "pattern": r"^-?(0|[1-9][0-9]*)(\.[0-9]{0,5}[1-9])?$"}
TIME_OUT: Schema = {"type": "string", "format": "date-time"}

# ---- kept JSON (metadata) ------------------------------------------------------------

NO_NUL: Schema = {"type": "string", "pattern": "^[^\\u0000]*$"}
METADATA_DESCRIPTION = (
    "Any JSON object kept with the entry, at most 2048 bytes as compact JSON and nested at "
    "most 32 levels; no NUL character in its strings or keys, integers within 64 bits, "
    "numbers of at most 40 characters that a double can hold")
COMPONENT_SCHEMAS: dict[str, Schema] = {
    "JsonObject": {"type": "object", "propertyNames": NO_NUL,
                   "additionalProperties": {"$ref": "#/components/schemas/JsonValue"}},
    "JsonValue": {"anyOf": [
        {"type": "null"}, {"type": "boolean"}, NO_NUL,
        {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
        {"type": "number", "minimum": -1e15, "maximum": 1e15},
        {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
        {"$ref": "#/components/schemas/JsonObject"}]},
}
METADATA: Schema = {"anyOf": [{"$ref": "#/components/schemas/JsonObject"}, {"type": "null"}],
                    "description": METADATA_DESCRIPTION}


FINGERPRINT: Schema = {
    "type": ["string", "null"], "maxLength": 128,
    "description": "the call's arguments for the loop breaker (default: its metadata)"}
LOOP_IN: Schema = {
    "type": "object", "additionalProperties": False, "required": ["repeats", "window_s"],
    "properties": {"repeats": {"type": "integer", "minimum": 1, "maximum": 1000},
                   "window_s": {"type": "integer", "minimum": 1, "maximum": 86400},
                   "action": {"enum": ["refuse", "freeze", None],
                              "description": "refuse (the default) or freeze"}},
    "description": "the loop breaker: the same tool with the same arguments more than "
                   "repeats times within window_s is refused (429 loop_detected)"}


def _closed(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    """An object body that refuses unknown fields (the server answers 422 for them)."""
    schema: Schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


# The admin's words on a refund or debit: 1 to 256 characters, no control characters.
REASON: Schema = {"type": "string", "pattern": "^[^\\x00-\\x1f\\x7f]{1,256}$"}
EMPTY_BODY: Schema = {"type": "object", "maxProperties": 0,
                      "description": "no body, or an empty JSON object"}


def request_bodies(max_micros: int) -> dict[tuple[str, str], tuple[Schema, bool]]:
    """(method, path) -> (body schema, whether a body is required)."""
    positive = amount_schema(max_micros, allow_zero=False)
    zero_ok = amount_schema(max_micros, allow_zero=True)
    charge_fields = {"tool": NAME, "cost": nullable(zero_ok), "metadata": METADATA,
                     "task": nullable(TASK_ID), "fingerprint": FINGERPRINT}
    caps = nullable(positive)
    count = nullable({"type": "integer", "minimum": 1, "maximum": CALLS_MAX})
    calls = nullable(_closed({"per_minute": count, "per_hour": count, "per_day": count}))
    spend = {"per_call": caps, "daily": caps, "hourly": caps, "weekly": caps, "monthly": caps}
    category_caps = nullable(_closed({**spend, "calls": calls}))
    tool_caps = nullable(_closed({"per_call": caps, "calls": calls}))
    # The caps every limits object may hold (the agent's own, per category, per tool).
    walls = {**spend, "calls": calls, "require_task": nullable({"type": "boolean"}),
             "categories": nullable({"type": "object", "propertyNames": NAME,
                                     "additionalProperties": category_caps}),
             "tools": nullable({"type": "object", "propertyNames": NAME,
                                "additionalProperties": tool_caps})}
    limits = _closed({**walls, "low_balance": nullable(zero_ok),
                      "webhook_url": nullable(URL), "loop": nullable(LOOP_IN)})
    # Shadow limits: the caps and require_task, evaluated on every call, never refusing.
    shadow = _closed(walls)
    limits_patch = {**limits, "properties": {**limits["properties"],
                                             "shadow": nullable(shadow)}}
    upstream_headers = nullable({
        "type": "object", "maxProperties": 16,
        "propertyNames": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$"},
        "additionalProperties": {"type": "string", "maxLength": 4096, "pattern": "^[ -~]*$"}})
    batch_item = _closed({**charge_fields, "idempotency_key": nullable(ITEM_IDEMPOTENCY_KEY)},
                         ("tool",))
    return {
        ("POST", "/v1/charge"): (_closed(charge_fields, ("tool",)), True),
        ("POST", "/v1/charges"): (_closed({"charges": {
            "type": "array", "minItems": 1, "maxItems": 1000, "items": batch_item}},
            ("charges",)), True),
        ("POST", "/v1/holds"): (_closed({
            "tool": NAME, "max_cost": caps,
            "ttl_s": nullable({"type": "integer", "minimum": 1, "maximum": 3600}),
            "metadata": METADATA, "task": nullable(TASK_ID),
            "fingerprint": FINGERPRINT}, ("tool",)), True),
        ("POST", "/v1/tasks"): (_closed({
            "budget": positive,
            "name": nullable({"type": "string", "pattern": "^[ -~]{1,128}$"}),
            "ttl_s": nullable({"type": "integer", "minimum": 1, "maximum": TASK_TTL_S_MAX}),
            "max_calls": nullable({"type": "object", "maxProperties": 64, "propertyNames": NAME,
                                   "additionalProperties": {"type": "integer", "minimum": 1,
                                                            "maximum": CALLS_MAX}})},
            ("budget",)), True),
        ("POST", "/v1/tasks/{task_id}/close"): (EMPTY_BODY, False),
        ("POST", "/v1/holds/{hold_id}/capture"): (_closed({"cost": nullable(zero_ok),
                                                           "metadata": METADATA}), False),
        ("POST", "/v1/holds/{hold_id}/release"): (EMPTY_BODY, False),
        ("POST", "/v1/agents"): (_closed({"name": NAME, "grant": nullable(zero_ok)},
                                         ("name",)), True),
        ("POST", "/v1/agents/{agent}/fund"): (_closed({"amount": positive,
                                                       "metadata": METADATA}, ("amount",)),
                                              True),
        ("PATCH", "/v1/agents/{agent}/limits"): (limits_patch, True),
        ("POST", "/v1/charges/{charge_id}/refund"): (_closed({
            "amount": nullable(positive), "reason": nullable(REASON)}), False),
        ("POST", "/v1/agents/{agent}/debit"): (_closed({"amount": positive, "reason": REASON},
                                                       ("amount", "reason")), True),
        ("POST", "/v1/agents/{agent}/children"): (_closed({
            "name": NAME, "amount": positive, "limits": nullable(limits_patch)},
            ("name", "amount")), True),
        ("POST", "/v1/agents/{agent}/reclaim"): (_closed({"amount": nullable(positive)}),
                                                 False),
        ("POST", "/v1/agents/{agent}/freeze"): (EMPTY_BODY, False),
        ("POST", "/v1/agents/{agent}/unfreeze"): (EMPTY_BODY, False),
        ("POST", "/v1/agents/{agent}/keys"): (EMPTY_BODY, False),
        ("PUT", "/v1/tools/{tool}"): (_closed({
            "price": zero_ok, "category": NAME,
            "pricing": {"enum": ["fixed", "variable", None],
                        "description": "fixed (the default) or variable"},
            "upstream": nullable(URL), "upstream_headers": upstream_headers},
            ("price", "category")), True),
        ("PUT", "/v1/mcp/servers/{server}"): (_closed({
            "url": URL, "headers": upstream_headers}, ("url",)), True),
    }


# ---- answers -------------------------------------------------------------------------


def _answer(properties: dict[str, Schema], required: tuple[str, ...] | None = None) -> Schema:
    """A response object: the fields listed are always there; more may come in time."""
    return {"type": "object", "properties": properties,
            "required": list(properties if required is None else required)}


WARNINGS: Schema = {"type": "array", "items": {"type": "string"},
                    "description": "low_balance, daily_near, hourly_near, weekly_near, "
                                   "monthly_near, calls_near"}
LIMITS_OUT = _answer({
    "per_call": nullable(AMOUNT_OUT), "daily": nullable(AMOUNT_OUT),
    "categories": {"type": "object", "additionalProperties": _answer(
        {"per_call": AMOUNT_OUT, "daily": AMOUNT_OUT}, ())},
    "low_balance": nullable(AMOUNT_OUT), "webhook_url": nullable({"type": "string"}),
    "require_task": {"type": "boolean"},
    "loop": _answer({"repeats": {"type": "integer"}, "window_s": {"type": "integer"},
                     "action": {"enum": ["refuse", "freeze"]}}),
    "shadow": {"type": "object", "description": "shadow limits (shown when set): the same "
                                                "caps, evaluated on every call, never refusing"}},
    ("per_call", "daily", "categories", "low_balance", "webhook_url"))
COUNTS: Schema = {"type": "object", "additionalProperties": {"type": "integer"}}
TASK_OUT = _answer({
    "task_id": TASK_ID, "name": nullable({"type": "string"}), "budget": AMOUNT_OUT,
    "spent": AMOUNT_OUT, "held": AMOUNT_OUT, "calls": {"type": "integer"},
    "remaining": AMOUNT_OUT, "state": {"enum": ["open", "closed", "expired"]},
    "created_at": TIME_OUT, "expires_at": TIME_OUT, "closed_at": nullable(TIME_OUT),
    "max_calls": COUNTS, "spent_by_tool": {"type": "object", "additionalProperties": AMOUNT_OUT},
    "spent_by_category": {"type": "object", "additionalProperties": AMOUNT_OUT},
    "calls_by_tool": COUNTS, "calls_by_category": COUNTS})
SPEND_USED = _answer({"used": AMOUNT_OUT, "max": AMOUNT_OUT})
CALLS_USED = _answer({"used": {"type": "integer"}, "max": {"type": "integer"}})
CALL_WALLS_OUT = _answer({"per_minute": CALLS_USED, "per_hour": CALLS_USED,
                          "per_day": CALLS_USED}, ())
SPEND_WALLS_OUT = {"hourly": SPEND_USED, "weekly": SPEND_USED, "monthly": SPEND_USED}
WALLS_OUT: Schema = {**_answer({
    **SPEND_WALLS_OUT, "calls": CALL_WALLS_OUT,
    "categories": {"type": "object", "additionalProperties": _answer(
        {**SPEND_WALLS_OUT, "calls": CALL_WALLS_OUT}, ())},
    "tools": {"type": "object", "additionalProperties": _answer({"calls": CALL_WALLS_OUT})}},
    ()), "description": "Each wall beyond the balance the limits set, with what it holds now "
                        "(spend walls: spent and held; call walls: calls) and its cap"}
AGENT_SUMMARY = {"agent": NAME, "balance": AMOUNT_OUT, "held": AMOUNT_OUT,
                 "spent_today": AMOUNT_OUT, "frozen": {"type": "boolean"}}
KEY_SHOWN = {"key_id": KEY_ID, "api_key": nullable({"type": "string", "pattern": "^iou_"}),
             "api_key_note": {"type": "string"}}
TOOL_OUT = _answer({"tool": NAME, "price": AMOUNT_OUT, "category": NAME,
                    "pricing": {"enum": ["fixed", "variable"]},
                    "upstream": nullable({"type": "string"}),
                    "upstream_headers_set": {"type": "boolean"}})
ENTRY_OUT = _answer({
    "entry_id": {"type": "string", "pattern": UUID_PATTERN}, "at": TIME_OUT,
    "kind": {"type": "string"}, "tool": nullable({"type": "string"}),
    "category": nullable({"type": "string"}), "amount": nullable(SIGNED_AMOUNT_OUT),
    "held": nullable(AMOUNT_OUT), "balance_after": nullable(SIGNED_AMOUNT_OUT),
    "idempotency_key": nullable({"type": "string"}), "hold_id": nullable({"type": "string"}),
    "metadata": {"type": ["object", "null"]}, "ref": nullable({"type": "string"}),
    "reason": nullable({"type": "string"}), "task": nullable({"type": "string"}),
    "shadow_refusal": nullable({"type": "string"})})
USAGE_OUT = _answer({
    "agent": nullable(NAME), "by": {"enum": ["tool", "category"]},
    "period": {"enum": ["hour", "day"]}, "since": TIME_OUT, "until": TIME_OUT,
    "rows": {"type": "array", "items": _answer(
        {"start": TIME_OUT, "calls": {"type": "integer"}, "amount": AMOUNT_OUT})},
    "totals": {"type": "array", "items": _answer(
        {"calls": {"type": "integer"}, "amount": AMOUNT_OUT})},
    "total": _answer({"calls": {"type": "integer"}, "amount": AMOUNT_OUT})})
RECEIPT: Schema = {"type": "string", "pattern": r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
                   "description": "a JWS (compact, alg EdDSA) over {charge_id, agent, tool, "
                                  "cost, balance_after, at, task}; check it against "
                                  "GET /v1/receipts/keys"}
CHARGE_OUT = _answer({"charge_id": {"type": "string"}, "tool": NAME, "category": NAME,
                      "cost": AMOUNT_OUT, "balance": AMOUNT_OUT, "warnings": WARNINGS,
                      "receipt": RECEIPT},
                     ("charge_id", "tool", "category", "cost", "balance", "warnings"))
JWKS_OUT = _answer({"keys": {"type": "array", "items": _answer({
    "kty": {"const": "OKP"}, "crv": {"const": "Ed25519"}, "x": {"type": "string"},
    "kid": {"type": "string"}, "alg": {"const": "EdDSA"}, "use": {"const": "sig"}})}})
ERROR: Schema = {
    "type": "object", "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"},
                   "field": {"type": "string"}, "reason": {"type": "string"}},
    "description": "The contract's error: a code (invalid_request, malformed_json, "
                   "unauthorized, forbidden, not_found, balance_insufficient, "
                   "limit_exceeded, agent_frozen, rate_limited, unavailable, ...), one human "
                   "sentence, and details (field and reason on invalid_request)"}
READINESS = _answer({"ready": {"type": "boolean"}, "checks": {"type": "object"}})
MCP_SERVER_OUT = _answer({"server": MCP_SERVER_NAME, "url": {"type": "string"},
                          "tools": {"type": "array", "items": {"type": "string"},
                                    "description": "the upstream's tool names"},
                          "updated_at": TIME_OUT})

# (method, path) -> (status, answer schema); None: no body (204) or not JSON.
ANSWERS: dict[tuple[str, str], tuple[int, Schema | None]] = {
    ("POST", "/v1/charge"): (200, CHARGE_OUT),
    ("POST", "/v1/charges"): (200, _answer({"results": {"type": "array", "items": {
        "anyOf": [CHARGE_OUT, {"$ref": "#/components/schemas/Error"}]}}})),
    ("POST", "/v1/holds"): (201, _answer({
        "hold_id": HOLD_ID, "tool": NAME, "amount": AMOUNT_OUT, "expires_at": TIME_OUT,
        "balance": AMOUNT_OUT, "warnings": WARNINGS})),
    ("POST", "/v1/holds/{hold_id}/capture"): (200, _answer({
        "charge_id": {"type": "string"}, "cost": AMOUNT_OUT, "released": AMOUNT_OUT,
        "balance": AMOUNT_OUT, "warnings": WARNINGS, "receipt": nullable(RECEIPT)},
        ("charge_id", "cost", "released", "balance", "warnings"))),
    ("GET", "/v1/receipts/keys"): (200, JWKS_OUT),
    ("GET", "/v1/ledger/heads"): (200, _answer({"heads": {"type": "array", "items": _answer({
        "stream": {"type": "string"}, "head_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "head_entry_id": {"type": "string"}, "rows": {"type": "integer"}})}})),
    ("GET", "/v1/receipts/{charge_id}"): (200, _answer({"charge_id": {"type": "string"},
                                                        "receipt": RECEIPT})),
    ("POST", "/v1/holds/{hold_id}/release"): (200, _answer({"released": AMOUNT_OUT,
                                                            "balance": AMOUNT_OUT})),
    ("POST", "/v1/tasks"): (201, TASK_OUT),
    ("GET", "/v1/tasks/{task_id}"): (200, TASK_OUT),
    ("POST", "/v1/tasks/{task_id}/close"): (200, _answer({
        **TASK_OUT["properties"], "holds_released": {"type": "integer"}})),
    ("GET", "/v1/agents/{agent}/tasks"): (200, _answer({
        "agent": NAME, "tasks": {"type": "array", "items": TASK_OUT},
        "next_cursor": nullable(TASK_CURSOR)})),
    ("GET", "/v1/balance"): (200, _answer({
        "agent": NAME, "balance": AMOUNT_OUT, "held": AMOUNT_OUT, "spent_today": AMOUNT_OUT,
        "limits": LIMITS_OUT, "warnings": WARNINGS})),
    ("POST", "/v1/agents"): (201, _answer({"agent": NAME, **KEY_SHOWN, "balance": AMOUNT_OUT},
                                          ("agent", "key_id", "api_key", "balance"))),
    ("GET", "/v1/agents"): (200, _answer({
        "agents": {"type": "array", "items": _answer(AGENT_SUMMARY)},
        "next_cursor": nullable(NAME)})),
    ("GET", "/v1/agents/{agent}"): (200, _answer({
        **AGENT_SUMMARY, "limits": LIMITS_OUT, "created_at": TIME_OUT, "warnings": WARNINGS,
        "parent": nullable(NAME), "walls": WALLS_OUT,
        "spent_today_by_category": {"type": "object", "additionalProperties": AMOUNT_OUT}})),
    ("POST", "/v1/agents/{agent}/fund"): (200, _answer({
        "agent": NAME, "balance": AMOUNT_OUT, "entry_id": {"type": "string"}})),
    ("POST", "/v1/agents/{agent}/debit"): (200, _answer({
        "agent": NAME, "amount": AMOUNT_OUT, "balance": AMOUNT_OUT,
        "entry_id": {"type": "string"}})),
    ("POST", "/v1/agents/{agent}/children"): (201, _answer({
        "agent": NAME, "parent": NAME, **KEY_SHOWN, "balance": AMOUNT_OUT,
        "parent_balance": AMOUNT_OUT}, ("agent", "parent", "key_id", "api_key", "balance"))),
    ("GET", "/v1/agents/{agent}/children"): (200, _answer({
        "agent": NAME, "parent": nullable(NAME),
        "children": {"type": "array", "items": _answer(AGENT_SUMMARY)}})),
    ("POST", "/v1/agents/{agent}/reclaim"): (200, _answer({
        "agent": NAME, "parent": NAME, "amount": AMOUNT_OUT, "balance": AMOUNT_OUT,
        "entry_id": nullable({"type": "string"})})),
    ("POST", "/v1/charges/{charge_id}/refund"): (200, _answer({
        "refund_id": {"type": "string"}, "charge_id": {"type": "string"}, "agent": NAME,
        "amount": AMOUNT_OUT, "balance": AMOUNT_OUT})),
    ("GET", "/v1/agents/{agent}/limits"): (200, LIMITS_OUT),
    ("PATCH", "/v1/agents/{agent}/limits"): (200, LIMITS_OUT),
    ("POST", "/v1/agents/{agent}/freeze"): (200, _answer({"agent": NAME,
                                                          "frozen": {"type": "boolean"}})),
    ("POST", "/v1/agents/{agent}/unfreeze"): (200, _answer({"agent": NAME,
                                                            "frozen": {"type": "boolean"}})),
    ("POST", "/v1/agents/{agent}/keys"): (201, _answer(KEY_SHOWN, ("key_id", "api_key"))),
    ("GET", "/v1/agents/{agent}/keys"): (200, _answer({"keys": {"type": "array", "items": _answer({
        "key_id": KEY_ID, "created_at": nullable(TIME_OUT),
        "last_used_at": nullable(TIME_OUT)})}})),
    ("DELETE", "/v1/agents/{agent}/keys/{key_id}"): (204, None),
    ("GET", "/v1/agents/{agent}/ledger"): (200, _answer({
        "entries": {"type": "array", "items": ENTRY_OUT},
        "next_cursor": nullable({"type": "string", "pattern": UUID_PATTERN})})),
    ("GET", "/v1/agents/{agent}/usage"): (200, USAGE_OUT),
    ("GET", "/v1/usage"): (200, USAGE_OUT),
    ("GET", "/v1/agents/{agent}/shadow"): (200, _answer({
        "agent": NAME,
        "refusals": {"type": "object", "additionalProperties": _answer(
            {"count": {"type": "integer"}, "amount": AMOUNT_OUT})},
        "total": _answer({"count": {"type": "integer"}, "amount": AMOUNT_OUT})})),
    ("GET", "/v1/summary"): (200, _answer({
        "agents": {"type": "array", "items": _answer({
            **AGENT_SUMMARY, "low_balance": nullable(AMOUNT_OUT),
            "daily": nullable(AMOUNT_OUT)})},
        "next_cursor": nullable({"type": "string"}), "position": {"type": "integer"},
        "matched": {"type": "integer"}, "sort": {"type": "string"},
        "order": {"enum": ["asc", "desc"]}, "as_of": TIME_OUT,
        "totals": _answer({"agents": {"type": "integer"}, "balance": AMOUNT_OUT,
                           "held": AMOUNT_OUT, "spent_today": AMOUNT_OUT,
                           "frozen": {"type": "integer"}})})),
    ("PUT", "/v1/tools/{tool}"): (200, TOOL_OUT),
    ("GET", "/v1/tools"): (200, _answer({"tools": {"type": "array", "items": TOOL_OUT}})),
    ("DELETE", "/v1/tools/{tool}"): (204, None),
    ("PUT", "/v1/mcp/servers/{server}"): (200, MCP_SERVER_OUT),
    ("GET", "/v1/mcp/servers/{server}"): (200, MCP_SERVER_OUT),
    ("GET", "/v1/mcp/servers"): (200, _answer({"servers": {"type": "array",
                                                           "items": MCP_SERVER_OUT}})),
    ("DELETE", "/v1/mcp/servers/{server}"): (204, None),
    ("GET", "/healthz"): (200, _answer({"status": {"const": "ok"}})),
    ("GET", "/readyz"): (200, READINESS),
    ("GET", "/openapi.json"): (200, _answer({"openapi": {"type": "string"},
                                             "paths": {"type": "object"}})),
}

# ---- routes --------------------------------------------------------------------------

# (method, path, summary, who may call it)
ROUTE_SPECS: list[tuple[str, str, str, str]] = [
    ("POST", "/v1/charge", "Charge one tool call", "agent"),
    ("POST", "/v1/charges", "Charge up to 1,000 calls in one request", "agent"),
    ("POST", "/v1/holds", "Hold a tool's price, or up to max_cost for a variable-cost call",
     "agent"),
    ("POST", "/v1/holds/{hold_id}/capture", "Capture a hold at the actual cost", "agent"),
    ("POST", "/v1/holds/{hold_id}/release", "Release a hold", "agent"),
    ("GET", "/v1/balance", "The caller's balance, held, spent today, limits", "agent"),
    ("POST", "/v1/tasks", "Open a task: a budget envelope that calls naming it count against",
     "agent"),
    ("GET", "/v1/tasks/{task_id}", "One of the caller's tasks with its summary", "agent"),
    ("POST", "/v1/tasks/{task_id}/close", "Close a task (its open holds are released); "
     "answers its summary", "agent"),
    ("GET", "/v1/agents/{agent}/tasks", "The agent's recent tasks, newest first (limit, cursor)",
     "admin|agent"),
    ("POST", "/v1/tools/{tool}/invoke", "Call a tool's upstream through the gateway", "agent"),
    ("GET", "/v1/receipts/keys", "The public keys that check receipts (JWKS)", "none"),
    ("GET", "/v1/receipts/{charge_id}", "A signed receipt for a charge or capture of the "
     "ledger", "admin|agent"),
    ("POST", "/v1/agents", "Create an agent (grant defaults to IOU_SIGNUP_GRANT)", "admin"),
    ("GET", "/v1/agents", "List agents (limit, cursor)", "admin"),
    ("GET", "/v1/agents/{agent}", "One agent with its limits", "admin"),
    ("POST", "/v1/agents/{agent}/fund", "Add tokens", "admin"),
    ("POST", "/v1/agents/{agent}/debit", "Take tokens back (never below the available "
     "balance: 402)", "admin"),
    ("POST", "/v1/charges/{charge_id}/refund", "Refund a charge, partly or whole", "admin"),
    ("POST", "/v1/agents/{agent}/children", "Create a sub-agent funded from the agent's "
     "balance (its key is shown once)", "admin|agent"),
    ("GET", "/v1/agents/{agent}/children", "The agent's parent and sub-agents (at most "
     "1,000)", "admin|agent"),
    ("POST", "/v1/agents/{agent}/reclaim", "Move what a sub-agent has left back to its "
     "parent", "admin|agent"),
    ("GET", "/v1/agents/{agent}/limits", "The agent's limits", "admin"),
    ("PATCH", "/v1/agents/{agent}/limits", "Merge limits; null removes one", "admin"),
    ("POST", "/v1/agents/{agent}/freeze", "Freeze: paid calls are refused", "admin"),
    ("POST", "/v1/agents/{agent}/unfreeze", "Unfreeze", "admin"),
    ("POST", "/v1/agents/{agent}/keys", "A further agent key (shown once)", "admin"),
    ("GET", "/v1/agents/{agent}/keys", "The agent's key ids, created and last used",
     "admin|agent"),
    ("DELETE", "/v1/agents/{agent}/keys/{key_id}", "Revoke a key", "admin"),
    ("GET", "/v1/agents/{agent}/ledger", "The ledger, newest first (limit, before, kind, tool)",
     "admin"),
    ("GET", "/v1/ledger/heads", "The head hash of each partition's ledger chain, to publish "
     "elsewhere (iou verify recomputes the chains)", "admin"),
    ("GET", "/v1/agents/{agent}/usage",
     "Spending by tool or category per hour or day, from the ledger (by, period, since, "
     "until)", "admin|agent"),
    ("GET", "/v1/agents/{agent}/shadow", "What the agent's shadow limits would have refused, "
     "by limit (count and amount)", "admin|agent"),
    ("GET", "/v1/usage", "Every agent's spending, or one's with agent= (by, period, since, "
     "until, agent)", "admin"),
    ("GET", "/v1/summary", "The agents table: paged, sorted and filtered, with totals "
     "(limit, cursor, sort, order, q, frozen)", "admin"),
    ("PUT", "/v1/tools/{tool}", "Create or replace a catalog entry", "admin"),
    ("GET", "/v1/tools", "The price catalog", "admin"),
    ("DELETE", "/v1/tools/{tool}", "Remove a catalog entry", "admin"),
    ("PUT", "/v1/mcp/servers/{server}", "Register an upstream MCP server (lists its tools)",
     "admin"),
    ("GET", "/v1/mcp/servers", "The upstream MCP servers", "admin"),
    ("GET", "/v1/mcp/servers/{server}", "One upstream MCP server and its tools", "admin"),
    ("DELETE", "/v1/mcp/servers/{server}", "Remove an upstream MCP server", "admin"),
    ("GET", "/", "Leads to the dashboard", "none"),
    ("GET", "/healthz", "Process up", "none"),
    ("GET", "/readyz", "Redis, scripts, the store's identity and ledger lag", "none"),
    ("GET", "/metrics", "Prometheus metrics", "none"),
    ("GET", "/openapi.json", "This document", "none"),
    ("GET", "/dashboard", "The operators' web page (redirects to /dashboard/)", "none"),
]

PATH_PARAMETERS: dict[str, Schema] = {"agent": NAME, "tool": NAME, "hold_id": HOLD_ID,
                                      "key_id": KEY_ID, "server": MCP_SERVER_NAME,
                                      "task_id": TASK_ID,
                                      "charge_id": {"type": "string", "pattern": UUID_PATTERN}}
PAGE_LIMIT: Schema = {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
# An ISO 8601 time with a zone, or a date (midnight UTC), as the usage routes read them.
USAGE_TIME: Schema = {"type": "string", "pattern": (
    r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?(Z|[+-](0[0-9]|1[0-3]):00))?$"),
    "description": "2026-11-29T10:00:00Z or 2026-11-29 (days 29 to 31 are accepted too)"}
USAGE_PARAMETERS: list[tuple[str, Schema, str]] = [
    ("by", {"enum": ["tool", "category"], "default": "tool"}, "one row per tool or category"),
    ("period", {"enum": ["hour", "day"], "default": "hour"}, "the width of a bucket"),
    ("since", USAGE_TIME, "the first bucket (rounded down to the period; default: 24 hours "
     "or 30 days before until); since must be before until, and the range at most 31 days "
     "of hours or 366 days (422 on since otherwise)"),
    ("until", USAGE_TIME, "the end (rounded up to the period; default: now)")]
QUERY_PARAMETERS: dict[tuple[str, str], list[tuple[str, Schema, str]]] = {
    ("GET", "/v1/agents/{agent}/tasks"): [
        ("limit", PAGE_LIMIT, "tasks per page"),
        ("cursor", TASK_CURSOR, "next_cursor of the previous page: the tasks after it")],
    ("GET", "/v1/agents"): [
        ("limit", PAGE_LIMIT, "agents per page"),
        ("cursor", NAME, "next_cursor of the previous page")],
    ("GET", "/v1/agents/{agent}/ledger"): [
        ("limit", PAGE_LIMIT, "entries per page"),
        ("before", {"type": "string", "pattern": UUID_PATTERN},
         "next_cursor of the previous page: entries older than this entry_id"),
        ("kind", {"enum": sorted(MONEY_KINDS)}, "only entries of this kind"),
        ("tool", NAME, "only entries of this tool")],
    ("GET", "/v1/agents/{agent}/usage"): USAGE_PARAMETERS,
    ("GET", "/v1/usage"): [*USAGE_PARAMETERS, ("agent", NAME, "only this agent's spending")],
    ("GET", "/v1/summary"): [
        ("limit", {**PAGE_LIMIT, "default": 50}, "agents per page"),
        ("cursor", {"type": "string", "pattern": r"^(0|[1-9][0-9]{0,17})\.[a-z0-9_.-]{1,64}$"},
         "next_cursor of the previous page (same sort and order)"),
        ("sort", {"enum": ["agent", "balance", "held", "spent_today"], "default": "agent"},
         "numbers sort as numbers, ties by name"),
        ("order", {"enum": ["asc", "desc"], "default": "asc"}, "ascending or descending"),
        ("q", {"type": "string", "pattern": "^[a-z0-9_.-]{0,64}$"}, "part of an agent name"),
        ("frozen", {"enum": ["true", "false"]}, "only frozen (true) or unfrozen agents")],
}

# Rules of a route beyond its summary, shown as the operation's description.
_KEY_SHOWN_ONCE = (
    " The key is shown once: it is stored only as a hash, so a retry with the same "
    "Idempotency-Key (replayed, `Idempotent-Replayed: true`) answers the same status and body "
    "with `\"api_key\": null` and an `api_key_note`; make a new key with POST "
    "/v1/agents/{agent}/keys. A retry after a crash never creates a second one.")
DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("GET", "/v1/receipts/{charge_id}"):
        "Signs a receipt for a charge or capture from the ledger (the agent's own key or "
        "the admin): the same claims as the receipt its answer carried. A charge reaches "
        "the ledger within about a second; before that it is 404.",
    ("GET", "/v1/receipts/keys"):
        "Every key that signed receipts (a rotated-out key stays listed, so its receipts "
        "still verify); no authentication, cacheable.",
    ("POST", "/v1/charge"):
        "The catalog price is what a call costs: cost is accepted only for tools priced "
        "variable (422 invalid_request, field cost, otherwise). A price or category change "
        "applies to every call answered after its PUT returned.",
    ("POST", "/v1/holds"):
        "A hold on a fixed-price tool holds exactly its price: max_cost may be omitted; "
        "below the price is 422 invalid_request (field max_cost); above it, the hold is "
        "exactly the price (see amount in the answer). A variable tool holds max_cost, by "
        "default its catalog price.",
    ("PUT", "/v1/tools/{tool}"):
        "Answers once every partition's copy of the catalog has the change: every charge, "
        "hold or capture answered after this PUT returned uses the new price, category and "
        "pricing, on every worker.",
    ("POST", "/v1/holds/{hold_id}/capture"):
        "cost is required for a variable hold (at most the held amount). A hold on a "
        "fixed-price tool charges exactly its held price: omit cost or give exactly that "
        "amount; any other cost is 422 invalid_request (field cost). "
        "A capture is checked against the daily window it lands in: a hold taken on an "
        "earlier UTC day is not counted in today's window, so its cost must fit today's "
        "daily and category daily caps, else 429 limit_exceeded (limit daily or "
        "category_daily) with Retry-After; nothing is written and the hold stays open "
        "until captured at a cost that fits, released or expired.",
    ("POST", "/v1/charges"): (
        "A request whose items do not all match the item schema (unknown field, wrong type, "
        "malformed amount) is refused whole: 422 invalid_request naming `charges[i].field`, "
        "nothing charged. Otherwise each item answers its charge or its own refusal "
        "(not_found, balance_insufficient, limit_exceeded, ...) in order. "
        "With an Idempotency-Key the batch is exactly-once as a whole: the key is bound to "
        "this body for 24 h (another body with it is 409 idempotency_conflict; not kept when "
        "every item was refused) and each item "
        "is charged under a key derived from the batch's key and its index (shown in the "
        "ledger as `<key>\u00b7<index>`; no client-chosen key can equal it), unless it "
        "carries its own `idempotency_key`. A retry runs every item again: an item charged "
        "before answers its first answer without being charged again, a refused item is "
        "evaluated again. An item that fails inside the gateway is that item's error object "
        "(`internal`), never a failed batch."),
    ("POST", "/v1/tools/{tool}/invoke"): (
        "The body (any media type) and the query string go to the tool's upstream as they "
        "are; the upstream's status and body come back, with X-IOU-Balance and, once "
        "charged, X-IOU-Charge-Id. A tool without an upstream is 404. "
        "With an Idempotency-Key the call is charged once: a retry while the first is still "
        "running is 409; once the upstream answered, its answer is kept and replayed, also "
        "when the gateway stopped between the upstream's answer and the capture. "
        "A fixed-price tool is held and captured at its catalog price (X-IOU-Max-Cost is "
        "only for tools priced variable, and required for them: the hold's ceiling; the "
        "upstream's X-IOU-Cost, up to it, is captured)."),
    ("PUT", "/v1/mcp/servers/{server}"): (
        "The gateway connects to the upstream (streamable HTTP) with the headers and lists "
        "its tools before storing anything: an upstream that cannot be reached or refuses "
        "is 502 upstream_unavailable (504 upstream_timeout when it does not answer within "
        "IOU_UPSTREAM_TIMEOUT_S), nothing stored. The headers hold the upstream's secrets: "
        "stored encrypted with IOU_SECRET_KEY, never shown again. The upstream's tools are "
        "offered to agents at /mcp (the MCP endpoint, not described here: see docs/api.md) "
        "as <server>.<tool> when the catalog has an entry of that name; PUT again to list "
        "them anew."),
    ("POST", "/v1/tasks"): (
        "A task is a cap, not money set aside: the balance still pays. A charge, batch item, "
        "hold or invoke (header X-IOU-Task) naming the task counts against it: spent + held + "
        "cost above the budget is 403 limit_exceeded (limit task_budget); a call over "
        "max_calls (per tool or category name; free calls count) is 403 limit_exceeded "
        "(limit task_calls); a closed or expired task is 409 task_closed; another agent's "
        "task is 404. ttl_s defaults to 3600 (at most 604800); the task is kept a day after "
        "it closes or expires. The limit require_task makes paid calls without a task 403 "
        "limit_exceeded (limit task_required)."),
    ("POST", "/v1/tasks/{task_id}/close"):
        "Releases every hold still open under the task and marks it closed; closing a "
        "closed task answers its summary again (holds_released 0).",
    ("POST", "/v1/agents"): "Creates the agent and its first key." + _KEY_SHOWN_ONCE,
    ("POST", "/v1/agents/{agent}/keys"): "Adds a further key." + _KEY_SHOWN_ONCE,
    ("GET", "/v1/agents/{agent}/keys"):
        "The admin token, or the agent's own key (another agent's key is 403). Answers "
        '{"keys": [{"key_id", "created_at", "last_used_at"}]}, oldest first; never a key '
        "nor its hash. last_used_at is recorded at most once a minute per key and gateway "
        "worker (no Redis write per request), so it is exact to about a minute; null when "
        "never used.",
    ("GET", "/v1/agents/{agent}/ledger"):
        "An unknown or repeated query parameter is 422 (a typo never widens the page).",
    ("POST", "/v1/charges/{charge_id}/refund"): (
        "charge_id is a charge's, a batch item's or a capture's charge_id. amount defaults "
        "to what is left to refund; refunds of one charge never add up to more than it "
        "cost (422 invalid_request, field amount). The amount goes back to the balance and, "
        "while the charge is in the current window, to that window's spending (daily, "
        "rolling hour, week, month), and to its task while the task is open. A charge "
        "answered a moment ago is found once the ledger writer has written it (the route "
        "waits for it). Unknown charge: 404. "
        "Ledger kind refund, with ref (the charge) and reason."),
    ("POST", "/v1/agents/{agent}/children"): (
        "The agent's own key or the admin. amount moves from the agent's balance to the "
        "child's in one atomic step (never pooled); a parent without it is 402 "
        "balance_insufficient and nothing is created; a frozen parent is 423. The child "
        "lives in its parent's partition: a name that does not hash there is 422 (field "
        "name) with a name that does. The child inherits every cap of its parent and may "
        "only tighten them (422 naming the limit otherwise); low_balance and webhook_url "
        "are its own (webhook_url set by the admin only: from an agent key it is 422). "
        "Ledger kinds transfer_out (the parent) and transfer_in (the child), "
        "ref naming the other." + _KEY_SHOWN_ONCE),
    ("POST", "/v1/agents/{agent}/reclaim"): (
        "{agent} is the child: the parent's key or the admin. Moves amount (default: all "
        "the child has available; held money stays) back to the parent. Another agent's "
        "key is 403; an agent without a parent is 404."),
    ("POST", "/v1/agents/{agent}/debit"): (
        "Takes amount back from the available balance (held money is not touched): more "
        "than it is 402 balance_insufficient. Ledger kind debit, with reason."),
}


def _success(method: str, path: str) -> dict[str, Any]:
    if (method, path) == ("POST", "/v1/tools/{tool}/invoke"):
        return {"2XX": {"description": "the upstream's answer, charged", "headers": {
            "X-IOU-Charge-Id": {"required": True, "schema": {"type": "string"}},
            "X-IOU-Balance": {"required": True, "schema": AMOUNT_OUT}},
            "content": {"*/*": {"schema": {}}}}}
    if path in ("/", "/dashboard"):
        location = "/dashboard/" if path == "/dashboard" else "/dashboard"
        redirect = {"description": f"redirect to {location}", "headers": {
            "Location": {"required": True, "schema": {"const": location}}}}
        return {"308" if path == "/dashboard" else "307": redirect,
                "200": {"description": "the dashboard page (after the redirects)",
                        "content": {"text/html": {"schema": {"type": "string"}}}}}
    if path == "/metrics":
        return {"200": {"description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}}
    code, schema = ANSWERS[(method, path)]
    if schema is None:
        return {str(code): {"description": "done; no body"}}
    answer: dict[str, Any] = {str(code): {
        "description": "success", "content": {"application/json": {"schema": schema}}}}
    if path == "/readyz":
        answer["503"] = {"description": "not ready: which check failed",
                         "content": {"application/json": {"schema": READINESS}}}
    return answer


def _errors(method: str, path: str) -> dict[str, Any]:
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    answers: dict[str, Any] = {
        "429": {"description": "a window cap, the loop breaker (loop_detected) or too many "
                               "failed authentications; come back after Retry-After seconds",
                "headers": {"Retry-After": {"required": True,
                                            "schema": {"type": "integer", "minimum": 0}}},
                "content": error},
        "default": {"description": "the contract's error object", "content": error}}
    if (method, path) == ("POST", "/v1/tools/{tool}/invoke"):
        answers["default"] = {"description": "the gateway's error object, or the upstream's "
                                             "own answer when it is not a 2xx",
                              "content": {"*/*": {"schema": {}}}}
    return answers


RECEIPT_ON_REQUEST = {("POST", "/v1/charge"), ("POST", "/v1/charges"),
                      ("POST", "/v1/holds/{hold_id}/capture")}


def _parameters(method: str, path: str, max_micros: int) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": p.strip("{}"), "in": "path", "required": True,
         "schema": PATH_PARAMETERS[p.strip("{}")]}
        for p in path.split("/") if p.startswith("{")]
    for name, schema, description in QUERY_PARAMETERS.get((method, path), []):
        parameters.append({"name": name, "in": "query", "required": False, "schema": schema,
                           "description": description})
    if method == "POST":
        parameters.append({"name": "Idempotency-Key", "in": "header", "required": False,
                           "schema": IDEMPOTENCY_KEY_HEADER})
    if (method, path) in RECEIPT_ON_REQUEST:
        parameters.append({"name": "X-IOU-Receipt", "in": "header", "required": False,
                           "description": "true: the answer carries a signed receipt of "
                                          "each charge (signing costs CPU: only when asked)",
                           "schema": {"enum": ["true", "false"]}})
    if path == "/v1/tools/{tool}/invoke":
        parameters.append({"name": "X-IOU-Task", "in": "header", "required": False,
                           "description": "a task of the caller's that the call counts "
                                          "against", "schema": TASK_ID})
        parameters.append({"name": "X-IOU-Max-Cost", "in": "header", "required": False,
                           "description": "the hold's ceiling; only for (and required by) "
                                          "tools priced variable",
                           "schema": amount_text(max_micros, allow_zero=False)})
    return parameters


# One request each, as the README's "Try it" sends them (the seed catalog's tools).
EXAMPLES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/charge"): {"tool": "web_search", "metadata": {"query": "weather"}},
    ("POST", "/v1/charges"): {"charges": [
        {"tool": "web_search"}, {"tool": "llm_summarize", "cost": "0.03"}]},
    ("POST", "/v1/holds"): {"tool": "llm_summarize", "max_cost": "0.1", "ttl_s": 300},
    ("POST", "/v1/holds/{hold_id}/capture"): {"cost": "0.06"},
    ("POST", "/v1/tasks"): {"budget": "2", "name": "research", "ttl_s": 3600,
                            "max_calls": {"web_browse": 10, "commerce": 1}},
    ("POST", "/v1/agents"): {"name": "research-bot", "grant": "20"},
    ("POST", "/v1/agents/{agent}/fund"): {"amount": "20"},
    ("POST", "/v1/charges/{charge_id}/refund"): {"amount": "0.05", "reason": "bad answer"},
    ("POST", "/v1/agents/{agent}/debit"): {"amount": "5", "reason": "duplicate grant"},
    ("POST", "/v1/agents/{agent}/children"): {"name": "research-agent-32", "amount": "2",
                                             "limits": {"daily": "1"}},
    ("POST", "/v1/agents/{agent}/reclaim"): {"amount": "0.5"},
    ("PATCH", "/v1/agents/{agent}/limits"): {
        "per_call": "1", "daily": "5", "low_balance": "1",
        "categories": {"llm": {"per_call": "0.05", "daily": "2"}}},
    ("PUT", "/v1/tools/{tool}"): {"price": "0.05", "category": "tool"},
}


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[{}.]", "", path).strip("/").replace("/", "_") or "root"
    return f"{method.lower()}_{words}"


def _operation(method: str, path: str, summary: str, auth: str,
               bodies: dict[tuple[str, str], tuple[Schema, bool]], max_micros: int
               ) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary, "operationId": _operation_id(method, path),
        "parameters": _parameters(method, path, max_micros),
        "responses": {**_success(method, path), **_errors(method, path)},
        # Any one of them; [] for a public route (no token needed).
        "security": [] if auth == "none" else [{name: []} for name in auth.split("|")],
    }
    if (method, path) in DESCRIPTIONS:
        op["description"] = DESCRIPTIONS[(method, path)]
    if (method, path) in bodies:
        schema, required = bodies[(method, path)]
        media: dict[str, Any] = {"schema": schema}
        if (method, path) in EXAMPLES:
            media["example"] = EXAMPLES[(method, path)]
        op["requestBody"] = {"required": required, "content": {"application/json": media}}
    elif path == "/v1/tools/{tool}/invoke":
        op["requestBody"] = {"required": False, "description": "forwarded as is",
                             "content": {"application/json": {"schema": {}}}}
    return op


def openapi_document(amount_max_micros: int = money.AMOUNT_MAX_MICROS_DEFAULT
                     ) -> dict[str, Any]:
    """The document for a gateway whose IOU_AMOUNT_MAX is ``amount_max_micros``."""
    bodies = request_bodies(amount_max_micros)
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, auth in ROUTE_SPECS:
        paths.setdefault(path, {})[method.lower()] = _operation(
            method, path, summary, auth, bodies, amount_max_micros)
    return {
        "openapi": "3.1.0",
        "info": {"title": "IOU gateway", "version": "0.1.0",
                 "description": "Metering gateway that caps what AI agents can spend. "
                                "Every error is JSON: {\"error\", \"message\", ...details}."},
        "paths": paths,
        "components": {
            "schemas": {**COMPONENT_SCHEMAS, "Error": ERROR},
            "securitySchemes": {
                "admin": {"type": "http", "scheme": "bearer", "description": "IOU_ADMIN_TOKEN"},
                "agent": {"type": "http", "scheme": "bearer",
                          "description": "an agent key, iou_..."}}},
    }
