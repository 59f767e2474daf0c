"""Hostile input at the command API: racing idempotency keys, control characters, look-alike ids
and amounts, bodies no parser should recurse into, oversized heads; each refused with a stable
code (never a 500), and exactly one command per key."""

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import Running, token, unique, unique_symbol
from tests.e2e.helpers import assert_refused, balances, funded_alice, new_asset, post

pytestmark = pytest.mark.e2e

SYMBOL = unique_symbol()
ALICE = unique("alice")
ISSUER = token("treasury", roles=["issuer"], assets=[SYMBOL])
ALICE_TOKEN = token(ALICE, wallets=[ALICE])
COMPLIANCE = token("officer", roles=["compliance"])
AUDITOR = token("auditor", roles=["auditor"])
TRANSFER = {"from": ALICE, "to": "bob", "asset": SYMBOL, "amount": "1.00"}
ASSET = {"symbol": "NEWONE", "name": "n", "decimals": 2, "issuer": "treasury"}


@pytest.fixture(scope="module")
async def funded(running: Running) -> Running:
    async with httpx.AsyncClient(timeout=30) as http:
        await new_asset(http, running, ISSUER, SYMBOL)
        answer = await post(http, running, f"/v1/assets/{SYMBOL}/issue", ISSUER,
                            {"to": ALICE, "amount": "10.00"})
        assert answer.json()["status"] == "completed"
    return running


def _auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


# --- 1. one command per Idempotency-Key, however many requests race -------------------------

async def test_fifty_racing_requests_on_one_key_run_exactly_one_command(
    http: httpx.AsyncClient, running: Running
) -> None:
    f = await funded_alice(http, running, "100.00")
    key = unique("race-")
    # 25 identical bodies, interleaved with 25 that differ from them and from each other.
    def body(amount: str) -> dict[str, str]:
        return {"from": f.alice, "to": f.bob, "asset": f.symbol, "amount": amount}

    bodies = [b for n in range(2, 27) for b in (body("1.00"), body(f"{n}.00"))]
    headers = {**_auth(f.alice_token), "Idempotency-Key": key}

    async def send(body: dict[str, Any]) -> httpx.Response:
        return await http.post(running.command_url + "/v1/transfers", json=body, headers=headers)

    # Fifty connections open first, so that the fifty requests reach the server together.
    await asyncio.gather(*(http.get(running.command_url + "/healthz") for _ in bodies))
    answers = await asyncio.gather(*(send(b) for b in bodies))
    assert all(a.status_code in (202, 409) for a in answers), [a.text for a in answers]
    won = {b["amount"] for b, a in zip(bodies, answers, strict=True) if a.status_code == 202}
    assert len(won) == 1, won  # only requests with the winner's body were answered 202
    amount = won.pop()
    winners = [a.json() for b, a in zip(bodies, answers, strict=True) if b["amount"] == amount]
    assert all(a.status_code == 202 for b, a in zip(bodies, answers, strict=True)
               if b["amount"] == amount)
    assert len({w["command_id"] for w in winners}) == 1
    assert len({w["transfer_id"] for w in winners}) == 1
    for b, a in zip(bodies, answers, strict=True):
        if b["amount"] != amount:
            assert a.json()["error"]["code"] == "idempotency_key_reused", a.text

    # The winner's outcome, once, for a retry with Prefer: wait; and the balances moved once.
    final = await post(http, running, "/v1/transfers", f.alice_token,
                       {"from": f.alice, "to": f.bob, "asset": f.symbol, "amount": amount},
                       **{"Idempotency-Key": key})
    assert final.status_code == 200, final.text
    assert final.json()["status"] == "completed"
    assert final.json()["command_id"] == winners[0]["command_id"]
    moved = int(amount.split(".")[0])
    assert (await balances(http, running, AUDITOR, f.alice))[f.symbol] == (f"{100 - moved}.00", "0.00")
    assert (await balances(http, running, AUDITOR, f.bob))[f.symbol] == (f"{moved}.00", "0.00")


async def test_registering_an_asset_again_with_its_key_gets_the_first_answer(
    http: httpx.AsyncClient, running: Running
) -> None:
    symbol = unique_symbol()
    issuer = token("treasury", roles=["issuer"], assets=[symbol])
    body = {"symbol": symbol, "name": "Replayed", "decimals": 2, "issuer": "treasury"}
    key = {"Idempotency-Key": unique("asset-")}
    first = await post(http, running, "/v1/assets", issuer, body, **key)
    assert first.json()["status"] == "completed", first.text
    again = await post(http, running, "/v1/assets", issuer, body, **key)
    # Not 409 asset_exists: the retry of a command that went through gets its answer.
    assert again.status_code == 200, again.text
    assert again.json()["command_id"] == first.json()["command_id"]
    fresh = await post(http, running, "/v1/assets", issuer, body)
    assert fresh.status_code == 409 and fresh.json()["error"]["code"] == "asset_exists"


