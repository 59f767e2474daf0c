"""Read-model builders: pure ``events -> row changes``, the batched Kafka-to-Postgres worker, DLQ."""
