"""The command API's reading of bodies: every refusal a 4xx with a stable code, none a crash."""

import json

import pytest

from command import validate
from command.errors import ApiError, Code
from events import grammar


def _refusal(call: object) -> ApiError:
    with pytest.raises(ApiError) as error:
        call()  # type: ignore[operator]
    return error.value


@pytest.mark.parametrize(("raw", "code"), [
    (b'{"a": "\xff"}', Code.MALFORMED_JSON),
    (b'{"\xed\xa0\x80": 1}', Code.MALFORMED_JSON),
    (b"[" * 1000 + b"]" * 1000, Code.JSON_TOO_DEEP),
    (b"[" * 100_000, Code.JSON_TOO_DEEP),
    (b'{"a": ' * 40 + b"1" + b"}" * 40, Code.JSON_TOO_DEEP),
    (b'{"a": NaN}', Code.MALFORMED_JSON),
    (b"[]", Code.MALFORMED_JSON),
    (b"", Code.MALFORMED_JSON),
])
def test_unreadable_bodies_are_400(raw: bytes, code: Code) -> None:
    error = _refusal(lambda: validate.parse_json(raw))
    assert (error.status, error.code) == (400, code)


def test_depth_is_counted_outside_strings_only() -> None:
    memo = "[" * 200 + '\\"' + "{" * 200
    assert validate.parse_json(json.dumps({"memo": memo}).encode())["memo"] == memo
    assert not grammar.json_too_deep(b'{"a": ' * 31 + b"1" + b"}" * 31)
    assert grammar.json_too_deep(b'{"a": ' * 33 + b"1" + b"}" * 33)


@pytest.mark.parametrize(("value", "says"), [
    ("", "empty"), ("  ", "empty"), ("a\u0000b", "U+0000"), ("a\nb", "U+000A"),
    ("\u009b", "U+009B"), ("\ud800", "U+D800"),
    ("x" * 281, "280"),
])
def test_free_text_is_refused_naming_the_field(value: str, says: str) -> None:
    error = _refusal(lambda: validate.text({"reason": value}, "reason"))
    assert (error.status, error.code, error.field) == (422, Code.INVALID_FIELD, "reason")
    assert says in error.message


def test_optional_text_may_be_absent_null_or_empty() -> None:
    assert validate.optional_text({}, "memo", empty=True) is None
    assert validate.optional_text({"memo": None}, "memo", empty=True) is None
    assert validate.optional_text({"memo": ""}, "memo", empty=True) == ""
    assert validate.optional_text({"memo": "café ☕"}, "memo", empty=True) == "café ☕"


def test_unknown_fields_are_refused_and_named_only_when_printable() -> None:
    error = _refusal(lambda: validate.only({"to": "b", "tO": 1}, frozenset({"to"})))
    assert (error.code, error.field) == (Code.UNKNOWN_FIELD, "tO")
    error = _refusal(lambda: validate.only({"bad\n": 1}, frozenset({"to"})))
    assert error.code == Code.UNKNOWN_FIELD and error.field is None
    validate.only({"to": "b"}, frozenset({"to", "amount"}))


@pytest.mark.parametrize("value", [
    "0d5b7c1a-3a52-4f0e-9c7e-6f2b8e1d4a90\n", "{0d5b7c1a-3a52-4f0e-9c7e-6f2b8e1d4a90}",
    "0D5B7C1A-3A52-4F0E-9C7E-6F2B8E1D4A90", "0d5b7c1a3a524f0e9c7e6f2b8e1d4a90", "",
    "0d5b7c1a-3a52-4f0e-9c7e-6f2b8e1d4a9\u0660",
])
def test_a_command_id_is_the_canonical_form_only(value: str) -> None:
    error = _refusal(lambda: validate.command_id(value))
    assert (error.status, error.code) == (422, Code.INVALID_COMMAND_ID)


def test_every_code_is_documented_and_errors_take_only_codes() -> None:
    assert all(c.description for c in Code)
    assert len({c.value for c in Code}) == len(Code)
    with pytest.raises(ValueError):
        ApiError(400, "no_such_code", "x")  # type: ignore[arg-type]
    response = ApiError(405, Code.METHOD_NOT_ALLOWED, "x", headers={"Allow": "POST"}).response()
    assert response.headers["allow"] == "POST"
    assert json.loads(response.body) == {"error": {"code": "method_not_allowed", "message": "x"}}


def test_a_whole_number_written_as_a_json_float_is_an_integer() -> None:
    # JSON Schema counts 6.0 as an integer, so the OpenAPI document lets clients send it.
    assert validate.field({"decimals": 6.0}, "decimals", int) == 6
    assert type(validate.field({"decimals": 6.0}, "decimals", int)) is int
    error = _refusal(lambda: validate.field({"decimals": 6.5}, "decimals", int))
    assert (error.status, error.code, error.field) == (422, Code.INVALID_FIELD, "decimals")


def test_the_openapi_text_pattern_says_what_the_server_accepts() -> None:
    import re
    pattern = re.compile(grammar.TEXT_PATTERN)
    for value in ("a", "  a ", "caf\u00e9 \U0001f600", "x" * 280):
        assert pattern.fullmatch(value) and validate.text({"r": value}, "r") == value
    for value in ("", "   ", "a\u0000", "a\nb", "\u0085"):
        assert not pattern.fullmatch(value)
        _refusal(lambda value=value: validate.text({"r": value}, "r"))
