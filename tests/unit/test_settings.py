import pytest

from common.settings import SettingsError, load


def test_defaults_follow_the_wire_contract() -> None:
    s = load({})
    assert (s.query_port, s.command_port, s.kafka_bootstrap) == (8000, 8001, "127.0.0.1:9092")


def test_a_malformed_value_names_its_key() -> None:
    with pytest.raises(SettingsError, match="LEDGERLINE_QUERY_PORT"):
        load({"LEDGERLINE_QUERY_PORT": "eighty"})
    with pytest.raises(SettingsError, match="LEDGERLINE_PARTITIONS"):
        load({"LEDGERLINE_PARTITIONS": "0"})


def test_the_apis_refuse_to_start_without_a_strong_secret() -> None:
    with pytest.raises(SettingsError, match="LEDGERLINE_JWT_SECRET"):
        load({}).require_jwt_secret()
    with pytest.raises(SettingsError, match="at least 32"):
        load({"LEDGERLINE_JWT_SECRET": "short"}).require_jwt_secret()
    assert load({"LEDGERLINE_JWT_SECRET": "k" * 32}).require_jwt_secret() == "k" * 32


def test_static_membership_is_off_unless_an_instance_id_is_given() -> None:
    assert load({}).group_instance_id is None
    assert load({"LEDGERLINE_GROUP_INSTANCE_ID": "processor-0"}).group_instance_id == "processor-0"
    for bad in ("processor 0", "a/b", "x" * 250, "proc\n"):
        with pytest.raises(SettingsError, match="LEDGERLINE_GROUP_INSTANCE_ID"):
            load({"LEDGERLINE_GROUP_INSTANCE_ID": bad})


def test_the_local_stack_gives_each_group_member_the_id_of_its_slot() -> None:
    from ledgerline.local import PROCESSES, instance_env

    ids = {name: instance_env(name).get("LEDGERLINE_GROUP_INSTANCE_ID") for name in PROCESSES}
    assert ids == {"processor": "processor-0", "projector": "projector-0",
                   "compliance": "compliance-0", "command-api": None, "query-api": None}
    assert instance_env("processor", 1) == {"LEDGERLINE_GROUP_INSTANCE_ID": "processor-1"}
