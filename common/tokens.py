"""Bearer tokens for the query API, verified once per token rather than once per request.

A frontend sends the same token with every request; checking its signature each time (HS256:
base64, JSON, HMAC) costs more than the balance lookup it guards. A token whose signature was
verified is remembered (bounded) with its expiry; each use still checks the expiry, the only
check that changes with time.
"""

import time
from collections import OrderedDict

import jwt

from common.auth import AuthError, Principal, TokenKeys, authenticate

_SIZE = 4096


class Verified:
    def __init__(self, keys: TokenKeys) -> None:
        self.keys = keys
        self._known: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def authenticate(self, authorization: str | None) -> Principal:
        if authorization is not None:
            known = self._known.get(authorization)
            if known is not None:
                principal, expires = known
                if time.time() < expires:
                    self._known.move_to_end(authorization)
                    return principal
                del self._known[authorization]
        principal = authenticate(authorization, self.keys)  # raises AuthError when refused
        expiry = _expiry(authorization)
        if authorization is not None and expiry is not None:
            self._known[authorization] = (principal, expiry)
            if len(self._known) > _SIZE:
                self._known.popitem(last=False)
        return principal


def _expiry(authorization: str | None) -> float | None:
    try:
        token = (authorization or "").partition(" ")[2].strip()
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.InvalidTokenError:
        return None
    return float(exp) if isinstance(exp, int | float) else None


__all__ = ["AuthError", "Verified"]
