import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.amounts import AmountError, format_amount, parse_amount


@pytest.mark.parametrize(
    ("text", "decimals", "units"),
    [("12.50", 2, 1250), ("12.5", 2, 1250), ("12", 2, 1200), ("0.01", 2, 1), ("7", 0, 7),
     ("1.000000000000000001", 18, 10**18 + 1), ("115792089237316195423570985008687907853269", 18,
                                                115792089237316195423570985008687907853269 * 10**18),
     ("3.10", 1, 31)],
)
def test_parse_amount(text: str, decimals: int, units: int) -> None:
    assert parse_amount(text, decimals) == units


@pytest.mark.parametrize(
    ("value", "decimals", "code"),
    [("1.001", 2, "too_many_decimals"), ("1.5", 0, "too_many_decimals"), ("-1", 2, "invalid_amount"),
     ("0", 2, "invalid_amount"), ("0.00", 2, "invalid_amount"), ("1e3", 2, "invalid_amount"),
     ("", 2, "invalid_amount"), (".5", 2, "invalid_amount"), ("1.", 2, "invalid_amount"),
     (12.5, 2, "invalid_amount"), (12, 2, "invalid_amount"), (None, 2, "invalid_amount"),
     ("NaN", 2, "invalid_amount"), ("1,00", 2, "invalid_amount")],
)
def test_bad_amounts_are_refused_with_a_code(value: object, decimals: int, code: str) -> None:
    with pytest.raises(AmountError) as error:
        parse_amount(value, decimals)
    assert error.value.code == code


def test_zero_is_allowed_only_when_asked() -> None:
    assert parse_amount("0", 2, allow_zero=True) == 0


@given(st.integers(min_value=1, max_value=10**40), st.integers(min_value=0, max_value=18))
def test_format_then_parse_is_identity(units: int, decimals: int) -> None:
    text = format_amount(units, decimals)
    assert "e" not in text.lower()
    assert parse_amount(text, decimals) == units


def test_format_pads_to_the_asset_decimals() -> None:
    assert format_amount(1250, 2) == "12.50"
    assert format_amount(5, 6) == "0.000005"
    assert format_amount(-5, 2) == "-0.05"
    assert format_amount(42, 0) == "42"
