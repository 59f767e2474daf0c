"""One definition of valid input, used at every door: the command API, GraphQL, the websocket
and, for anything produced straight to Kafka, the processor.

Every grammar is matched in full (``re.fullmatch``: Python's ``$`` also matches before a final
newline, which would let ``"bob\\n"`` pass for a wallet id). Text may hold any character but the
control characters (Unicode category ``Cc``: NUL, newlines, escapes) and unpaired surrogates
(not encodable as UTF-8); PostgreSQL refuses NUL in text, so a NUL let in here would reach the
processor and then fail to project.
"""

import re
import unicodedata

WALLET_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}"
SYMBOL_PATTERN = r"[A-Z][A-Z0-9]{0,11}"
# Amounts at the edges: ASCII digits only, an optional fraction, nothing around them.
AMOUNT_PATTERN = r"[0-9]{1,60}(\.[0-9]{1,60})?"
# The same, and not zero (at least one digit 1-9 somewhere): what a command accepts. Said with
# a look-ahead so that JSON Schema (ECMA-262 patterns) can state it too.
POSITIVE_AMOUNT_PATTERN = r"(?=[0-9.]*[1-9])" + AMOUNT_PATTERN
# Command ids as this system makes them: lower-case hex UUIDs with hyphens, nothing else
# (``uuid.UUID`` would also take braces, "urn:uuid:" and missing hyphens).
COMMAND_ID_PATTERN = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

WALLET_ID = re.compile(WALLET_PATTERN)
COMMAND_ID = re.compile(COMMAND_ID_PATTERN)
SYMBOL = re.compile(SYMBOL_PATTERN)
AMOUNT = re.compile(r"(?P<whole>[0-9]{1,60})(?:\.(?P<frac>[0-9]{1,60}))?")

# Ids a client or the API makes up for a transfer or a trade (the API's are UUIDs).
REFERENCE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}"
REFERENCE = re.compile(REFERENCE_PATTERN)
# Amounts inside: whole base units that PostgreSQL's NUMERIC(78,0) can hold.
MAX_UNITS = 10**78 - 1

# Free text as a JSON Schema pattern: no control character (category Cc), and not blank.
_TEXT_CHAR = r"[^\x00-\x1f\x7f-\x9f]"
TEXT_PATTERN = rf"{_TEXT_CHAR}*[^\s\x00-\x1f\x7f-\x9f]{_TEXT_CHAR}*"
TEXT_OR_EMPTY_PATTERN = rf"{_TEXT_CHAR}*"
# Free text (memos, reasons): at most 280 characters; an asset's name, a token's subject: 200.
TEXT_LIMIT = 280
NAME_LIMIT = 200
# JSON bodies: no command nests anything, so 32 levels leave room and stop a parser's recursion
# long before it matters.
JSON_MAX_DEPTH = 32
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


def is_command_id(value: object) -> bool:
    return isinstance(value, str) and COMMAND_ID.fullmatch(value) is not None


_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_too_deep(raw: bytes, limit: int = JSON_MAX_DEPTH) -> bool:
    """Whether the JSON text ``raw`` nests arrays and objects deeper than ``limit``.

    Counted without recursion and before any parser sees it. Counting brackets is enough for
    most bodies (C-speed, no Python loop); only when there are more than ``limit`` of them is
    the text walked, skipping strings, whose brackets are only characters.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for token in _JSON_TOKEN.finditer(raw):
        char = token.group()[0]
        if char == 0x5B or char == 0x7B:  # [ {
            depth += 1
            if depth > limit:
                return True
        elif char == 0x5D or char == 0x7D:  # ] }
            depth -= 1
    return False


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
    return None


def is_text(value: object, limit: int = TEXT_LIMIT, *, empty: bool = False) -> bool:
    """A string of at most ``limit`` characters with no control characters (and not blank,
    unless ``empty``)."""
    if not isinstance(value, str) or len(value) > limit:
        return False
    if not empty and not value.strip():
        return False
    return text_problem(value) is None


#: A memo sealed with its wallet's data key (``common.keyring``): the prefix, then unpadded
#: URL-safe base64 of nonce, ciphertext and tag. Long enough for any memo of TEXT_LIMIT
#: characters (four bytes each at most).
SEALED_PREFIX = "sealed:v1:"
_SEALED = re.compile(r"sealed:v1:[A-Za-z0-9_-]{38,1600}")


def is_memo(value: object) -> bool:
    """A memo as the log may carry it: free text (blank allowed), or a sealed memo."""
    if isinstance(value, str) and value.startswith(SEALED_PREFIX):
        return _SEALED.fullmatch(value) is not None
    return is_text(value, empty=True)
