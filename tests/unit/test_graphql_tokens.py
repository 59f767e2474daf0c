"""The query API's token cache never accepts what a fresh check would refuse."""

import time

import pytest

from common.auth import AuthError, TokenKeys, issue_token
from common.tokens import Verified

SECRET = "unit-secret-" + "z" * 40


def test_a_known_token_is_accepted_until_it_expires() -> None:
    tokens = Verified(TokenKeys(secret=SECRET))
    header = "Bearer " + issue_token(SECRET, "alice", wallets=["alice"], ttl_seconds=2)
    assert tokens.authenticate(header).wallets == {"alice"}
    assert tokens.authenticate(header).sub == "alice"  # from the cache
    time.sleep(2.1)
    with pytest.raises(AuthError) as refused:
        tokens.authenticate(header)
    assert refused.value.code == "token_expired"


@pytest.mark.parametrize("header", [None, "Bearer junk", "Bearer " + issue_token("other-" + "q" * 40, "alice")])
def test_refused_tokens_stay_refused(header: str | None) -> None:
    tokens = Verified(TokenKeys(secret=SECRET))
    for _ in range(2):
        with pytest.raises(AuthError):
            tokens.authenticate(header)