@pytest.mark.parametrize("key", ["in side", "tab\tkey", "é", "x" * 201])
async def test_an_idempotency_key_outside_visible_ascii_is_refused(
    http: httpx.AsyncClient, funded: Running, key: str
) -> None:
    answer = await http.post(funded.command_url + "/v1/transfers", json=TRANSFER,
                             headers={**_auth(ALICE_TOKEN), "Idempotency-Key": key.encode("latin-1")})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_idempotency_key"


# --- 2, 3. strings: no control characters, bounded, non-empty; look-alike ids and amounts -----

STRING_CASES = [
    ("/v1/transfers", {**TRANSFER, "memo": "nul\u0000byte"}, "invalid_field", "memo"),
    ("/v1/transfers", {**TRANSFER, "memo": "two\nlines"}, "invalid_field", "memo"),
    ("/v1/transfers", {**TRANSFER, "memo": "esc\u001b[31m"}, "invalid_field", "memo"),
    ("/v1/transfers", {**TRANSFER, "memo": "c1\u0085"}, "invalid_field", "memo"),
    ("/v1/transfers", {**TRANSFER, "memo": "m" * 281}, "invalid_field", "memo"),
    ("/v1/transfers", {**TRANSFER, "memo": 5}, "invalid_field", "memo"),
    ("/v1/transfers", {**TRANSFER, "note": "x"}, "unknown_field", "note"),
    ("/v1/assets", {**ASSET, "name": ""}, "invalid_field", "name"),
    ("/v1/assets", {**ASSET, "name": "   "}, "invalid_field", "name"),
    ("/v1/assets", {**ASSET, "name": "bad\u0000name"}, "invalid_field", "name"),
    ("/v1/assets", {**ASSET, "name": "bell\u0007"}, "invalid_field", "name"),
    ("/v1/assets", {**ASSET, "name": "n" * 201}, "invalid_field", "name"),
    ("/v1/assets", {**ASSET, "name": ["n"]}, "invalid_field", "name"),
    ("/v1/assets", {**ASSET, "decimals": 10**30}, "invalid_decimals", "decimals"),
    ("/v1/assets", {**ASSET, "extra": {"nested": [1]}}, "unknown_field", "extra"),
    ("/v1/wallets/bob/freeze", {"reason": ""}, "invalid_field", "reason"),
    ("/v1/wallets/bob/freeze", {"reason": "\t"}, "invalid_field", "reason"),
    ("/v1/wallets/bob/freeze", {"reason": "r\u0000"}, "invalid_field", "reason"),
    ("/v1/wallets/bob/unfreeze", {"reason": "r" * 281}, "invalid_field", "reason"),
    ("/v1/wallets/bob/unfreeze", {}, "missing_field", "reason"),
    # look-alikes: a trailing newline, full-width and Arabic-Indic digits, spaces
    ("/v1/transfers", {**TRANSFER, "to": "bob\n"}, "invalid_wallet", "to"),
    ("/v1/transfers", {**TRANSFER, "from": ALICE + "\n"}, "invalid_wallet", "from"),
    ("/v1/transfers", {**TRANSFER, "asset": SYMBOL + "\n"}, "invalid_symbol", "asset"),
    ("/v1/transfers", {**TRANSFER, "amount": "\uff11"}, "invalid_amount", "amount"),
    ("/v1/transfers", {**TRANSFER, "amount": "\u0660.\u0660\u0661"}, "invalid_amount", "amount"),
    ("/v1/transfers", {**TRANSFER, "amount": " 1"}, "invalid_amount", "amount"),
    ("/v1/transfers", {**TRANSFER, "amount": "0.01\u00a0"}, "invalid_amount", "amount"),
    ("/v1/transfers", {**TRANSFER, "amount": "1\n"}, "invalid_amount", "amount"),
    ("/v1/transfers", {**TRANSFER, "amount": "9" * 5000}, "invalid_amount", "amount"),
    (f"/v1/assets/{SYMBOL}/issue", {"to": "bob\n", "amount": "1"}, "invalid_wallet", "to"),
    ("/v1/burns", {"wallet": ALICE, "asset": SYMBOL, "amount": "\uff10.5"}, "invalid_amount", "amount"),
]


