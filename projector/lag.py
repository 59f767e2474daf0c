"""How far behind the topic each partition of a projection is: records and seconds.

``records_behind`` is the partition's last stable offset (the end a ``read_committed`` reader
can reach) minus the consumer's position after the last committed batch. ``seconds_behind`` is
the age of the newest applied record while records are pending, and 0 once caught up, so an idle
topic does not look late. Published every second to ``projection_lag`` (for the API) and as
Prometheus gauges.
"""

import time
from dataclasses import dataclass

import asyncpg

from projector.metrics import ProjectorMetrics


@dataclass
class PartitionLag:
    next_offset: int
    end_offset: int | None = None
    last_timestamp_ms: int | None = None

    def records_behind(self) -> int:
        return 0 if self.end_offset is None else max(0, self.end_offset - self.next_offset)

    def seconds_behind(self, now: float) -> float:
        if self.records_behind() == 0 or self.last_timestamp_ms is None:
            return 0.0
        return max(0.0, now - self.last_timestamp_ms / 1000)


_UPSERT = """
INSERT INTO public.projection_lag (projection, topic, partition, next_offset, end_offset,
                                   records_behind, seconds_behind, updated_at)
SELECT $1, $2, * , now() FROM unnest($3::int[], $4::bigint[], $5::bigint[], $6::bigint[],
                                     $7::float8[])
ON CONFLICT (projection, topic, partition) DO UPDATE SET
next_offset = EXCLUDED.next_offset, end_offset = EXCLUDED.end_offset,
records_behind = EXCLUDED.records_behind, seconds_behind = EXCLUDED.seconds_behind,
updated_at = EXCLUDED.updated_at
"""


class Lag:
    def __init__(self, projection: str, topic: str, metrics: ProjectorMetrics | None = None) -> None:
        self.projection = projection
        self.topic = topic
        self.metrics = metrics
        self.partitions: dict[int, PartitionLag] = {}

    def assigned(self, partition: int, next_offset: int) -> None:
        self.partitions[partition] = PartitionLag(next_offset)

    def revoked(self, partition: int) -> None:
        self.partitions.pop(partition, None)
        if self.metrics is not None:
            for gauge in (self.metrics.lag_records, self.metrics.lag_seconds):
                try:
                    gauge.remove(self.projection, self.topic, str(partition))
                except KeyError:
                    pass

    def applied(self, partition: int, position: int, last_timestamp_ms: int) -> None:
        lag = self.partitions.get(partition)
        if lag is not None:
            lag.next_offset = max(lag.next_offset, position)
            lag.last_timestamp_ms = last_timestamp_ms

    def moved(self, partition: int, position: int) -> None:
        """The position moved without applying records (transaction markers, a seek)."""
        lag = self.partitions.get(partition)
        if lag is not None:
            lag.next_offset = position

    def end(self, partition: int, end_offset: int | None) -> None:
        lag = self.partitions.get(partition)
        if lag is not None and end_offset is not None:
            lag.end_offset = end_offset

    def snapshot(self, now: float | None = None) -> list[tuple[int, int, int, int, float]]:
        """(partition, next offset, end offset, records behind, seconds behind) per partition."""
        now = time.time() if now is None else now
        return [
            (p, lag.next_offset, lag.end_offset if lag.end_offset is not None else lag.next_offset,
             lag.records_behind(), lag.seconds_behind(now))
            for p, lag in sorted(self.partitions.items())
        ]

    async def publish(self, pool: asyncpg.Pool) -> None:
        rows = self.snapshot()
        if self.metrics is not None:
            for p, _, _, records, seconds in rows:
                labels = (self.projection, self.topic, str(p))
                self.metrics.lag_records.labels(*labels).set(records)
                self.metrics.lag_seconds.labels(*labels).set(seconds)
        if rows:
            columns = list(zip(*rows, strict=True))
            await pool.execute(_UPSERT, self.projection, self.topic, *map(list, columns))
