"""Production keys: tokens verified with a public key or a JWKS URL, never with a weaker algorithm."""

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from common.auth import AuthError, TokenKeys, authenticate
from common.settings import SettingsError, load

PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = PRIVATE.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
).decode()


def _rs256(claims: dict[str, object], kid: str = "k1") -> str:
    return jwt.encode(claims, PRIVATE, algorithm="RS256", headers={"kid": kid})


def _claims(**extra: object) -> dict[str, object]:
    return {"sub": "alice", "wallets": ["alice"], "exp": int(time.time()) + 600, **extra}


def test_a_token_signed_with_the_private_key_is_accepted() -> None:
    keys = load({"LEDGERLINE_JWT_PUBLIC_KEY": PUBLIC_PEM}).token_keys()
    principal = authenticate("Bearer " + _rs256(_claims()), keys)
    assert principal.sub == "alice" and principal.wallets == {"alice"}


def test_an_hs256_token_made_with_the_public_key_as_secret_is_refused() -> None:
    forged = jwt.encode(_claims(roles=["operator"]), "x" * 40, algorithm="HS256")
    with pytest.raises(AuthError) as error:
        authenticate("Bearer " + forged, TokenKeys(public_key=PUBLIC_PEM))
    assert error.value.code == "invalid_token"


def test_settings_refuse_ambiguous_or_malformed_keys() -> None:
    with pytest.raises(SettingsError, match="only one"):
        load({"LEDGERLINE_JWT_SECRET": "s" * 40, "LEDGERLINE_JWT_PUBLIC_KEY": PUBLIC_PEM}).token_keys()
    with pytest.raises(SettingsError, match="PEM"):
        load({"LEDGERLINE_JWT_PUBLIC_KEY": "not a key"}).token_keys()
    with pytest.raises(SettingsError, match="https"):
        load({"LEDGERLINE_JWT_JWKS_URL": "http://keys.example/jwks.json"}).token_keys()


@pytest.fixture
def jwks_url() -> Iterator[str]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(PRIVATE.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/jwks.json"
    finally:
        server.shutdown()


def test_a_jwks_url_supplies_the_key_by_kid(jwks_url: str) -> None:
    keys = load({"LEDGERLINE_JWT_JWKS_URL": jwks_url}).token_keys()
    assert authenticate("Bearer " + _rs256(_claims()), keys).sub == "alice"
    with pytest.raises(AuthError) as error:
        authenticate("Bearer " + _rs256(_claims(), kid="unknown"), keys)
    assert error.value.code == "invalid_token"
