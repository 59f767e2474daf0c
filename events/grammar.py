"""One definition of valid input, used at every door: the command API, GraphQL, the websocket
and, for anything produced straight to Kafka, the processor.

Every grammar is matched in full (``re.fullmatch``: Python's ``$`` also matches before a final
newline, which would let ``"bob\\n"`` pass for a wallet id). Text may hold any character but the
control characters (Unicode category ``Cc``: NUL, newlines, escapes), unpaired surrogates (not
encodable as UTF-8) and noncharacters; PostgreSQL refuses NUL in text, so a NUL let in here
would reach the processor and then fail to project.
"""

import re
import unicodedata

WALLET_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}"
SYMBOL_PATTERN = r"[A-Z][A-Z0-9]{0,11}"
# Amounts at the edges: ASCII digits only, an optional fraction, nothing around them.
AMOUNT_PATTERN = r"[0-9]{1,60}(\.[0-9]{1,60})?"

WALLET_ID = re.compile(WALLET_PATTERN)
SYMBOL = re.compile(SYMBOL_PATTERN)
AMOUNT = re.compile(r"(?P<whole>[0-9]{1,60})(?:\.(?P<frac>[0-9]{1,60}))?")

# Ids a client or the API makes up for a transfer or a trade (the API's are UUIDs).
REFERENCE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}"
REFERENCE = re.compile(REFERENCE_PATTERN)
# Amounts inside: whole base units that PostgreSQL's NUMERIC(78,0) can hold.
MAX_UNITS = 10**78 - 1

# Free text (names, memos, reasons): 1-280 characters.
TEXT_LIMIT = 280
NAME_LIMIT = 200
# Idempotency-Key: visible ASCII, as a header value can carry it unchanged.
KEY_PATTERN = r"[\x21-\x7e]{1,200}"
IDEMPOTENCY_KEY = re.compile(KEY_PATTERN)


def is_wallet(value: object) -> bool:
    return isinstance(value, str) and WALLET_ID.fullmatch(value) is not None


def is_symbol(value: object) -> bool:
    return isinstance(value, str) and SYMBOL.fullmatch(value) is not None


def is_reference(value: object) -> bool:
    return isinstance(value, str) and REFERENCE.fullmatch(value) is not None


def is_units(value: object) -> bool:
    """A positive whole number of base units that the views can hold."""
    return type(value) is int and 0 < value <= MAX_UNITS


def is_idempotency_key(value: str) -> bool:
    return IDEMPOTENCY_KEY.fullmatch(value) is not None


def text_problem(value: str) -> str | None:
    """Why ``value`` is not acceptable text (any length), or None if it is."""
    if value.isprintable():  # no Cc, Cs or Cn character at all: the common case, at C speed
        return None
    for ch in value:
        category = unicodedata.category(ch)
        if category == "Cc":
            return f"control character U+{ord(ch):04X} is not allowed"
        if category == "Cs":
            return f"unpaired surrogate U+{ord(ch):04X} is not valid UTF-8"
        if category == "Cn" and _noncharacter(ord(ch)):
            return f"noncharacter U+{ord(ch):04X} is not allowed"
    return None


def is_text(value: object, limit: int = TEXT_LIMIT, *, empty: bool = False) -> bool:
    """A string of at most ``limit`` characters with no control characters (and not blank,
    unless ``empty``)."""
    if not isinstance(value, str) or len(value) > limit:
        return False
    if not empty and not value.strip():
        return False
    return text_problem(value) is None


def _noncharacter(code: int) -> bool:
    return 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE
