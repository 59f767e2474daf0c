"""Bearer JWTs for both APIs: who the caller is, which wallets it owns, which roles it holds.

Secure by default: no token, no access. HS256 with a shared secret on the local stack; in
production a public key (RS256/ES256/EdDSA) or a JWKS URL, so the APIs hold no signing key.
"""

import time
from dataclasses import dataclass, field

import jwt

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

    @classmethod
    def jwks(cls, url: str) -> "TokenKeys":
        return cls(jwks_url=url, _jwks=jwt.PyJWKClient(url, cache_keys=True, lifespan=300))

    def key_for(self, token: str) -> tuple[object, list[str]]:
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


def _strings(claims: dict[str, object], name: str) -> frozenset[str]:
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AuthError(401, "invalid_token", f"the token's {name!r} claim must be a list of strings")
    return frozenset(value)


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
        claims = jwt.decode(
            token.strip(), key, algorithms=algorithms, options={"require": ["sub", "exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "token_expired", "the bearer token has expired") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(401, "invalid_token", f"the bearer token is not valid: {exc}") from None
    roles = _strings(claims, "roles")
    unknown = roles - ROLES
    if unknown:
        raise AuthError(401, "invalid_token", f"unknown roles in token: {sorted(unknown)}")
    return Principal(
        sub=str(claims["sub"]),
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
