"""The bearer token: when the service has one, every ``/v1`` route needs ``Authorization: Bearer TOKEN``.

The comparison is :func:`hmac.compare_digest` (constant time: a wrong token's answer does not leak
how much of it was right). ``/healthz``, ``/readyz``, the page and its static files stay open: they
carry no data (the page asks the user for the token and sends it with each call).
"""

from __future__ import annotations

import hmac

from hubtune.errors import AuthError


def check_token(expected: str | None, authorization: str | None) -> None:
    """Nothing when ``expected`` is None or the header carries it; else :class:`AuthError`."""
    if expected is None:
        return
    if not authorization:
        raise AuthError("this service needs a token: send the header 'Authorization: Bearer <token>'")
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise AuthError("the Authorization header must be 'Bearer <token>'")
    if not hmac.compare_digest(given.strip().encode("utf-8"), expected.encode("utf-8")):
        raise AuthError("wrong token")
