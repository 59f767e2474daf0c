"""Kafka topic names and consumer groups: part of the contract between processes."""

COMMANDS = "ledger.commands"
EVENTS = "ledger.events"
STATE = "ledger.state"
DLQ = "ledger.dlq"
ANCHORS = "ledger.anchors"  # signed checkpoints of the hash chain (events.chain)

PROCESSOR_GROUP = "ledger-processor"
PROJECTOR_GROUP = "ledger-projector"

# The compliance monitor's own topics and group (see docs/compliance.md).
ALERTS = "compliance.alerts"
CASE_COMMANDS = "compliance.commands"
CASE_EVENTS = "compliance.events"
#: The sanctions list: compacted, keyed ``wallet:<id>``, the latest record of a key wins.
SANCTIONS = "compliance.sanctions"
#: KYC tiers: compacted, keyed ``wallet:<id>``: each wallet's tier and its 24 h limits.
KYC = "compliance.kyc"
COMPLIANCE_GROUP = "ledger-compliance"