def _auth_for(path: str) -> str:
    if path.startswith("/v1/wallets"):
        return COMPLIANCE
    return ISSUER if path.startswith("/v1/assets") else ALICE_TOKEN


@pytest.mark.parametrize(("path", "body", "code", "field"), STRING_CASES,
                         ids=[f"{c[3]}-{c[2]}-{i}" for i, c in enumerate(STRING_CASES)])
async def test_hostile_strings_are_refused_naming_the_field(
    http: httpx.AsyncClient, funded: Running, path: str, body: dict[str, Any], code: str,
    field: str,
) -> None:
    await assert_refused(http, funded.command_url + path, _auth_for(path), body, 422, code, field)


@pytest.mark.parametrize(("path", "code"), [
    (f"/v1/assets/{SYMBOL}%0A/issue", "invalid_symbol"),
    ("/v1/assets/%EF%BC%B5SDX/issue", "invalid_symbol"),  # a full-width U
    ("/v1/wallets/bob%0A/freeze", "invalid_wallet"),
    ("/v1/wallets/bob%00/unfreeze", "invalid_wallet"),
    ("/v1/wallets/%C3%A9/freeze", "invalid_wallet"),
])
async def test_look_alike_path_parameters_are_refused(
    http: httpx.AsyncClient, funded: Running, path: str, code: str
) -> None:
    body = {"to": ALICE, "amount": "1"} if "issue" in path else {"reason": "r"}
    answer = await http.post(funded.command_url + path, json=body, headers=_auth(_auth_for(path)))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == code


@pytest.mark.parametrize("command_id", [
    "{0d5b7c1a-3a52-4f0e-9c7e-6f2b8e1d4a90}", "urn:uuid:0d5b7c1a-3a52-4f0e-9c7e-6f2b8e1d4a90",
    "0d5b7c1a3a524f0e9c7e6f2b8e1d4a90", "0D5B7C1A-3A52-4F0E-9C7E-6F2B8E1D4A90",
    "0d5b7c1a-3a52-4f0e-9c7e-6f2b8e1d4a90%0A", "%200d5b7c1a-3a52-4f0e-9c7e-6f2b8e1d4a90",
])
async def test_a_command_id_is_only_the_canonical_form(
    http: httpx.AsyncClient, funded: Running, command_id: str
) -> None:
    answer = await http.get(f"{funded.command_url}/v1/commands/{command_id}", headers=_auth(AUDITOR))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid_command_id"


# --- 4. no 500s: bodies that are not UTF-8 or nest without end ------------------------------

