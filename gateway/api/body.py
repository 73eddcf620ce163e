"""Strict request bodies: media type, size (also chunked), one JSON object, known fields.

JSON numbers are kept as their literal text (``JsonNumber``) so amounts never pass
through a float; duplicate keys, NaN and Infinity are malformed. Objects that are kept
(metadata) must be storable unchanged by Redis and both ledgers (see ``check_storable``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import Receive

from gateway.metering import money
from gateway.metering.errors import (
    BodyTooLarge,
    InvalidRequest,
    MalformedJson,
    RequestIncomplete,
    UnsupportedMediaType,
)
from gateway.metering.limits import NAME_RULE, check_name

WHOLE_FRACTION_RE = re.compile(r"(?<=[0-9])\.0+$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# What PostgreSQL JSONB refuses in a string or key (NUL), and what no UTF-8 text can hold
# (a lone surrogate: orjson, Redis and both ledgers all need UTF-8).
NUL_OR_SURROGATE_RE = re.compile("[\x00\ud800-\udfff]")
# orjson (which writes the text Redis and the ledgers keep) and SQLite's JSON functions
# hold integers in 64 bits; PostgreSQL's numeric would keep more, SQLite would not.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Bodies up to this size try the orjson parse first (a charge body is tens of bytes; its
# metadata at most 2 KiB); past it, a failed attempt would cost more than it saves.
COMPACT_BYTES_MAX = 4096


class _Duplicate(ValueError):
    pass


@dataclass
class JsonLimits:
    """Nesting levels of a kept object such as metadata (the object is level 1) and
    characters of one number literal in it; set from the settings (IOU_JSON_DEPTH_MAX,
    IOU_JSON_NUMBER_CHARS_MAX)."""

    depth_max: int = 32
    number_chars_max: int = 40


LIMITS = JsonLimits()


def configure_json_limits(depth_max: int, number_chars_max: int) -> None:
    """Set the process's JSON limits (the app does it once, from its settings)."""
    LIMITS.depth_max = depth_max
    LIMITS.number_chars_max = number_chars_max


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
    value = _compact_object(raw)
    return _strict_object(raw) if value is None else value


def _strict_object(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
        value = _DECODER.decode(text)
    except _Duplicate as exc:
        raise MalformedJson(f"The JSON object repeats the key {_printable(str(exc))}.") from None
    except RecursionError:  # nested deeper than the parser's stack: name the culprit
        raise _too_deep(_deep_key(text)) from None
    except (ValueError, UnicodeDecodeError):
        raise MalformedJson("The body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise MalformedJson("The body must be one JSON object.")
    return value


def _too_deep(field: str) -> InvalidRequest:
    return InvalidRequest(field or "body", f"is nested more than {LIMITS.depth_max} levels "
                          "deep")


# Nesting is bounded where it matters, on the objects that are kept (metadata: see
# check_storable); other fields are typed and never walked. A body nested deeper than the
# parser's stack (about a thousand levels) is refused here, on its top-level key.


_TOKEN_RE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _deep_key(text: str) -> str:
    """The top-level key under which ``text`` nests past the limit (a slow scan, run only
    for a body the parser could not even hold)."""
    depth, key, last_string = 0, "", ""
    for match in _TOKEN_RE.finditer(text):
        token = match.group()
        if token[0] == '"':
            last_string = token
        elif token in "[{":
            depth += 1
            if depth == 2:
                key = last_string
            if depth > LIMITS.depth_max:
                break
        else:
            depth -= 1
    try:
        name = json.loads(key) if key else ""
    except ValueError:
        return ""
    return _printable(name) if isinstance(name, str) else ""


def _printable(text: str) -> str:
    """``text`` safe to echo in an error body (a lone surrogate cannot be encoded)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
    if not isinstance(value, dict) or _has_number(value):
        return None
    try:
        written = orjson.dumps(value)
    except orjson.JSONEncodeError:  # nested past the 255 levels orjson writes
        return None
    return value if written == raw else None


def _has_number(value: Any) -> bool:
    """Whether a number is anywhere in ``value``: walked with a list, not recursion, since
    orjson holds nesting (up to 1024 levels) deeper than Python's stack walks (a body
    nested 600 levels deep was a RecursionError, a 500)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, int | float) and not isinstance(item, bool):
            return True
    return False


def _int_literal(text: str) -> Any:
    # Integers stay exact too; keep the literal so amounts and counts share one path.
    return money.JsonNumber(text)


# Built once: json.loads with hooks would build a new decoder for every body.
_DECODER = json.JSONDecoder(object_pairs_hook=_object_without_duplicates,
                            parse_float=money.JsonNumber, parse_int=_int_literal,
                            parse_constant=_refuse_constant)


async def read_body(request: Request, bytes_max: int) -> bytes:
    """The raw body of a Starlette request (see ``read_asgi_body``)."""
    return await read_asgi_body(request.receive, request.headers.get("content-length"),
                                bytes_max)


