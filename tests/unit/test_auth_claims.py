"""Token claims are checked by type and range: a claim of the wrong shape is 401 invalid_token
with a message naming it, never coerced (PyJWT alone takes "exp": "9999999999" or true)."""

import json
import time

import jwt
import pytest

from common.auth import AuthError, TokenKeys, authenticate

SECRET = "s" * 40
NOW = int(time.time())


def _bearer(**claims: object) -> str:
    base: dict[str, object] = {"sub": "alice", "wallets": ["alice"], "exp": NOW + 600}
    base.update(claims)
    return "Bearer " + jwt.encode({k: v for k, v in base.items() if v is not ...}, SECRET,
                                  algorithm="HS256")


def _raw_bearer(payload: str) -> str:
    """A token whose payload JSON is exactly ``payload`` (PyJWT would refuse to write NaN)."""
    header = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = jwt.utils.base64url_encode(payload.encode())
    signing_input = header + b"." + body
    signature = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256).sign(
        signing_input, SECRET.encode())
    return "Bearer " + (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()


@pytest.mark.parametrize(("claims", "says"), [
    ({"exp": str(NOW + 600)}, "'exp'"),
    ({"exp": True}, "'exp'"),
    ({"exp": None}, "'exp'"),
    ({"exp": [NOW + 600]}, "'exp'"),
    ({"exp": 1e300}, "'exp'"),
    ({"exp": NOW + 400 * 24 * 3600}, "'exp'"),
    ({"exp": ...}, "'exp'"),
    ({"nbf": str(NOW)}, "'nbf'"),
    ({"nbf": False}, "'nbf'"),
    ({"nbf": NOW + 3600}, "'nbf'"),
    ({"iat": "yesterday"}, "'iat'"),
    ({"iat": NOW + 3600}, "'iat'"),
    ({"sub": ""}, "'sub'"),
    ({"sub": "   "}, "'sub'"),
    ({"sub": 42}, "'sub'"),
    ({"sub": ["alice"]}, "'sub'"),
    ({"sub": "alice\n"}, "'sub'"),
    ({"sub": "al\x00ice"}, "'sub'"),
    ({"sub": "a" * 201}, "'sub'"),
    ({"wallets": "alice"}, "'wallets'"),
    ({"wallets": ["alice", 7]}, "'wallets'"),
    ({"wallets": ["bob\u0007"]}, "'wallets'"),
    ({"roles": {"operator": True}}, "'roles'"),
    ({"roles": [None]}, "'roles'"),
    ({"assets": [["USDX"]]}, "'assets'"),
    ({"assets": ""}, "'assets'"),
])
def test_a_claim_of_the_wrong_type_or_range_is_refused(claims: dict[str, object], says: str) -> None:
    with pytest.raises(AuthError) as error:
        authenticate(_bearer(**claims), SECRET)
    assert (error.value.status, error.value.code) == (401, "invalid_token")
    assert says.strip("'") in error.value.message, error.value.message


@pytest.mark.parametrize("exp", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_times_are_refused(exp: str) -> None:
    with pytest.raises(AuthError) as error:
        authenticate(_raw_bearer(f'{{"sub": "alice", "exp": {exp}}}'), SECRET)
    assert error.value.code in {"invalid_token", "token_expired"}
    assert error.value.status == 401


def test_the_maximum_lifetime_is_configurable() -> None:
    far = _bearer(exp=NOW + 2 * 366 * 24 * 3600)
    with pytest.raises(AuthError):
        authenticate(far, TokenKeys(secret=SECRET))
    assert authenticate(far, TokenKeys(secret=SECRET, max_lifetime_seconds=3 * 366 * 24 * 3600)).sub == "alice"


def test_well_formed_times_are_accepted() -> None:
    p = authenticate(_bearer(exp=NOW + 600.5, nbf=NOW - 10, iat=NOW - 10, roles=["auditor"],
                             assets=["USDX"]), SECRET)
    assert p.sub == "alice" and p.roles == {"auditor"} and p.assets == {"USDX"}


def test_an_expired_token_is_still_told_apart() -> None:
    with pytest.raises(AuthError) as error:
        authenticate(_bearer(exp=NOW - 5), SECRET)
    assert error.value.code == "token_expired"


def test_the_maximum_lifetime_setting_reaches_the_keys() -> None:
    from common.settings import SettingsError, load

    keys = load({"LEDGERLINE_JWT_SECRET": SECRET, "LEDGERLINE_JWT_MAX_LIFETIME_SECONDS": "3600"}).token_keys()
    assert keys.max_lifetime_seconds == 3600
    with pytest.raises(SettingsError):
        load({"LEDGERLINE_JWT_MAX_LIFETIME_SECONDS": "1e300"})


@pytest.mark.parametrize("payload", [
    '{"sub": "\\ud800", "exp": %d}', '{"sub": "alice", "wallets": ["\\udc00"], "exp": %d}',
    '{"sub": "alice\\u0000", "exp": %d}', '[1, %d]',
])
def test_claims_python_json_would_let_through_are_refused(payload: str) -> None:
    # json.loads takes lone surrogates ("\ud800"), which cannot be encoded as UTF-8 later.
    with pytest.raises(AuthError) as error:
        authenticate(_raw_bearer(payload % (NOW + 600)), SECRET)
    assert (error.value.status, error.value.code) == (401, "invalid_token")


@pytest.mark.parametrize("header", ["Bearer \u00e9\u00e9.\u00e9.\u00e9", "Bearer a.b", "Bearer " + "a" * 20_000,
                                    "Bearer ...", "Bearer e30.e30.e30"])
def test_garbage_tokens_are_401(header: str) -> None:
    with pytest.raises(AuthError) as error:
        authenticate(header, SECRET)
    assert error.value.status == 401
