"""The command API's cheaper ids and partitioning give exactly what the standard ones give."""

import uuid

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from command.ids import name_id, random_id
from command.producer import KeyHashPartitioner

NS = uuid.UUID("0d5b7c1a-3a52-4f0e-9c7e-6f2b8e1d4a90")


@given(st.text(max_size=300))
def test_a_name_id_is_uuid5(name: str) -> None:
    assert name_id(NS, name) == str(uuid.uuid5(NS, name))


def test_a_random_id_is_a_version_4_uuid_printed_as_uuid_prints_it() -> None:
    ids = {random_id() for _ in range(1000)}
    assert len(ids) == 1000
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


@given(st.binary(min_size=1, max_size=80), st.integers(min_value=1, max_value=64))
def test_keys_land_on_the_default_partition(key: bytes, count: int) -> None:
    partitions = list(range(count))
    cached = KeyHashPartitioner()
    expected = DefaultPartitioner()(key, partitions, partitions)
    assert cached(key, partitions, partitions) == expected
    assert cached(key, partitions, partitions) == expected  # from the remembered hash


def test_the_remembered_hashes_stay_bounded() -> None:
    cached = KeyHashPartitioner(size=10)
    for i in range(25):
        cached(f"wallet:{i}".encode(), [0, 1, 2, 3], [0, 1, 2, 3])
    assert len(cached._hashes) <= 10
