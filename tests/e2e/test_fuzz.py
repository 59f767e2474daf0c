"""Both edges fuzzed with schemathesis against the running processes: the command API from its
OpenAPI document, the query API from its GraphQL schema, each as an operator, as a wallet's
owner and with no token.

The cases are generated from the snapshots kept in the repository (``openapi.json``,
``schema.graphql``): schemathesis makes its tests when pytest collects them, before any process
runs (its loader from a fixture does not work with pytest 9.2). The first test checks that the
running APIs serve exactly those documents.

Every answer must pass schemathesis' checks, all of those it runs by default: no 5xx, the status
code, content type, headers and body the document promises, schema-valid input accepted and
invalid input refused, auth not ignored, 405 with ``Allow``. Four checks are narrowed where
their premise does not hold, each in a function below that says why: a 422 for what no JSON
Schema can express (an unknown asset, two wallets that must differ, more decimals than the asset
has), GraphQL's ``forbidden`` for an owner asking about another wallet, GraphQL arguments refused
``BAD_USER_INPUT`` for a range, grammar or set no GraphQL type can state, and, without a token,
GraphQL must refuse everything with 401 (instead of accepting schema-valid queries). Afterwards
nothing the fuzz sent may have reached the dead-letter topic, and ``ledgerline audit`` must find
the books balanced.

A fuzz test does not stop at its first failure: it fails at the end with every distinct one
(check, status, the API's error code and message), each with a request that reproduces it and a
label, ``known: ...`` (KNOWN below) or ``NOT KNOWN``. ``LEDGERLINE_FUZZ_REPORT=FILE`` also
appends them to FILE as JSON lines.

Bounded for a 2-core machine (about 2-3 minutes for the module): a fixed number of generated
cases per operation and caller, Hypothesis without shrinking and without a deadline.
``LEDGERLINE_FUZZ_EXAMPLES`` (default 30) and ``LEDGERLINE_FUZZ_SEED`` change the number and the
seed; the seed is fixed so that a failure found once is found again.
"""
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import graphql
import httpx
import pytest
import schemathesis
from aiokafka import AIOKafkaConsumer, TopicPartition
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import positive_data_acceptance

from common.kafka import client_options
from common.topic_reader import partitions_of, read_to_end
from ledgerline.stack.topics import COMMANDS_TOPIC, DLQ_TOPIC, EVENTS_TOPIC
from tests.conftest import REPO, Running, token

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("LEDGERLINE_FUZZ_EXAMPLES") or 30)
SEED = int(os.environ.get("LEDGERLINE_FUZZ_SEED") or 20261202)
OWNER = "fuzz-owner"

# Who calls: the Authorization header each caller sends (none for "anonymous").
CALLERS: dict[str, dict[str, str]] = {
    "operator": {"Authorization": f"Bearer {token('fuzz-ops', roles=['operator'])}"},
    "owner": {"Authorization": f"Bearer {token(OWNER, wallets=[OWNER])}"},
    "anonymous": {},
}
by_caller = pytest.mark.parametrize("caller", list(CALLERS))

CONFIG = schemathesis.Config.from_dict({
    "seed": SEED,
    "generation": {"max-examples": EXAMPLES, "no-shrink": True},
    "request-timeout": 60,
})
command_schema = schemathesis.openapi.from_path(REPO / "openapi.json", config=CONFIG)
query_schema = schemathesis.graphql.from_path(REPO / "schema.graphql", config=CONFIG)

# The schema's examples and boundary cases, then generated ones; without Hypothesis' shrinking
# (the raw failing request is what a report needs) and without a deadline (a busy 2-core
# machine answers slowly without being wrong).
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
                print_blob=False)


@dataclass
class Sent:
    """How many cases the fuzz tests sent: the final check means something only after some."""

    cases: int = 0


SENT = Sent()

# Refusals of schema-valid input that no JSON Schema can express, answered 422 as documented:
# whether an asset exists, two fields that must differ, an amount finer than the asset's
# decimals (which another field, or the registered asset, sets). Any other 422 to schema-valid
# input means the document is looser than the server, and stays a failure.
DOMAIN_REFUSALS = frozenset({"unknown_asset", "same_wallet", "same_asset", "too_many_decimals"})


