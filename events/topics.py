"""Kafka topic names and consumer groups: part of the contract between processes."""

COMMANDS = "ledger.commands"
EVENTS = "ledger.events"
STATE = "ledger.state"
DLQ = "ledger.dlq"
ANCHORS = "ledger.anchors"  # signed checkpoints of the hash chain (events.chain)

PROCESSOR_GROUP = "ledger-processor"
PROJECTOR_GROUP = "ledger-projector"
