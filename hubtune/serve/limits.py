"""The request-body guard: a body over ``max_body_bytes`` is refused with 413 before it is read whole.

A pure ASGI middleware, so it sees the bytes as they arrive: a ``Content-Length`` over the limit is
answered at once; a chunked body is counted and cut off when it passes the limit. JSON parsing and
multipart spooling only ever see bodies within the limit.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from hubtune.errors import PayloadTooLarge
from hubtune.serve.statuses import error_body

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def too_large(limit: int, given: int | None = None) -> PayloadTooLarge:
    size = f"{given:,} bytes" if given is not None else f"more than {limit:,} bytes"
    return PayloadTooLarge(f"the request body is {size}; at most {limit:,} (--max-body-mb): send fewer or "
                           "smaller inputs per request")


async def send_error(send: Send, error: Exception, status: int = 413) -> None:
    body = json.dumps(error_body(error, status)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes."""

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await send_error(send, too_large(self.limit, int(declared)))
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # the app's error handler answers 413
                    raise too_large(self.limit)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except PayloadTooLarge:
            if not started:
                await send_error(send, too_large(self.limit))
