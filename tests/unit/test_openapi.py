from pathlib import Path

from command.openapi import document, render

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_openapi_document_is_current() -> None:
    committed = (REPO / "openapi.json").read_text()
    assert committed == render(), "openapi.json drifted: run `python -m command.openapi`"


def test_every_route_of_the_api_is_documented() -> None:
    from command.bootstrap import create_app
    from common.settings import load

    app = create_app(load({"LEDGERLINE_JWT_SECRET": "k" * 40}))
    routes = {r.path for r in app.routes if r.path.startswith("/v1/")}  # type: ignore[attr-defined]
    assert routes == set(document()["paths"])


def test_the_error_codes_are_the_closed_enum() -> None:
    from command.errors import Code

    schema = document()["components"]["schemas"]["ErrorCode"]
    assert schema["enum"] == [c.value for c in Code]
    assert all(c.description for c in Code)
    for c in Code:
        assert f"`{c.value}`" in schema["description"]


def test_the_documented_patterns_are_the_grammar() -> None:
    import re

    from events.amounts import AmountError, parse_amount

    paths = document()["paths"]
    amount = paths["/v1/burns"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "properties"]["amount"]["pattern"]
    for text in ["1", "0.01", "10.50", "0", "0.00", "00", "-1", " 1", "1 ", "１", "٠.٠١", "1e3",
                 "0.01\u00a0", "1.", ".5", "1\n"]:
        try:
            parse_amount(text, 2)
            accepted = True
        except AmountError:
            accepted = False
        assert (re.fullmatch(amount, text) is not None) == accepted, text


def test_bodies_refuse_unknown_fields_and_say_what_json_schema_cannot() -> None:
    for path, item in document()["paths"].items():
        if "post" not in item:
            continue
        body = item["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["additionalProperties"] is False, path
        answers = item["post"]["responses"]
        assert {"405", "409", "431", "503"} <= answers.keys(), path
        assert "Allow" in answers["405"]["headers"]
    transfers = document()["paths"]["/v1/transfers"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    assert "same_wallet" in transfers["description"]