_LISTED = re.compile(r"\[[^\]]*\]")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`")


def _answer_error(response: schemathesis.Response) -> tuple[str | None, str]:
    """The API's error code in an answer (``error.code`` over HTTP, ``extensions.code`` in
    GraphQL) and its message with the quoted values left out (what tells two refusals apart)."""
    try:
        body = response.json()
    except ValueError:
        return None, ""
    error: object = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        code = error.get("code")
    elif isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
        error = body["errors"][0]
        code = (error.get("extensions") or {}).get("code") if isinstance(error, dict) else None
    else:
        return None, ""
    message = str(error.get("message", "")) if isinstance(error, dict) else ""
    return (None if code is None else str(code)), _QUOTED.sub("…", _LISTED.sub("…", message))


def _answer_code(response: schemathesis.Response) -> str | None:
    return _answer_error(response)[0]


def positive_data_acceptance_except_domain_refusals(
        ctx: schemathesis.CheckContext, response: schemathesis.Response,
        case: schemathesis.Case) -> bool | None:
    """schemathesis' ``positive_data_acceptance``, but for the refusals in DOMAIN_REFUSALS."""
    if response.status_code == 422 and _answer_code(response) in DOMAIN_REFUSALS:
        return None
    return positive_data_acceptance(ctx, response, case)


def _graphql_codes(response: schemathesis.Response) -> set[str | None]:
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        return {None}
    return {(e.get("extensions") or {}).get("code") if isinstance(e, dict) else None for e in errors}


def not_a_server_error_but_forbidden(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                                     case: schemathesis.Case) -> bool | None:
    """schemathesis' ``not_a_server_error``, but a GraphQL field refused only as ``forbidden`` (a
    wallet's owner asking about another's: GraphQL's 403, which the HTTP checks accept too) is
    not taken for a server error, as schemathesis does with any error that has a ``path``."""
    if response.status_code == 200 and _graphql_codes(response) == {"forbidden"}:
        return None
    return not_a_server_error(ctx, response, case)


#: GraphQL argument refusals for what no GraphQL type can say: a value's range (``first`` at most
#: 100, not negative), grammar (a wallet id, a symbol, an id) or set (a trade's status), and
#: cursors only the API hands out. Each is coded ``BAD_USER_INPUT`` and names its argument.
ARGUMENT_REFUSALS = frozenset({"invalid_argument", "invalid_cursor", "page_too_large"})


def _graphql_extensions(response: schemathesis.Response) -> list[dict[str, object]]:
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        return []
    return [e.get("extensions") or {} if isinstance(e, dict) else {} for e in errors]


def graphql_acceptance_except_argument_refusals(
        ctx: schemathesis.CheckContext, response: schemathesis.Response,
        case: schemathesis.Case) -> bool | None:
    """schemathesis' ``positive_data_acceptance`` for GraphQL, but an argument refused for a
    rule no GraphQL type can express (ARGUMENT_REFUSALS, coded and classified as the client's
    input) is a correct answer, not a schema-valid query rejected."""
    extensions = _graphql_extensions(response)
    if response.status_code == 200 and extensions and all(
            x.get("code") in ARGUMENT_REFUSALS and x.get("classification") == "BAD_USER_INPUT"
            for x in extensions):
        return None
    return positive_data_acceptance(ctx, response, case)


def anonymous_queries_are_refused(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                                  case: schemathesis.Case) -> bool | None:
    """Without a token every query is refused, 401 ``unauthenticated``; this stands in for
    ``positive_data_acceptance``, whose premise (a caller allowed to ask) does not hold here."""
    code = _answer_code(response)
    assert (response.status_code, code) == (401, "unauthenticated"), (
        f"a query without a token was answered {response.status_code} {code}")
    return None


@dataclass(frozen=True)
class Finding:
    """One distinct failure: which check, the answer, and a request that reproduces it."""

    check: str
    status: int
    code: str | None
    reason: str
    request: str
    answer: str

    def __str__(self) -> str:
        return (f"[{self.known or 'NOT KNOWN'}] {self.check}: {self.status} {self.code or ''} "
                f"{self.reason}\n    {self.request}\n    -> {self.answer}")

    @property
    def known(self) -> str | None:
        """The known bug this is, if it is one (see KNOWN)."""
        for label, check, code, words in KNOWN:
            if self.check.startswith(check) and self.code == code and words in self.reason:
                return label
        return None


# Failures known and accepted for now: a finding matching one is labelled with it; every other
# one says NOT KNOWN. Empty: every finding fails the suite.
KNOWN: list[tuple[str, str, str, str]] = []  # (label, check, API error code, words of its message)


# One per distinct (check, status, error code and message): the first request that showed it.
Findings = dict[tuple[str, int, str], Finding]


@pytest.fixture
def findings(request: pytest.FixtureRequest) -> Iterator[Findings]:
    """Every distinct failure of one fuzz test: the test goes on past the first, so one run shows
    them all; they fail it at the end."""
    found: Findings = {}
    yield found
    if report := os.environ.get("LEDGERLINE_FUZZ_REPORT"):
        with open(report, "a") as out:
            for finding in found.values():
                out.write(json.dumps({"test": request.node.name, **asdict(finding)}) + "\n")
    if found:
        pytest.fail(f"{len(found)} distinct failures:\n" + "\n".join(map(str, found.values())),
                    pytrace=False)


def _fuzz(case: schemathesis.Case, base_url: str, caller: str,
          found: Findings, *, graphql_api: bool = False) -> None:
    SENT.cases += 1
    headers = CALLERS[caller]
    if not headers:
        # No token at all (schemathesis would make up one for the security scheme).
        case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    response = case.call(base_url=base_url, headers=headers)
    if graphql_api and not headers:
        checks = {"excluded_checks": [positive_data_acceptance],
                  "additional_checks": [anonymous_queries_are_refused]}
    elif graphql_api:
        checks = {"excluded_checks": [not_a_server_error, positive_data_acceptance],
                  "additional_checks": [not_a_server_error_but_forbidden,
                                        graphql_acceptance_except_argument_refusals]}
    else:
        checks = {"excluded_checks": [positive_data_acceptance],
                  "additional_checks": [positive_data_acceptance_except_domain_refusals]}
    try:
        case.validate_response(response, headers=headers,
                               transport_kwargs={"base_url": base_url, "headers": dict(headers)},
                               **checks)
    except FailureGroup as group:
        code, reason = _answer_error(response)
        for failure in group.exceptions:
            name = f"{getattr(failure, 'code', 'custom')} {getattr(failure, 'title', type(failure).__name__)}"
            message = str(getattr(failure, "message", failure)).strip().splitlines() or [""]
            key = (name, response.status_code, f"{code} {reason}")
            found.setdefault(key, Finding(
                check=f"{name} ({message[0]})", status=response.status_code, code=code, reason=reason,
                request=case.as_curl_command(base_url=base_url),
                answer=response.content[:400].decode(errors="replace")))


@pytest.fixture(scope="module")
async def dlq_before(running: Running) -> dict[int, int]:
    return await _end_offsets(running.stack.infra.bootstrap, DLQ_TOPIC)


async def test_the_apis_serve_the_documents_the_fuzz_is_made_from(
        running: Running, dlq_before: dict[int, int]) -> None:
    auth = CALLERS["operator"]
    async with httpx.AsyncClient(timeout=30) as http:
        served = (await http.get(f"{running.command_url}/openapi.json")).json()
        introspected = (await http.post(running.graphql_url, headers=auth, json={
            "query": graphql.get_introspection_query(descriptions=True)})).json()
    assert served == json.loads((REPO / "openapi.json").read_text())
    kept = graphql.build_schema((REPO / "schema.graphql").read_text())
    live = graphql.build_client_schema(introspected["data"])
    changes = [*graphql.find_breaking_changes(kept, live), *graphql.find_dangerous_changes(kept, live),
               *graphql.find_breaking_changes(live, kept), *graphql.find_dangerous_changes(live, kept)]
    assert [c.description for c in changes] == []


@FUZZ
@by_caller
@command_schema.parametrize()
def test_the_command_api_answers_every_request_as_documented(
        case: schemathesis.Case, running: Running, caller: str, dlq_before: dict[int, int],
        findings: Findings) -> None:
    _fuzz(case, running.command_url, caller, findings)


@FUZZ
@by_caller
@query_schema.parametrize()
def test_the_query_api_answers_every_query_as_documented(
        case: schemathesis.Case, running: Running, caller: str, dlq_before: dict[int, int],
        findings: Findings) -> None:
    _fuzz(case, running.graphql_url, caller, findings, graphql_api=True)


# -- after the fuzz: the pipeline behind the edges ----------------------------------------------


async def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
    consumer = AIOKafkaConsumer(**client_options(bootstrap), isolation_level="read_committed")
    await consumer.start()
    try:
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def _settled(bootstrap: str, quiet: float = 3.0, limit: float = 90.0) -> None:
    """Wait until nothing more is appended to the commands, events and dead letters: what the
    fuzz sent has been decided (the audit then waits for the projector)."""
    deadline, last, since = time.monotonic() + limit, None, time.monotonic()
    while time.monotonic() < deadline:
        now = [await _end_offsets(bootstrap, t) for t in (COMMANDS_TOPIC, EVENTS_TOPIC, DLQ_TOPIC)]
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        await asyncio.sleep(0.5)


async def _audit(running: Running) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ledgerline", "audit", "--wait", "60",
        env=running.stack.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_the_fuzz_left_no_dead_letters_and_balanced_books(
        running: Running, dlq_before: dict[int, int]) -> None:
    assert SENT.cases > 0, "run with the fuzz tests above: nothing was sent"
    bootstrap = running.stack.infra.bootstrap
    await _settled(bootstrap)
    code, out = await _audit(running)
    read = await read_to_end(bootstrap, DLQ_TOPIC)
    new = [(p, r.offset, r.headers, r.value[:300] if r.value else r.value)
           for p, records in sorted(read.items()) for r in records if r.offset >= dlq_before.get(p, 0)]
    assert new == [], f"{len(new)} dead letters from the fuzz run"
    assert code == 0 and "MISMATCH" not in out, out[-5000:]
