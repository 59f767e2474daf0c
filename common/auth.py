"""Bearer JWTs for both APIs: who the caller is, which wallets it owns, which roles it holds.

Secure by default: no token, no access. HS256 with a shared secret on the local stack; in
production a public key (RS256/ES256/EdDSA) or a JWKS URL, so the APIs hold no signing key.

Claims are checked by type and range, not coerced: ``exp`` (required), ``nbf`` and ``iat`` are
JSON numbers (not strings, not booleans), finite; ``exp`` lies at most ``max_lifetime_seconds``
ahead (default 366 days, ``LEDGERLINE_JWT_MAX_LIFETIME_SECONDS``), so a token made to last
forever (``exp = 1e300``) is refused rather than trusted for good; ``nbf`` and ``iat`` are not
in the future (30 s of clock skew allowed). ``sub`` is a non-empty string of at most 200
characters without control characters; ``wallets``, ``roles`` and ``assets`` are lists of such
strings. Any other shape is ``401 invalid_token`` with a message naming the claim.
"""

import math
import time
from dataclasses import dataclass, field
from typing import Any

import jwt

from events import grammar

ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]


@dataclass(frozen=True)
class TokenKeys:
    """How tokens are verified. Exactly one of the three is set.

    The algorithm list is tied to the kind of key, so a token cannot pick a weaker one (an HS256
    token "signed" with a public key is refused).
    """

    secret: str | None = None
    public_key: str | None = None
    jwks_url: str | None = None
    _jwks: jwt.PyJWKClient | None = field(default=None, compare=False, repr=False)
    max_lifetime_seconds: int = 366 * 24 * 3600

    @classmethod
    def jwks(cls, url: str, max_lifetime_seconds: int = 366 * 24 * 3600) -> "TokenKeys":
        return cls(jwks_url=url, _jwks=jwt.PyJWKClient(url, cache_keys=True, lifespan=300),
                   max_lifetime_seconds=max_lifetime_seconds)

    def key_for(self, token: str) -> tuple[Any, list[str]]:
        """The key to verify ``token`` with (a secret, a PEM key or a JWKS key), and the
        algorithms that key allows."""
        if self.secret is not None:
            return self.secret, ["HS256"]
        if self.public_key is not None:
            return self.public_key, ASYMMETRIC
        if self._jwks is None:
            raise AuthError(401, "invalid_token", "no key is configured to verify tokens")
        try:
            return self._jwks.get_signing_key_from_jwt(token).key, ASYMMETRIC
        except jwt.PyJWKClientError as exc:
            raise AuthError(401, "invalid_token", f"no signing key for this token: {exc}") from None

ROLES = frozenset({"operator", "compliance", "auditor", "issuer"})
_SEE_ALL = frozenset({"operator", "compliance", "auditor"})


class AuthError(Exception):
    """Authentication failed (401) or the principal may not do this (403)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Principal:
    sub: str
    wallets: frozenset[str]
    roles: frozenset[str]
    assets: frozenset[str]

    @property
    def sees_everything(self) -> bool:
        return bool(self.roles & _SEE_ALL)

    def may_see_wallet(self, wallet: str) -> bool:
        return self.sees_everything or wallet in self.wallets

    def may_debit(self, wallet: str) -> bool:
        return "operator" in self.roles or wallet in self.wallets

    def may_issue(self, symbol: str) -> bool:
        return "issuer" in self.roles and symbol in self.assets

    def may_freeze(self) -> bool:
        return "compliance" in self.roles

    def may_register_assets(self) -> bool:
        return bool(self.roles & {"operator", "issuer"})


CLOCK_SKEW_SECONDS = 30


def _invalid(message: str) -> AuthError:
    return AuthError(401, "invalid_token", f"the bearer token is not valid: {message}")


def _name_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if not value.strip():
        return "must not be empty"
    if len(value) > grammar.NAME_LIMIT:
        return f"is longer than {grammar.NAME_LIMIT} characters"
    return grammar.text_problem(value)


def _strings(claims: dict[str, object], name: str) -> frozenset[str]:
    value = claims.get(name, [])
    if not isinstance(value, list):
        raise _invalid(f"the {name!r} claim must be a list of strings")
    for item in value:
        problem = _name_problem(item)
        if problem is not None:
            raise _invalid(f"an item of the {name!r} claim {problem}")
    return frozenset(value)


def _time(claims: dict[str, object], name: str) -> float | None:
    """A NumericDate claim (RFC 7519): a JSON number of seconds, never a string or a boolean."""
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(f"the {name!r} claim must be a number of seconds since 1970, "
                       f"not {type(value).__name__}")
    if not math.isfinite(value):
        raise _invalid(f"the {name!r} claim must be finite")
    return float(value)


def _check_times(claims: dict[str, object], max_lifetime: int) -> None:
    now = time.time()
    exp, nbf, iat = _time(claims, "exp"), _time(claims, "nbf"), _time(claims, "iat")
    if exp is None:
        raise _invalid("the 'exp' claim is required")
    if exp <= now:
        raise AuthError(401, "token_expired", "the bearer token has expired")
    if exp > now + max_lifetime:
        raise _invalid(f"its 'exp' is more than {max_lifetime} seconds ahead; tokens this API "
                       "accepts expire sooner")
    if nbf is not None and nbf > now + CLOCK_SKEW_SECONDS:
        raise _invalid("its 'nbf' claim is in the future: it is not valid yet")
    if iat is not None and iat > now + CLOCK_SKEW_SECONDS:
        raise _invalid("its 'iat' claim says it was issued in the future")


def authenticate(authorization: str | None, keys: "str | TokenKeys") -> Principal:
    """The principal a bearer token names; ``keys`` is a TokenKeys or an HS256 shared secret."""
    if not authorization:
        raise AuthError(401, "unauthenticated", "send 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "unauthenticated", "the Authorization header must be 'Bearer <token>'")
    if isinstance(keys, str):
        keys = TokenKeys(secret=keys)
    try:
        key, algorithms = keys.key_for(token.strip())
        # The times are checked below, by type and range: PyJWT would coerce "123" or true.
        claims = jwt.decode(
            token.strip(), key, algorithms=algorithms,
            options={"require": ["sub", "exp"], "verify_exp": False, "verify_nbf": False,
                     "verify_iat": False, "verify_sub": False},
        )
    except jwt.InvalidTokenError as exc:
        raise _invalid(str(exc)) from None
    if not isinstance(claims, dict):
        raise _invalid("its claims are not a JSON object")
    _check_times(claims, keys.max_lifetime_seconds)
    problem = _name_problem(claims["sub"])
    if problem is not None:
        raise _invalid(f"the 'sub' claim {problem}")
    roles = _strings(claims, "roles")
    unknown = roles - ROLES
    if unknown:
        raise _invalid(f"unknown roles in token: {sorted(unknown)}")
    return Principal(
        sub=claims["sub"],
        wallets=_strings(claims, "wallets"),
        roles=roles,
        assets=_strings(claims, "assets"),
    )


def issue_token(
    secret: str,
    sub: str,
    *,
    wallets: list[str] | None = None,
    roles: list[str] | None = None,
    assets: list[str] | None = None,
    ttl_seconds: int = 30 * 24 * 3600,
) -> str:
    now = int(time.time())
    claims = {
        "sub": sub,
        "wallets": wallets or [],
        "roles": roles or [],
        "assets": assets or [],
        "iat": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(claims, secret, algorithm="HS256")
