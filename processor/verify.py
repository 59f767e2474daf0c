"""Verifying the hash chain (:mod:`events.chain`): pure, fed record by record in log order.

Each (writer, events partition) chain is walked in offset order. A record links when its
``seq`` follows and its ``prev`` is the link of the record it follows. Links are not secret,
so anyone who can append could extend a chain; what settles which records are the writer's is
its signature: the writer signs its last record per partition in every transaction, so every
genuine record is followed, within its own transaction, by a signed record that links back to
it. Records that link are held until such a signature *confirms* them; when one does, every
competing record (a fork from the same head) is named forged. What no signature ever confirms
is named at the end. A record that does not link at all (its predecessor changed, removed or
reordered; a forgery) is named, and the walk starts again from it, so one break is one name,
not the rest of the log. Signed checkpoints (:class:`events.chain.Anchor`) pin heads: a chain
that does not reach a checkpointed head, or reaches it with another link, was rewritten or cut.
"""

from dataclasses import dataclass, field

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from events import chain


@dataclass(frozen=True)
class Entry:
    """One record (or ``events`` row) to verify."""

    where: str  # how the report names it
    partition: int
    offset: int
    link: chain.Link | None
    content: chain.Content | None
    problem: str | None = None  # unreadable content or headers


@dataclass(frozen=True, order=True)
class Break:
    partition: int
    offset: int
    where: str
    reason: str


@dataclass
class _Node:
    entry: Entry
    seq: int
    link: bytes


@dataclass
class _Chain:
    head: tuple[int, bytes] | None = None  # (seq, link) of the last confirmed record
    branches: list[list[_Node]] = field(default_factory=list)  # linked, not yet confirmed
    first_seq: int | None = None
    first: _Node | None = None
    last: _Node | None = None


