"""The projector's Prometheus metrics (served with ``/healthz`` by :mod:`common.ops`).

The registry is made per process (in ``main``), never at import.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ProjectorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("ledgerline_projector_events", "Records applied to the views",
                              ["projection"], registry=r)
        self.dead_letters = Counter("ledgerline_projector_dead_letters",
                                    "Records sent to the dead-letter topic, by source topic and "
                                    "reason (undecodable, unappliable, refused_by_database)",
                                    ["projection", "topic", "reason"], registry=r)
        self.dead_letters_stored = Gauge("ledgerline_projection_dead_letters",
                                         "Records of the event log not in the views because they "
                                         "were dead-lettered (rows of dead_letters; survives "
                                         "restarts)", ["projection"], registry=r)
        self.batch_size = Histogram("ledgerline_projector_batch_records", "Records per committed batch",
                                    ["projection"], registry=r,
                                    buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000))
        self.batch_seconds = Histogram("ledgerline_projector_batch_seconds",
                                       "Time to write one batch and its offsets", ["projection"],
                                       registry=r)
        self.retries = Counter("ledgerline_projector_retries",
                               "Batches retried after a transient failure", ["projection"], registry=r)
        labels = ["projection", "topic", "partition"]
        self.lag_records = Gauge("ledgerline_projection_lag_records",
                                 "Records in the topic not yet applied to the views", labels, registry=r)
        self.lag_seconds = Gauge("ledgerline_projection_lag_seconds",
                                 "Age of the newest applied record while records are pending, else 0",
                                 labels, registry=r)
