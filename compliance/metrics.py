"""The compliance monitor's Prometheus metrics (served with ``/healthz`` by :mod:`common.ops`).

The registry is made per process (in ``main``), never at import.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class MonitorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("ledgerline_compliance_events", "Records of ledger.events evaluated",
                              registry=r)
        self.alerts = Counter("ledgerline_compliance_alerts", "Alerts raised (new rows), by rule",
                              ["rule"], registry=r)
        self.dead_letters = Counter("ledgerline_compliance_dead_letters",
                                    "Records the monitor could not decode or evaluate", registry=r)
        self.batch_seconds = Histogram("ledgerline_compliance_batch_seconds",
                                       "Time to write one batch, its state and offsets", registry=r)
        self.retries = Counter("ledgerline_compliance_retries",
                               "Batches retried after a transient failure", registry=r)
        self.lag_records = Gauge("ledgerline_compliance_lag_records",
                                 "Records of ledger.events not evaluated yet", ["partition"], registry=r)
