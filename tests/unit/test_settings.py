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
