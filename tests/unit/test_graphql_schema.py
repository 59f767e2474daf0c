"""The schema in the repository is the schema the code serves."""

from query.print_schema import SCHEMA_FILE, main, sdl


def test_schema_graphql_matches_the_code() -> None:
    assert SCHEMA_FILE.read_text() == sdl(), (
        "schema.graphql is out of date: run `python -m query.print_schema --write` and commit it"
    )
    assert main(["--check"]) == 0


def test_schema_offers_the_documented_entry_points() -> None:
    text = sdl()
    for entry in ("wallet(id: ID!): Wallet", "transfer(id: ID!): Transfer", "trade(id: ID!): Trade",
                  "transfers(", "trades(", "events(", "assets(", "commandStatus(id: ID!)",
                  "freshness: Freshness!", "walletBalances(wallet: ID!)", "transferStatus(id: ID!)",
                  "tradeStatus(id: ID!)", "enum ErrorCode"):
        assert entry in text, entry


def test_a_database_that_is_away_answers_the_unavailable_code() -> None:
    from graphql import GraphQLError

    from query.errors import coded

    away = GraphQLError("connect failed", original_error=ConnectionRefusedError(111, "refused"))
    assert coded(away).extensions == {"code": "unavailable", "classification": "UNAVAILABLE"}
    assert coded(away).message == "the database is unavailable; retry shortly"
