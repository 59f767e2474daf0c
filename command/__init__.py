"""The write side: the HTTP command API, the pure deciders and the Kafka processor loop."""
