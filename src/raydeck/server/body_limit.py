"""Request body size limit on every route, enforced before any route reads the body.

A pure-ASGI middleware: a declared ``Content-Length`` over the limit is answered 413 at once,
without reading a byte of the body; otherwise the streamed body is counted as the app reads
it, and the first chunk past the limit ends the request with a 413 (the rest is never read).
Upload routes (multipart model archives, which Starlette spools to disk, and Ray's package
uploads through the Jobs proxy, which stream on to the cluster) get the larger upload limit.
"""

from __future__ import annotations

import re

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from raydeck.core.errors import RequestTooLargeError
from raydeck.server.errors import error_response

__all__ = ["UPLOAD_ROUTES", "BodyLimitMiddleware", "BodyTooLarge"]

# (method, path) of the routes whose bodies are uploads.
UPLOAD_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("POST", re.compile(r"^/api/v1/models:upload$")),
    ("PUT", re.compile(r"^/api/v1/clusters/[^/]+/ray/api/packages/[^/]+/[^/]+$")),
)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the streamed body passes the limit (an HTTPException so
    FastAPI's body parsing re-raises it instead of calling it unparsable)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes

    def limit_for(self, method: str, path: str) -> int:
        for route_method, pattern in UPLOAD_ROUTES:
            if method == route_method and pattern.match(path):
                return self.max_upload_bytes
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(str(scope.get("method", "")), str(scope.get("path", "")))
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(scope, receive, send, limit)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _refuse(scope, receive, send, limit)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    error = RequestTooLargeError(
        f"request body is larger than this route's limit of {limit} bytes "
        "(RAYDECK_MAX_REQUEST_BYTES, or RAYDECK_MAX_UPLOAD_BYTES for uploads)",
        field="body",
    )
    response = error_response(error)
    response.headers["connection"] = "close"  # the unread rest of the body is not wanted
    await response(scope, receive, send)
