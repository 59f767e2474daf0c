"""The dead-letter format shared by every worker that writes ``ledger.dlq``."""


def dead_letter_headers(error: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """Headers of a dead-lettered record: the error and the record's source position."""
    return [
        ("error", error.encode()[:4000]),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
    ]
