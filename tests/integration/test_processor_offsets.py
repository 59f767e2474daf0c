"""The processor's group offsets: not part of its transactions (the checkpoint in
``ledger.state`` is), but moved up to what it has decided soon after, for lag tooling."""

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from events import codec, topics
from events.keys import wallet_key
from events.messages import InitiateTransfer
from tests.conftest import Running, unique
from tests.integration.ledger import read_events

pytestmark = pytest.mark.integration


async def test_group_offsets_follow_what_the_processor_decided(running: Running) -> None:
    bootstrap = running.stack.infra.bootstrap
    wallet = unique("offsets")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = []
        for _ in range(5):  # refused (no such asset), which is a decision all the same
            env = codec.envelope(
                InitiateTransfer(transfer_id=str(uuid.uuid4()), source=wallet, target="nobody",
                                 asset="NOSUCHASSET", amount=1),
                key=wallet_key(wallet), command_id=str(uuid.uuid4()), principal=wallet)
            sent.append((env.command_id, await producer.send_and_wait(
                topics.COMMANDS, codec.encode(env), key=wallet_key(wallet).encode())))
    finally:
        await producer.stop()
    last = sent[-1][1]
    tp = TopicPartition(topics.COMMANDS, last.partition)

    async def decided() -> bool:
        return sent[-1][0] in {e.command_id for e in await read_events(bootstrap)}

    async def committed() -> int:
        offsets = await admin.list_consumer_group_offsets(topics.PROCESSOR_GROUP, partitions=[tp])
        return offsets[tp].offset if tp in offsets else -1

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for _ in range(300):
            if await decided() and await committed() > last.offset:
                break
            await asyncio.sleep(0.1)
        assert await decided(), "the processor did not decide the commands"
        assert await committed() > last.offset, "the group's offset stayed behind what was decided"
    finally:
        await admin.close()
