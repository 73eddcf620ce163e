"""Strict request bodies: media type, size (also chunked), one JSON object, known fields.

JSON numbers are kept as their literal text (``JsonNumber``) so amounts never pass
through a float; duplicate keys, NaN and Infinity are malformed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import orjson
from starlette.requests import Request

from gateway import money
from gateway.errors import GatewayError, InvalidRequest
from gateway.limits import check_name

CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# Bodies up to this size try the orjson parse first (a charge body is tens of bytes; its
# metadata at most 2 KiB); past it, a failed attempt would cost more than it saves.
COMPACT_BYTES_MAX = 4096


class MalformedJson(GatewayError):
    code, status = "malformed_json", 400


class BodyTooLarge(GatewayError):
    code, status = "body_too_large", 413


class UnsupportedMediaType(GatewayError):
    code, status = "unsupported_media_type", 415


class _Duplicate(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Duplicate(key)
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Parse raw bytes as exactly one JSON object; raise MalformedJson otherwise."""
    compact = _compact_object(raw)
    if compact is not None:
        return compact
    try:
        value = _DECODER.decode(raw.decode("utf-8"))
    except _Duplicate as exc:
        raise MalformedJson(f"The JSON object repeats the key {exc}.") from None
    except (ValueError, UnicodeDecodeError):
        raise MalformedJson("The body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise MalformedJson("The body must be one JSON object.")
    return value


def _compact_object(raw: bytes) -> dict[str, Any] | None:
    """The body parsed by orjson (C, several times faster), when that parse is exact: the
    body is a JSON object without numbers, written exactly as orjson writes it back. Such a
    text names every key once (orjson writes each key of the dict once), so it has no
    duplicate key, and without numbers nothing needs a JsonNumber. Anything else (spaces,
    escapes, numbers, not an object, not JSON) returns None for the strict parser."""
    if len(raw) > COMPACT_BYTES_MAX or b'": ' in raw or b', "' in raw:
        return None  # spaced like Python's json.dumps: not compact, skip the attempt
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or _has_number(value) or orjson.dumps(value) != raw:
        return None
    return value


def _has_number(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_number(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_number(v) for v in value)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int_literal(text: str) -> Any:
    # Integers stay exact too; keep the literal so amounts and counts share one path.
    return money.JsonNumber(text)


# Built once: json.loads with hooks would build a new decoder for every body.
_DECODER = json.JSONDecoder(object_pairs_hook=_object_without_duplicates,
                            parse_float=money.JsonNumber, parse_int=_int_literal,
                            parse_constant=_refuse_constant)


async def read_body(request: Request, bytes_max: int) -> bytes:
    """The raw body, refusing more than ``bytes_max`` even without Content-Length."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > bytes_max:
        raise BodyTooLarge(f"The body is larger than {bytes_max} bytes.")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > bytes_max:
            raise BodyTooLarge(f"The body is larger than {bytes_max} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, bytes_max: int, *, optional: bool = False
                    ) -> dict[str, Any]:
    """A JSON object body; with ``optional``, an empty body is ``{}``."""
    return json_from_raw(request, await read_body(request, bytes_max), optional=optional)


def json_from_raw(request: Request, raw: bytes, *, optional: bool = False) -> dict[str, Any]:
    """A body already read, checked for its media type and parsed as one JSON object."""
    return json_body(request.headers.get("content-type", ""), raw, optional=optional)


def json_body(content_type: str, raw: bytes, *, optional: bool = False) -> dict[str, Any]:
    """A raw body with its Content-Type value, as one JSON object (415/400 otherwise)."""
    if optional and not raw.strip():
        return {}
    media = content_type.split(";")[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType("The body must be sent as application/json.")
    return parse_json_object(raw)


class Fields:
    """Typed access to a parsed body; unknown fields are refused up front."""

    def __init__(self, body: dict[str, Any], allowed: Iterable[str], prefix: str = "") -> None:
        self.body = body
        self.prefix = prefix
        for key in body:
            if key not in allowed:
                raise InvalidRequest(prefix + key, "is not a known field")

    def has(self, name: str) -> bool:
        return name in self.body and self.body[name] is not None

    def _get(self, name: str, required: bool) -> Any:
        if name not in self.body:
            if required:
                raise InvalidRequest(self.prefix + name, "is required")
            return None
        return self.body[name]

    def name(self, name: str, required: bool = True) -> str | None:
        value = self._get(name, required)
        if value is None and not required:
            return None
        if not isinstance(value, str):
            raise InvalidRequest(self.prefix + name, "must be a string")
        try:
            return check_name(name, value)
        except InvalidRequest:
            raise InvalidRequest(self.prefix + name,
                                 "must be 1 to 64 characters of a-z 0-9 - _ .") from None

    def amount(self, name: str, required: bool = True, *, allow_zero: bool = False,
               max_micros: int = money.AMOUNT_MAX_MICROS_DEFAULT) -> int | None:
        value = self._get(name, required)
        if value is None and not required:
            return None
        return parse_amount_field(self.prefix + name, value, allow_zero, max_micros)

    def integer(self, name: str, low: int, high: int, default: int) -> int:
        value = self._get(name, False)
        if value is None:
            return default
        text = value.text if isinstance(value, money.JsonNumber) else None
        if text is None or not text.isdigit() or not low <= int(text) <= high:
            raise InvalidRequest(self.prefix + name, f"must be a whole number from {low} to "
                                 f"{high}")
        return int(text)

    def text(self, name: str, length_max: int, required: bool = False) -> str | None:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str) or not value or len(value) > length_max:
            raise InvalidRequest(self.prefix + name, f"must be a string of 1 to {length_max} "
                                 "characters")
        if CONTROL_RE.search(value):
            raise InvalidRequest(self.prefix + name, "must not contain control characters")
        return value

    def obj(self, name: str) -> dict[str, Any] | None:
        value = self._get(name, False)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise InvalidRequest(self.prefix + name, "must be a JSON object")
        return value


def parse_amount_field(field: str, value: Any, allow_zero: bool, max_micros: int) -> int:
    try:
        return money.parse_amount(value, allow_zero=allow_zero, max_micros=max_micros)
    except money.AmountError as exc:
        raise InvalidRequest(field, exc.reason) from None


def plain_json(value: Any) -> Any:
    """Turn JsonNumber leaves back into int/float so metadata can be re-serialized.

    Metadata is the caller's annotation, never money, so a float there is harmless."""
    if isinstance(value, money.JsonNumber):
        if value.text.lstrip("-").isdigit():
            return int(value.text)
        return float(value.text)
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_json(v) for v in value]
    return value