class Verifier:
    def __init__(self, keys: dict[str, Ed25519PublicKey], *,
                 scoped: bool | frozenset[int] = False, bounded: bool = False) -> None:
        self.keys = keys
        # Started mid-log (everywhere, or in these partitions): a chain's first record there is
        # taken as it is.
        self.scoped = scoped
        self.bounded = bounded  # stopped before the end: checkpointed heads beyond it are not owed
        self.chains: dict[tuple[str, int], _Chain] = {}
        self.breaks: list[Break] = []
        self.records = 0
        self.confirmed = 0
        self.legacy = 0  # records before the first chained one of their partition
        self._chained_partitions: set[int] = set()
        self._pinned: dict[tuple[str, int, int], tuple[bytes, str]] = {}  # from checkpoints
        # Every record seen at a checkpointed place (a forgery may stand there too).
        self._seen_pinned: dict[tuple[str, int, int], list[tuple[bytes, Entry]]] = {}
        self.anchors = 0
        # For a copy that trails the log (the events table): the offset up to which each
        # partition is owed, and where each checkpointed record stands in the log.
        self.owed: dict[int, int] | None = None
        self.tail_pending = False  # the copy stops where it may hold part of a transaction
        self.pinned_at: dict[tuple[str, int, int], int] = {}

    def _mid_log(self, partition: int) -> bool:
        return self.scoped is True or (isinstance(self.scoped, frozenset) and partition in self.scoped)

    def firsts(self) -> dict[tuple[str, int], tuple[int, bytes, Entry]]:
        """The first record walked of each chain: (writer, partition) -> (seq, link, entry)."""
        return {k: (c.first.seq, c.first.link, c.first.entry) for k, c in self.chains.items()
                if c.first is not None}

    def pending(self) -> set[tuple[str, int]]:
        """Chains whose last records wait for a signature."""
        return {k for k, c in self.chains.items() if c.branches}

    def heads(self) -> dict[tuple[str, int], tuple[int, bytes, Entry]]:
        """The last record walked of each chain: (writer, partition) -> (seq, link, entry)."""
        return {k: (c.last.seq, c.last.link, c.last.entry) for k, c in self.chains.items()
                if c.last is not None}

    def pinned_offsets(self) -> dict[tuple[str, int, int], int]:
        """Where each checkpointed record was seen: (writer, partition, seq) -> offset."""
        return {pin: next((e for h, e in seen if h == self._pinned[pin][0]), seen[0][1]).offset
                for pin, seen in self._seen_pinned.items()}

    def _break(self, entry: Entry, reason: str) -> None:
        self.breaks.append(Break(entry.partition, entry.offset, entry.where, reason))

    def add(self, e: Entry) -> None:
        self.records += 1
        if e.link is None:
            if e.problem is None and e.partition not in self._chained_partitions:
                self.legacy += 1  # written before the chain began
            else:
                self._break(e, e.problem or "no chain link: not written by the processor (a record "
                            "produced straight to the topic, or forged)")
            return
        self._chained_partitions.add(e.partition)
        if e.content is None:
            self._break(e, e.problem or "its content cannot be read")
            return
        lk = e.link
        c = self.chains.setdefault((lk.writer, e.partition), _Chain())
        node = _Node(e, lk.seq, chain.link(lk.writer, e.partition, lk.seq, lk.prev, e.content))
        if c.first_seq is None:
            c.first_seq, c.first = lk.seq, node
        pin = (lk.writer, e.partition, lk.seq)
        if pin in self._pinned:
            self._seen_pinned.setdefault(pin, []).append((node.link, e))
        self._place(c, node)
        c.last = node
        if lk.sig is not None:
            self._signed(c, node)

    def _place(self, c: _Chain, node: _Node) -> None:
        lk = node.entry.link
        assert lk is not None
        for branch in c.branches:
            for i in range(len(branch) - 1, -1, -1):
                parent = branch[i]
                if parent.seq + 1 == lk.seq and parent.link == lk.prev:
                    if i == len(branch) - 1:
                        branch.append(node)
                    else:  # a fork inside a transaction: another record took this place first
                        c.branches.append([*branch[: i + 1], node])
                    return
        if c.head is not None and c.head[0] + 1 == lk.seq and c.head[1] == lk.prev:
            c.branches.append([node])  # a second branch from the head is a fork
            return
        if c.head is None and not c.branches and (
                (lk.seq == 1 and lk.prev == chain.GENESIS) or self._mid_log(node.entry.partition)):
            c.branches.append([node])
            return
        if c.head is None and any(_link(b[0]) == (lk.seq, lk.prev) for b in c.branches):
            c.branches.append([node])  # a fork at the first record read: a signature decides
            return
        self._break(node.entry, self._why_not(c, node))
        c.branches.append([node])  # start again from it

    def _why_not(self, c: _Chain, node: _Node) -> str:
        lk = node.entry.link
        assert lk is not None
        if c.head is None and not c.branches:
            return (f"the chain of {lk.writer} in this partition starts at seq {lk.seq}: the records "
                    "before it were removed")
        expected = max([b[-1].seq for b in c.branches] + [c.head[0] if c.head else 0]) + 1
        last = c.last.entry.where if c.last else "?"
        if lk.seq < expected:
            return (f"seq {lk.seq} of {lk.writer} again, or out of order (expected {expected} after "
                    f"{last}): a copied, reordered or forged record")
        if lk.seq > expected:
            return (f"seq jumps from {expected - 1} to {lk.seq} after {last}: "
                    f"{lk.seq - expected} record(s) of {lk.writer} removed before it")
        return (f"its prev does not match the link of {last}: that record was changed, or this "
                "one was forged")

    def _signed(self, c: _Chain, node: _Node) -> None:
        lk = node.entry.link
        assert lk is not None and lk.sig is not None
        message = chain.signed_message(lk.writer, node.entry.partition, lk.seq, node.link)
        if not self._verifies(lk.sig, message):
            self._break(node.entry, "its signature does not match its content and place: the "
                        "record was changed, or forged")
            return
        self.confirmed += 1
        winner = next(b for b in c.branches if b[-1] is node)
        kept = {id(n) for n in winner}
        losers = [n for b in c.branches if b is not winner for n in b if id(n) not in kept]
        self._unconfirmed(losers, f"not the signed chain of {lk.writer}: forged, or left behind "
                                  f"by a break (the signed chain goes on at {node.entry.where})")
        c.branches = []
        c.head = (node.seq, node.link)

    def _verifies(self, sig: bytes, message: bytes) -> bool:
        for key in self.keys.values():
            try:
                key.verify(sig, message)
                return True
            except InvalidSignature:
                continue
        return False

    def _unconfirmed(self, nodes: list[_Node], reason: str) -> None:
        flagged = {(b.partition, b.offset) for b in self.breaks}
        for n in nodes:
            if (n.entry.partition, n.entry.offset) not in flagged:
                flagged.add((n.entry.partition, n.entry.offset))
                self._break(n.entry, reason)

    def pin(self, anchor: chain.Anchor, where: str) -> bool:
        """Take a signed checkpoint (read before the records); False if its signature fails."""
        key = self.keys.get(anchor.key_id)
        try:
            if key is None:
                raise InvalidSignature
            key.verify(bytes.fromhex(anchor.signature), anchor.message())
        except (InvalidSignature, ValueError):
            return False
        self.anchors += 1
        for p, (seq, link_hex) in anchor.heads.items():
            self._pinned[(anchor.writer, int(p), seq)] = (bytes.fromhex(link_hex), where)
        return True

    def finish(self) -> list[Break]:
        """Name what no signature confirmed and every checkpointed head the log lacks; return
        the breaks in log order."""
        for (writer, _), c in self.chains.items():
            if self.tail_pending and c.branches:  # the last branch may be a cut transaction
                c.branches = [b for b in c.branches if b[-1] is not c.last]
            for branch in c.branches:
                self._unconfirmed(branch, f"not confirmed by a signature of {writer}: appended by "
                                          "someone else (forged), or its signed successor was "
                                          "changed or removed")
            c.branches = []
        for (writer, partition, seq), (link_hash, where) in sorted(self._pinned.items()):
            seen = self._seen_pinned.get((writer, partition, seq))
            ch = self.chains.get((writer, partition))
            if seen is not None:
                if all(h != link_hash for h, _ in seen):
                    self._break(seen[0][1], f"seq {seq} of {writer} differs from the signed "
                                            f"checkpoint {where}: rewritten")
                continue
            if self.bounded or (self._mid_log(partition) and (ch is None or ch.first_seq is None
                                                              or seq < ch.first_seq)):
                continue  # outside what this run reads
            if self.owed is not None:
                at = self.pinned_at.get((writer, partition, seq))
                if at is None or at >= self.owed.get(partition, 0):
                    continue  # not applied yet (or not in the log read: named there)
            end = ch.last.entry if ch is not None and ch.last is not None else None
            self.breaks.append(Break(
                partition, end.offset + 1 if end else 0, end.where if end else f"partition {partition}",
                f"the signed checkpoint {where} says {writer} reached seq {seq} here; the chain "
                f"ends at seq {ch.last.seq if ch and ch.last else 0}: records were removed"))
        self.breaks.sort()
        return self.breaks


def _link(node: _Node) -> tuple[int, bytes]:
    assert node.entry.link is not None
    return node.entry.link.seq, node.entry.link.prev


def content_or_problem(value: bytes | None) -> tuple[chain.Content | None, str | None]:
    if value is None:
        return None, "no value"
    try:
        return chain.content(value), None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return None, f"its value is not an event envelope: {exc}"
