import time

import jwt
import pytest

from common.auth import AuthError, authenticate, issue_token

SECRET = "s" * 40


def test_a_valid_token_gives_the_principal() -> None:
    p = authenticate("Bearer " + issue_token(SECRET, "alice", wallets=["alice"]), SECRET)
    assert p.sub == "alice" and p.wallets == {"alice"} and not p.roles
    assert p.may_debit("alice") and not p.may_debit("bob")
    assert p.may_see_wallet("alice") and not p.may_see_wallet("bob")
    assert not p.may_issue("USDX") and not p.may_register_assets()


def test_roles_grant_what_they_say() -> None:
    issuer = authenticate("Bearer " + issue_token(SECRET, "t", roles=["issuer"], assets=["USDX"]), SECRET)
    assert issuer.may_issue("USDX") and not issuer.may_issue("BOND")
    assert not issuer.sees_everything
    for role in ("operator", "compliance", "auditor"):
        p = authenticate("Bearer " + issue_token(SECRET, role, roles=[role]), SECRET)
        assert p.sees_everything and p.may_see_wallet("anyone")
        assert p.may_debit("anyone") == (role == "operator")


@pytest.mark.parametrize(
    ("header", "code"),
    [(None, "unauthenticated"), ("", "unauthenticated"), ("Basic abc", "unauthenticated"),
     ("Bearer ", "unauthenticated"), ("Bearer not.a.jwt", "invalid_token"),
     ("Bearer " + issue_token("another-secret-" + "x" * 30, "alice"), "invalid_token"),
     ("Bearer " + issue_token(SECRET, "alice", ttl_seconds=-10), "token_expired"),
     ("Bearer " + issue_token(SECRET, "alice", roles=["god"]), "invalid_token"),
     ("Bearer " + jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"), "invalid_token"),
     ("Bearer " + jwt.encode({"sub": "a", "exp": int(time.time()) + 3600, "wallets": "alice"},
                             SECRET, algorithm="HS256"), "invalid_token")],
)
def test_bad_tokens_are_refused(header: str | None, code: str) -> None:
    with pytest.raises(AuthError) as error:
        authenticate(header, SECRET)
    assert error.value.status == 401
    assert error.value.code == code


def test_unsigned_tokens_are_refused() -> None:
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, None, algorithm="none")
    with pytest.raises(AuthError):
        authenticate("Bearer " + token, SECRET)
