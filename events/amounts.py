"""Decimal strings at the edges <-> whole base units inside. Never a float."""

from events.grammar import AMOUNT


class AmountError(ValueError):
    """An amount string that is not a valid positive amount for the asset.

    ``code`` is the stable error code the APIs answer with.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_amount(text: object, decimals: int, *, allow_zero: bool = False) -> int:
    if not isinstance(text, str):
        raise AmountError("invalid_amount", 'amounts are decimal strings, e.g. "12.50"')
    # ASCII digits and nothing around them: "１", "٠.٠١" or " 1" are not amounts.
    match = AMOUNT.fullmatch(text)
    if match is None:
        raise AmountError("invalid_amount", f"{_shown(text)} is not a positive decimal string "
                                            'of ASCII digits like "12.50"')
    frac = (match["frac"] or "").rstrip("0")
    if len(frac) > decimals:
        raise AmountError(
            "too_many_decimals",
            f"{_shown(text)} has {len(frac)} decimal places; the asset allows {decimals}",
        )
    units: int = int(match["whole"]) * 10**decimals + int(frac.ljust(decimals, "0") or "0")
    if units == 0 and not allow_zero:
        raise AmountError("invalid_amount", "the amount must be greater than zero")
    return units


def _shown(text: str) -> str:
    # An error message quotes the input, but not all of a hostile one.
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "…"


def format_amount(units: int, decimals: int) -> str:
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**decimals)
    if decimals == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:0{decimals}d}"