RAW_CASES = [
    (b'{"from": "\xff\xfe", "to": "bob"}', 400, "malformed_json"),
    (b'{"memo": "\xed\xa0\x80"}', 400, "malformed_json"),  # a surrogate encoded in UTF-8
    (b'{"\xc3": 1}', 400, "malformed_json"),
    (b"\xef\xbb\xbf{}", 400, "malformed_json"),
    (b'{"memo": "\\ud800"}', 400, "malformed_json"),
    (b"[" * 1000 + b"]" * 1000, 400, "json_too_deep"),
    (b'{"memo": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 413, "body_too_large"),
    (b'{"memo": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1000 + b"}", 400, "json_too_deep"),
    (b'{"memo": ' + b"[" * 33 + b"]" * 33 + b"}", 400, "json_too_deep"),
    (b'{"amount": 1e999}', 400, "malformed_json"),
    (b'{"amount": NaN}', 400, "malformed_json"),
]


@pytest.mark.parametrize(("raw", "status", "code"), RAW_CASES,
                         ids=[f"{c[2]}-{i}" for i, c in enumerate(RAW_CASES)])
async def test_unreadable_bodies_are_4xx_not_500(
    http: httpx.AsyncClient, funded: Running, raw: bytes, status: int, code: str
) -> None:
    await assert_refused(http, funded.command_url + "/v1/transfers", ALICE_TOKEN, raw, status,
                         code, None)


async def test_brackets_inside_strings_do_not_count_as_depth(
    http: httpx.AsyncClient, funded: Running
) -> None:
    answer = await post(http, funded, "/v1/transfers", ALICE_TOKEN,
                        {**TRANSFER, "memo": "[" * 100 + "{" * 100}, wait=0)
    assert answer.status_code == 202, answer.text


async def test_a_token_made_to_last_forever_is_refused(
    http: httpx.AsyncClient, funded: Running
) -> None:
    import jwt

    from tests.conftest import SECRET

    forever = jwt.encode({"sub": ALICE, "wallets": [ALICE], "exp": 1e300}, SECRET, algorithm="HS256")
    for url in (funded.command_url + "/v1/transfers", funded.graphql_url):
        answer = await http.post(url, json=TRANSFER if "v1" in url else {"query": "{ __typename }"},
                                 headers=_auth(forever))
        assert answer.status_code == 401, (url, answer.text)
        assert "invalid_token" in answer.text and "exp" in answer.text


# --- 5. the request head is bounded on both APIs ---------------------------------------------

async def _raw_request(port: int, head: bytes) -> bytes:
    """Send ``head`` in pieces, as a slow client would, and read whatever comes back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(0, len(head), 16 * 1024):
            try:
                writer.write(head[i:i + 16 * 1024])
                await writer.drain()
            except ConnectionError:
                break
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


@pytest.mark.parametrize("api", ["command", "query"])
@pytest.mark.parametrize("size", [64 * 1024 + 1, 8 * 1024 * 1024])
async def test_a_huge_header_gets_431_and_normal_requests_still_work(
    http: httpx.AsyncClient, funded: Running, api: str, size: int
) -> None:
    settings = funded.stack.settings
    port = settings.command_port if api == "command" else settings.query_port
    head = (b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: " + b"a" * size + b"\r\n"
            b"connection: close\r\n\r\n")
    answer = await _raw_request(port, head)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"headers_too_large"' in answer
    many = b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 60) for i in range(2000))  # ~140 KiB in headers
    answer = await _raw_request(port, b"GET /healthz HTTP/1.1\r\nhost: a\r\n" + many + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    ok = await http.get(f"http://127.0.0.1:{port}/healthz", headers={"x-fine": "b" * 8000})
    assert ok.status_code == 200
    assert all(funded.alive().values())


# --- 8. 405 says what is allowed --------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/v1/transfers", "POST"), ("PUT", "/v1/assets", "POST"),
    ("DELETE", "/v1/commands/0d5b7c1a-3a52-4f0e-9c7e-6f2b8e1d4a90", "GET, HEAD"),
    ("GET", f"/v1/assets/{SYMBOL}/issue", "POST"),
])
async def test_method_not_allowed_carries_allow(
    http: httpx.AsyncClient, funded: Running, method: str, path: str, allow: str
) -> None:
    answer = await http.request(method, funded.command_url + path, headers=_auth(ALICE_TOKEN))
    assert answer.status_code == 405
    assert answer.json()["error"]["code"] == "method_not_allowed"
    assert set(answer.headers["allow"].split(", ")) == set(allow.split(", "))


# --- 9. someone else's command answers as an unknown one --------------------------------------

async def test_someone_elses_command_and_an_unknown_one_answer_alike(
    http: httpx.AsyncClient, funded: Running
) -> None:
    sent = await post(http, funded, "/v1/transfers", ALICE_TOKEN, TRANSFER)
    theirs = sent.json()["command_id"]
    unknown = str(uuid.uuid4())
    eve = _auth(token("eve", wallets=["eve"]))
    seen = []
    for command_id in (theirs, unknown):
        answer = await http.get(f"{funded.command_url}/v1/commands/{command_id}", headers=eve)
        body = json.loads(answer.text.replace(command_id, "ID"))
        seen.append((answer.status_code, body, sorted(
            (k, v) for k, v in answer.headers.items() if k not in ("date",))))
    assert seen[0] == seen[1]
    assert seen[0][0] == 404 and seen[0][1]["error"]["code"] == "unknown_command"
    mine = await http.get(f"{funded.command_url}/v1/commands/{theirs}", headers=_auth(ALICE_TOKEN))
    assert mine.status_code == 200


@pytest.mark.parametrize(("headers", "status", "code"), [
    ({"Content-Type": "application/json; charset=latin-1"}, 415, "unsupported_media_type"),
    ({"Content-Type": "application/json; charset=utf-16"}, 415, "unsupported_media_type"),
    ({"Authorization": b"Bearer \xe9\xe9.\xe9.\xe9"}, 401, "invalid_token"),
    ({"Authorization": b"\xff\xfe"}, 401, "unauthenticated"),
])
async def test_odd_headers_are_4xx(
    http: httpx.AsyncClient, funded: Running, headers: dict[str, Any], status: int, code: str
) -> None:
    sent = {"Content-Type": "application/json", **_auth(ALICE_TOKEN), **headers}
    answer = await http.post(funded.command_url + "/v1/transfers", content=json.dumps(TRANSFER),
                             headers=sent)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
