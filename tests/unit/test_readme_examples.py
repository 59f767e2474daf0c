"""The README's GraphQL examples are valid against the schema, and its curl bodies parse."""

import json
import re
from pathlib import Path

from graphql import parse, validate

from query.schema import schema

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_graphql_examples_validate_against_the_schema() -> None:
    blocks = re.findall(r"```graphql\n(.*?)```", README, flags=re.S)
    assert blocks
    for block in blocks:
        errors = validate(schema._schema, parse(block))
        assert not errors, (block, errors)


def test_curl_bodies_are_json() -> None:
    bodies = re.findall(r"-d '(.*?)'", README)
    assert len(bodies) >= 3
    for body in bodies:
        json.loads(body)