async def read_asgi_body(receive: Receive, content_length: str | None, bytes_max: int
                         ) -> bytes:
    """The raw body from the ASGI messages, refusing more than ``bytes_max`` bytes (413)
    even without Content-Length. A body that did not arrive whole (the client left, or was
    cut off for slowness) is refused as incomplete: it is never acted on, whatever prefix
    of it parses."""
    if content_length is not None and content_length.isdigit() and (
            int(content_length) > bytes_max):
        raise BodyTooLarge(f"The body is larger than {bytes_max} bytes.")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestIncomplete("The request body did not arrive whole.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > bytes_max:
            raise BodyTooLarge(f"The body is larger than {bytes_max} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
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
                raise InvalidRequest(prefix + _printable(key), "is not a known field")

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
            raise InvalidRequest(self.prefix + name, NAME_RULE) from None

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
        if text is not None:
            # 60.0 is the whole number 60, as JSON Schema reads it (and many serializers
            # write a whole float); 60.5 and exponent forms are not.
            text = WHOLE_FRACTION_RE.sub("", text)
        # The length first: int() of thousands of digits is slow, and refused past 4,300.
        if (text is None or len(text) > len(str(high)) or not text.isascii()
                or not text.isdigit() or not low <= int(text) <= high):
            raise InvalidRequest(self.prefix + name, f"must be a whole number from {low} to "
                                 f"{high}")
        return int(text)

    def text(self, name: str, length_max: int, required: bool = False) -> str | None:
        value = self._get(name, required)
        if value is None and not required:
            return None
        # A required text given as null is no text: the same 422 as any other non-string.
        if not isinstance(value, str) or not value or len(value) > length_max:
            raise InvalidRequest(self.prefix + name, f"must be a string of 1 to {length_max} "
                                 "characters")
        if CONTROL_RE.search(value):
            raise InvalidRequest(self.prefix + name, "must not contain control characters")
        if NUL_OR_SURROGATE_RE.search(value):
            raise InvalidRequest(self.prefix + name, "must not contain lone surrogates")
        return value

    def metadata(self, name: str = "metadata") -> dict[str, Any] | None:
        """A caller's annotation object, checked storable and converted in the same walk
        to the plain tree the domain stores (see ``storable_tree``)."""
        value = self._get(name, False)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise InvalidRequest(self.prefix + name, "must be a JSON object")
        tree: dict[str, Any] = storable_tree(value, self.prefix + name)
        return tree

    def obj(self, name: str) -> dict[str, Any] | None:
        """A JSON object field, checked storable as it is (see ``check_storable``)."""
        value = self._get(name, False)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise InvalidRequest(self.prefix + name, "must be a JSON object")
        check_storable(value, self.prefix + name)
        return value


def check_storable(value: Any, field: str, level: int = 1) -> None:
    """Refuse (422 on ``field``) what Redis would take but a ledger would refuse or alter:
    NUL in a string or key (PostgreSQL JSONB refuses it), lone surrogates (not UTF-8),
    integers outside 64 bits, numbers longer than the limit, numbers a double cannot hold
    (1e400 would become Infinity, 1e-400 zero), and nesting past IOU_JSON_DEPTH_MAX (the
    object itself is level 1; orjson, which writes the kept text, stops at 255)."""
    if isinstance(value, dict):
        if level > LIMITS.depth_max:
            raise _too_deep(field)
        for key, item in value.items():
            _check_text(key, field)
            check_storable(item, field, level + 1)
    elif isinstance(value, list):
        if level > LIMITS.depth_max:
            raise _too_deep(field)
        for item in value:
            check_storable(item, field, level + 1)
    elif isinstance(value, str):
        _check_text(value, field)
    elif isinstance(value, money.JsonNumber):
        _check_number(value.text, field)


def storable_tree(value: Any, field: str, level: int = 1) -> Any:
    """``value`` checked as ``check_storable`` does and, in the same walk, its JsonNumber
    leaves turned into int/float (as ``plain_json``): the tree the domain stores."""
    if isinstance(value, dict):
        if level > LIMITS.depth_max:
            raise _too_deep(field)
        for key in value:
            _check_text(key, field)
        return {k: storable_tree(v, field, level + 1) for k, v in value.items()}
    if isinstance(value, list):
        if level > LIMITS.depth_max:
            raise _too_deep(field)
        return [storable_tree(v, field, level + 1) for v in value]
    if isinstance(value, str):
        _check_text(value, field)
    elif isinstance(value, money.JsonNumber):
        _check_number(value.text, field)
        return plain_json(value)
    return value


def _check_text(text: str, field: str) -> None:
    found = NUL_OR_SURROGATE_RE.search(text)
    if found is None:
        return
    if found.group() == "\x00":
        raise InvalidRequest(field, "must not contain NUL (\\u0000) characters")
    raise InvalidRequest(field, "must not contain lone surrogates (\\ud800 to \\udfff)")


def _check_number(text: str, field: str) -> None:
    if len(text) > LIMITS.number_chars_max:
        raise InvalidRequest(field, f"must not hold numbers of more than "
                             f"{LIMITS.number_chars_max} digits")
    if _is_integer(text):
        if not INT64_MIN <= int(text) <= INT64_MAX:
            raise InvalidRequest(field, "must not hold integers outside the 64-bit range")
        return
    number = float(text)
    mantissa = text.lower().split("e")[0]
    if math.isinf(number) or (number == 0 and mantissa.strip("-0.") != ""):
        raise InvalidRequest(field, "must hold finite numbers that a double can represent")


def _is_integer(text: str) -> bool:
    return text.lstrip("-").isdigit()


def parse_amount_field(field: str, value: Any, allow_zero: bool, max_micros: int) -> int:
    try:
        return money.parse_amount(value, allow_zero=allow_zero, max_micros=max_micros)
    except money.AmountError as exc:
        raise InvalidRequest(field, exc.reason) from None


def plain_json(value: Any) -> Any:
    """Turn JsonNumber leaves back into int/float so metadata can be re-serialized.

    Metadata is the caller's annotation, never money, so a float there is harmless; the
    value was checked by ``check_storable`` (no number too long for int())."""
    if isinstance(value, money.JsonNumber):
        if _is_integer(value.text):
            return int(value.text)
        # + 0.0 turns -0.0 into 0.0, as PostgreSQL's numeric would store it.
        return float(value.text) + 0.0
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_json(v) for v in value]
    return value
