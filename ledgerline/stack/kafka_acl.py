"""Who may touch which topic: one SCRAM user per process and the ACLs of the secure profile.

The broker runs KRaft's ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``, so a
principal may do exactly what is granted here and nothing else; the stack's admin user is a
super user (it creates the topics and these ACLs). ACLs are created with the Kafka protocol's
CreateAcls request through aiokafka's admin client (it has no public call for it); creating an
ACL that exists already is a no-op, so :func:`apply_acls` runs on every start.
"""

import logging
from dataclasses import dataclass

from common.kafka import Kafka, client_options
from events import topics

log = logging.getLogger("ledgerline.stack")

ADMIN_USER = "ledgerline-admin"
#: process -> its SCRAM user. The compliance monitor's user exists before the monitor does.
USERS = {
    "command-api": "ledgerline-command",
    "processor": "ledgerline-processor",
    "projector": "ledgerline-projector",
    "compliance": "ledgerline-compliance",
}
COMPLIANCE_GROUP = "ledger-compliance"

# Kafka's protocol codes (org.apache.kafka.common.resource / acl).
TOPIC, GROUP, TRANSACTIONAL_ID = 2, 3, 5
LITERAL, PREFIXED = 3, 4
READ, WRITE, DESCRIBE = 3, 4, 8
ALLOW = 3


@dataclass(frozen=True)
class Acl:
    user: str
    resource_type: int
    name: str
    operation: int
    pattern: int = LITERAL


def _reads(user: str, *names: str) -> list[Acl]:
    return [Acl(user, TOPIC, n, op) for n in names for op in (READ, DESCRIBE)]


def _writes(user: str, *names: str) -> list[Acl]:
    return [Acl(user, TOPIC, n, op) for n in names for op in (WRITE, DESCRIBE)]


def acls() -> list[Acl]:
    """Every grant of the secure profile; anything not listed is refused."""
    command, processor = USERS["command-api"], USERS["processor"]
    projector, compliance = USERS["projector"], USERS["compliance"]
    return [
        # The command API appends requests, nothing else.
        *_writes(command, topics.COMMANDS),
        # ... and compliance's requests: case actions, the sanctions list, KYC tiers.
        *_writes(command, topics.CASE_COMMANDS, topics.SANCTIONS, topics.KYC),
        # The processor decides: reads requests and its snapshots, writes events, snapshots,
        # follow-up requests and dead letters, in transactions of its own ids, in its own group.
        # It also holds the sanctions list and KYC tiers, and signs the chain's checkpoints.
        *_reads(processor, topics.COMMANDS, topics.STATE, topics.SANCTIONS, topics.KYC),
        *_writes(processor, topics.EVENTS, topics.STATE, topics.COMMANDS, topics.DLQ, topics.ANCHORS),
        Acl(processor, GROUP, topics.PROCESSOR_GROUP, READ),
        Acl(processor, TRANSACTIONAL_ID, topics.PROCESSOR_GROUP, WRITE, PREFIXED),
        Acl(processor, TRANSACTIONAL_ID, topics.PROCESSOR_GROUP, DESCRIBE, PREFIXED),
        # The projector reads events (and, to rebuild, the dead letters it must skip) and
        # writes dead letters.
        *_reads(projector, topics.EVENTS, topics.DLQ),
        *_writes(projector, topics.DLQ),
        Acl(projector, GROUP, topics.PROJECTOR_GROUP, READ, PREFIXED),
        # The compliance monitor reads events and case actions; writes alerts, case outcomes,
        # dead letters and the freezes its rules ask for (ordinary requests).
        *_reads(compliance, topics.EVENTS, topics.CASE_COMMANDS),
        *_writes(compliance, topics.DLQ, topics.ALERTS, topics.CASE_EVENTS, topics.COMMANDS),
        Acl(compliance, GROUP, COMPLIANCE_GROUP, READ, PREFIXED),
    ]


async def apply_acls(kafka: Kafka, wanted: list[Acl] | None = None) -> int:
    """Create ``wanted`` (default :func:`acls`) as ``kafka``'s (super) user; how many."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import for_code
    from aiokafka.protocol.admin import CreateAclsRequest

    wanted = acls() if wanted is None else wanted
    admin = AIOKafkaAdminClient(**client_options(kafka), client_id="ledgerline-acls")
    await admin.start()
    try:
        for acl in wanted:
            request = CreateAclsRequest(acl.resource_type, acl.name, acl.pattern, f"User:{acl.user}",
                                        "*", acl.operation, ALLOW)
            response = await admin._send_request(request)  # no public call for CreateAcls
            for code, message in response.creation_responses:
                if code:
                    raise RuntimeError(f"creating ACL {acl}: {for_code(code).__name__} {message or ''}")
    finally:
        await admin.close()
    log.info("%d ACLs in place", len(wanted))
    return len(wanted)
