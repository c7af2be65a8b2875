"""Exception → HTTP response, in one place. Never a traceback in a response."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from raydeck.core.errors import (
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RaydeckError,
    RequestTooLargeError,
    UnauthenticatedError,
)

__all__ = ["ERROR_RESPONSES", "ErrorResponse", "error_response", "install_error_handlers"]

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None
    details: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    """Every error answer: ``{"error": {"code", "message", "field"?, "details"?}}``."""

    error: ErrorDetail


# Documented on every route so clients (and schema fuzzers) know the error shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "model": ErrorResponse,
        "description": description,
        # Explicit, so routes whose success is text/plain (logs) document JSON errors too.
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    for status, description in (
        (400, "invalid_argument: the field named is wrong"),
        (401, "unauthenticated: missing, unknown, revoked or expired token"),
        (403, "permission_denied: no role binding grants this in the project"),
        (404, "not_found"),
        (409, "already_exists"),
        (412, "failed_precondition"),
        (413, "resource_exhausted: the request body is over the size limit"),
        (429, "resource_exhausted (e.g. the project's budget limit is reached)"),
        (503, "unavailable: a cluster or endpoint did not answer"),
    )
}

_HTTP_ERRORS: dict[int, type[RaydeckError]] = {
    401: UnauthenticatedError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: RequestTooLargeError,
}


def error_response(error: RaydeckError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if error.http_status == 401 else None
    return JSONResponse(
        {"error": error.to_payload()}, status_code=error.http_status, headers=headers
    )


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path")]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not str(part).startswith(("function-", "constrained-")):
            path += f".{part}" if path else str(part)
    return path or "body"


def validation_error(exc: RequestValidationError) -> InvalidArgumentError:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return InvalidArgumentError("request body is not valid JSON", field="body")
    field = _field_path(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        message = "unknown field"
    return InvalidArgumentError(f"{field}: {message}", field=field)


def install_error_handlers(app: FastAPI) -> None:
    async def on_raydeck_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RaydeckError)
        return error_response(exc)

    async def on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc))

    async def on_http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        cls = _HTTP_ERRORS.get(exc.status_code, InvalidArgumentError)
        if exc.status_code >= 500:
            cls = InternalError
        error = cls(str(exc.detail))
        response = error_response(error)
        response.status_code = exc.status_code
        return response

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(InternalError("internal server error; see the server log"))

    app.add_exception_handler(RaydeckError, on_raydeck_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
