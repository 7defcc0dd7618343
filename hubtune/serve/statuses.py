"""hubtune errors -> HTTP statuses, in one place, and the JSON body every error answer has.

The body is ``{"error": CLASS, "message": TEXT, "status": CODE}``: the message is the error's own,
which names what was given, what was expected and the fix (as the CLI prints it).
"""

from __future__ import annotations

from typing import Any

from hubtune import errors as e

#: most specific first: the first class an error is an instance of decides its status
STATUSES: list[tuple[type[BaseException], int]] = [
    (e.MalformedRequest, 400),
    (e.AuthError, 401),
    (e.NotFoundError, 404),
    (e.PayloadTooLarge, 413),
    (e.UnsupportedInput, 415),
    (e.RequestError, 422),
    (e.Overloaded, 503),
    (e.ServeTimeout, 504),
    # what the public API raises for an input or option it cannot use: the client's to fix
    (e.InputError, 422),
    (e.QueryError, 422),
    (e.TowerError, 422),
    (e.HeadError, 422),
    (e.DatasetError, 422),
    (e.FingerprintLookupError, 404),
    (e.BackboneOptionError, 422),
    (e.IndexOptionError, 422),
]


def status_of(error: BaseException) -> int:
    """The HTTP status for ``error``: 4xx for what the client can fix, 5xx for the rest."""
    for kind, status in STATUSES:
        if isinstance(error, kind):
            return status
    return 500


def error_body(error: BaseException, status: int | None = None) -> dict[str, Any]:
    status = status if status is not None else status_of(error)
    message = str(error) if status < 500 or isinstance(error, e.HubtuneError) else "internal error (see the server's log)"
    return {"error": type(error).__name__, "message": message, "status": status}


def error_headers(error: BaseException) -> dict[str, str]:
    """``Retry-After`` for an overloaded service, ``WWW-Authenticate`` for a missing token."""
    if isinstance(error, e.Overloaded):
        return {"Retry-After": str(max(1, int(error.retry_after)))}
    if isinstance(error, e.AuthError):
        return {"WWW-Authenticate": 'Bearer realm="hubtune"'}
    return {}
