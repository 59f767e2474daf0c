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
from projector.worker import _fold, _item


@dataclass
class Record:
    value: bytes
    offset: int
    topic: str = "ledger.events"
    partition: int = 0
    key: bytes = b"k"
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = 0


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
