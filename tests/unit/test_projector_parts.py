"""Pure parts of the projector's shell: lag arithmetic, the fold that drops a record which
cannot apply, dead-letter headers, rebuild progress."""

import io
import uuid
from dataclasses import dataclass
from typing import Any

from events import codec
from events.keys import wallet_key
from events.messages import ApplyCredit, WalletCredited
from projector import dlq
from projector.fold import Position
from projector.lag import PartitionLag
from projector.rebuild import Progress
from projector.worker import _dead_letters, _fold, _item


@dataclass
class Record:
    value: bytes
    offset: int
    topic: str = "ledger.events"
    partition: int = 0
    key: bytes = b"k"
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = 0


def _redriven(value: bytes, offset: int, original: int) -> Record:
    return Record(value, offset, headers=(dlq.original_header(Position("ledger.events", 0, original)),))


def _credit(wallet: str, amount: int) -> bytes:
    event = WalletCredited(wallet=wallet, asset="USDX", amount=amount, kind="issue", reference="r")
    return codec.encode(codec.envelope(event, key=wallet_key(wallet), command_id=str(uuid.uuid4()),
                                       principal="p"))


def test_lag_counts_records_and_ages_only_while_behind() -> None:
    lag = PartitionLag(next_offset=90, end_offset=100, last_timestamp_ms=1_000_000)
    assert lag.records_behind() == 10
    assert lag.seconds_behind(now=1_005.5) == 5.5
    caught_up = PartitionLag(next_offset=100, end_offset=100, last_timestamp_ms=1_000_000)
    assert caught_up.records_behind() == 0 and caught_up.seconds_behind(now=2_000.0) == 0.0
    unknown_end = PartitionLag(next_offset=5)
    assert unknown_end.records_behind() == 0


def test_a_record_that_cannot_apply_leaves_nothing_behind_in_the_fold() -> None:
    # A command where an event belongs decodes, and cannot apply.
    command = codec.encode(codec.envelope(ApplyCredit(wallet="b", asset="USDX", amount=5,
                                                      kind="issue", reference="r"),
                                          key="wallet:b", command_id="c", principal="p"))
    items = [_item(Record(_credit("a", 5), 0)), _item(Record(command, 1)),
             _item(Record(b"{garbage", 2)), _item(Record(_credit("a", 1), 3))]
    changes = _fold(items)
    assert [i.error is None for i in items] == [True, False, False, True]
    assert "does not know how to apply ApplyCredit" in (items[1].error or "")
    assert set(changes.balances) == {("a", "USDX")}
    assert changes.balances[("a", "USDX")]["available"] == 6
    assert [e["offset"] for e in changes.events] == [0, 3]


def test_a_redriven_record_is_applied_at_its_original_position() -> None:
    original = Position("ledger.events", 2, 41)
    record = Record(_credit("c", 7), 900, headers=(
        (dlq.REDRIVEN_FROM, b"ledger.dlq:0:3"), dlq.original_header(original)))
    item = _item(record)
    assert item.redriven and item.position == original
    changes = _fold([item])
    assert (changes.events[0]["partition"], changes.events[0]["offset"]) == (2, 41)
    assert dlq.original_position(()) is None
    assert dlq.original_position(((dlq.ORIGINAL_POSITION, b"nonsense"),)) is None


def test_progress_shows_count_rate_and_eta() -> None:
    out = io.StringIO()
    progress: Any = Progress(out=out)
    progress.done, progress.total = 250, 1000
    progress.show(force=True)
    line = out.getvalue()
    assert "250 / 1,000 records (25.0%)" in line and "records/s" in line and "ETA" in line


def test_dead_letter_rows_one_per_position_and_storable() -> None:
    nul_key = Record(b"{garbage", 0, key=b"wallet:a\x00b\xff")
    items = [_item(nul_key), _item(Record(_credit("b", 5), 1)),
             _item(_redriven(b"still garbage", 7, original=1)),  # fails again: one row, at 1
             _item(Record(b"x", 2)), _item(_redriven(_credit("c", 5), 8, original=2))]
    changes = _dead_letters(_fold(items), items)
    rows = {r["offset"]: r for r in changes.dead_letters}
    assert sorted(rows) == [0, 1]
    assert (rows[0]["cause"], rows[0]["type"], rows[0]["key"]) == ("undecodable", None,
                                                                   "wallet:a\\x00b\ufffd")
    assert rows[1]["cause"] == "undecodable" and "still garbage" not in rows[1]["error"]
    # The re-driven copy of the letter at 2 applied: that position is no longer missing.
    assert changes.resolved == [Position("ledger.events", 0, 2)]
    assert not any("\x00" in str(v) for r in changes.dead_letters for v in r.values())
