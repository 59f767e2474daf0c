"""The hash chain's fields of an ``events`` row, as the record's headers carry them
(:mod:`events.chain`): stored as they are, checked by ``ledgerline audit --verify-chain``."""

from collections.abc import Iterable

from events import chain
from projector.fold import Row

_NONE: Row = {"chain_writer": None, "chain_seq": None, "chain_prev": None, "chain_sig": None}


def columns(headers: Iterable[tuple[str, bytes]] | None) -> Row:
    """The chain columns of a record; all None when it has no link (or a malformed one: the
    audit names such a row, the projector stores it like any other)."""
    if not headers:
        return _NONE
    try:
        link = chain.read_headers(headers)
    except ValueError:
        return _NONE
    if link is None:
        return _NONE
    return {"chain_writer": link.writer, "chain_seq": link.seq, "chain_prev": link.prev,
            "chain_sig": link.sig}


def bytea(value: bytes | None) -> str:
    """A ``bytea`` value as a COPY text field (hex format; the backslash escaped for COPY)."""
    return "\\N" if value is None else "\\\\x" + value.hex()
