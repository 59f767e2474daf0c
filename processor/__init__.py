"""The ledger processor: pure deciders, the fenced Kafka loop, snapshots and ``audit``."""
