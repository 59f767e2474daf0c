"""The processor's Prometheus metrics (served by :mod:`common.ops`)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class ProcessorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.commands = Counter("ledgerline_processor_commands",
                                "Commands handled, by outcome: decided, duplicate (ignored), dead_letter",
                                ["outcome"], registry=r)
        self.batch_size = Histogram("ledgerline_processor_batch_records", "Commands per transaction",
                                    registry=r, buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000))
        self.transaction_seconds = Histogram("ledgerline_processor_transaction_seconds",
                                             "Time to write and commit one batch's transaction",
                                             registry=r, buckets=_LATENCY)
        self.decide_latency = Histogram("ledgerline_processor_decide_latency_seconds",
                                        "From a command's append to Kafka to the commit of its decision",
                                        registry=r, buckets=_LATENCY)
        self.retries = Counter("ledgerline_processor_retries",
                               "Batches decided again after a transient failure", registry=r)
        self.partitions = Gauge("ledgerline_processor_partitions", "Input partitions this instance owns",
                                registry=r)
