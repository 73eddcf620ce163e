from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.metering import money
from gateway.metering.money import AmountError, format_amount, parse_amount

MAX = money.AMOUNT_MAX_MICROS_DEFAULT


@pytest.mark.parametrize(("text", "micros"), [
    ("20", 20_000_000), ("0.05", 50_000), ("7.1", 7_100_000), ("0.000001", 1),
    (7, 7_000_000), ("1000000000", MAX), ("0", 0),
])
def test_accepts(text: object, micros: int) -> None:
    assert parse_amount(text, allow_zero=True) == micros


@pytest.mark.parametrize(("value", "reason"), [
    ("-1", "negative"), ("-0.05", "negative"), ("0", "greater than zero"),
    ("0.000000", "greater than zero"), ("NaN", "finite"), ("nan", "finite"),
    ("Infinity", "finite"), ("inf", "finite"), ("1e3", "exponent"), ("1E-2", "exponent"),
    ("0.0000001", "6 decimal"), ("1,000", "separator"), ("1_000", "separator"),
    ("1 000", "separator"), ("١٢", "ASCII"), ("１２", "ASCII"), (True, "boolean"),
    (False, "boolean"), ("1000000000.000001", "at most"), (10**10, "at most"),
    (1.5, "float"), (None, "decimal string"), ([1], "decimal string"), ("", "decimal"),
    (" 5", "separator"), ("0x10", "decimal"), ("+5", "decimal"), ("5.", "decimal"),
    (".5", "decimal"), ("05", "decimal"), ("99999999999999999", "large"),
])
def test_rejects(value: object, reason: str) -> None:
    with pytest.raises(AmountError) as info:
        parse_amount(value)
    assert reason in info.value.reason


@pytest.mark.parametrize(("micros", "text"), [
    (7_100_000, "7.1"), (20_000_000, "20"), (1, "0.000001"), (0, "0"), (-50_000, "-0.05"),
])
def test_format(micros: int, text: str) -> None:
    assert format_amount(micros) == text


def test_format_refuses_float() -> None:
    with pytest.raises(TypeError):
        format_amount(1.0)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=MAX))
def test_round_trip_exact(micros: int) -> None:
    text = format_amount(micros)
    assert parse_amount(text, allow_zero=True) == micros
    assert "e" not in text and not text.endswith(".") and (text == "0" or text[-1] != "0"
                                                            or "." not in text)


@given(st.integers(min_value=0, max_value=10**9 - 1), st.integers(min_value=0, max_value=999_999))
def test_parse_matches_integer_arithmetic(whole: int, fraction: int) -> None:
    text = f"{whole}.{fraction:06d}"
    assert parse_amount(text, allow_zero=True) == whole * 1_000_000 + fraction

