"""Decimal strings <-> integer micro-tokens, strictly, never through a float.

1 IOU token = 1,000,000 micros. Every amount inside the system is an ``int`` of micros;
only the edges (HTTP, CLI) see decimal strings such as ``"7.1"``.
"""

from __future__ import annotations

import re

MICROS_PER_TOKEN = 1_000_000
DECIMALS_MAX = 6
# Default IOU_AMOUNT_MAX: 1,000,000,000 tokens.
AMOUNT_MAX_MICROS_DEFAULT = 1_000_000_000 * MICROS_PER_TOKEN
# Lua numbers are doubles: every balance must stay exactly representable (< 2**53).
BALANCE_MAX_MICROS = 2**53 - 1

# ASCII digits only (re's \d would admit Arabic-Indic and other Unicode digits).
_DECIMAL_RE = re.compile(r"(0|[1-9][0-9]*)(\.([0-9]{1,6}))?", re.ASCII)
_INTEGER_DIGITS_MAX = 16


class JsonNumber:
    """The literal text of a JSON number, kept exact (never converted to float)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"JsonNumber({self.text!r})"


class AmountError(ValueError):
    """An amount that the contract rejects; ``reason`` is one short human phrase."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_amount(
    value: object,
    *,
    allow_zero: bool = False,
    max_micros: int = AMOUNT_MAX_MICROS_DEFAULT,
) -> int:
    """Parse a JSON value (decimal string or finite JSON number) into integer micros.

    Accepts ``"20"``, ``"0.05"``, ``7`` and JSON numbers with at most 6 decimals (the
    caller must have parsed JSON numbers as ``int`` or ``JsonNumber``, never as float).
    Rejects negatives, zero unless ``allow_zero``, NaN and Infinity, exponent forms, more
    than 6 decimals, separators, non-ASCII digits, booleans and anything above
    ``max_micros``.
    """
    if isinstance(value, bool):
        raise AmountError("must be a decimal string, not a boolean")
    if isinstance(value, JsonNumber):
        text = value.text
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value
    elif isinstance(value, float):
        # A float has already lost exactness; the JSON layer must hand us the literal.
        raise AmountError("must be a decimal string; floats are not accepted")
    else:
        raise AmountError("must be a decimal string")
    micros = _parse_decimal_text(text)
    if micros == 0 and not allow_zero:
        raise AmountError("must be greater than zero")
    if micros > max_micros:
        raise AmountError(f"must be at most {format_amount(max_micros)}")
    return micros


def _parse_decimal_text(text: str) -> int:
    if text.startswith("-"):
        raise AmountError("must not be negative")
    match = _DECIMAL_RE.fullmatch(text)
    if match is None:
        raise AmountError(_why_not_decimal(text))
    whole, fraction = match.group(1), match.group(3) or ""
    if len(whole) > _INTEGER_DIGITS_MAX:
        raise AmountError("is too large")
    return int(whole) * MICROS_PER_TOKEN + int(fraction.ljust(DECIMALS_MAX, "0"))


def _why_not_decimal(text: str) -> str:
    """Name the most likely reason a text is not a plain decimal, for the error message."""
    lowered = text.lower()
    if lowered in {"nan", "inf", "+inf", "infinity", "+infinity", "-inf"}:
        return "must be a finite number"
    if not text.isascii():
        return "must use ASCII digits only"
    if "e" in lowered and any(c.isdigit() for c in text):
        return "exponent forms are not accepted"
    if "," in text or "_" in text or " " in text:
        return "separators are not accepted"
    if re.fullmatch(r"[0-9]+\.[0-9]{7,}", text):
        return f"has more than {DECIMALS_MAX} decimal places"
    return "must be a decimal number such as 0.05"


def format_amount(micros: int) -> str:
    """Format integer micros as a decimal string with trailing zeros trimmed ("7.1")."""
    if not is_whole(micros):
        raise TypeError("micros must be an int")
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), MICROS_PER_TOKEN)
    if fraction == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:06d}".rstrip("0")


def is_whole(value: object, low: int | None = None, high: int | None = None) -> bool:
    """Whether ``value`` is an int (a bool is not) from ``low`` to ``high`` (each bound
    optional): the one range check of micros, counts and seconds the domain is given."""
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return (low is None or value >= low) and (high is None or value <= high)
