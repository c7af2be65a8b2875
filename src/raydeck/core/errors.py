"""One error tree with stable string codes, shared by server, SDK and CLI.

The HTTP status for each code lives here and only here; the server maps errors to
responses with it and the SDK maps a response's ``code`` back to the same class.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AlreadyExistsError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "RaydeckError",
    "RequestTooLargeError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "error_from_payload",
]


class RaydeckError(Exception):
    """Base of every error Raydeck raises on purpose."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            payload["field"] = self.field
        if self.details:
            payload["details"] = self.details
        return payload

    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(RaydeckError):
    code = "invalid_argument"
    http_status = 400


class UnauthenticatedError(RaydeckError):
    code = "unauthenticated"
    http_status = 401


class PermissionDeniedError(RaydeckError):
    code = "permission_denied"
    http_status = 403


class NotFoundError(RaydeckError):
    code = "not_found"
    http_status = 404


class AlreadyExistsError(RaydeckError):
    code = "already_exists"
    http_status = 409


class FailedPreconditionError(RaydeckError):
    code = "failed_precondition"
    http_status = 412


class ResourceExhaustedError(RaydeckError):
    code = "resource_exhausted"
    http_status = 429


class RequestTooLargeError(ResourceExhaustedError):
    """A request body over the server's size limit (the SDK sees ``resource_exhausted``)."""

    http_status = 413


class UnavailableError(RaydeckError):
    code = "unavailable"
    http_status = 503


class InternalError(RaydeckError):
    code = "internal"
    http_status = 500


_BY_CODE: dict[str, type[RaydeckError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        UnauthenticatedError,
        PermissionDeniedError,
        NotFoundError,
        AlreadyExistsError,
        FailedPreconditionError,
        ResourceExhaustedError,
        UnavailableError,
        InternalError,
    )
}


def error_from_payload(payload: dict[str, Any], status: int) -> RaydeckError:
    """Rebuild the typed error a server response describes (used by the SDK)."""
    code = str(payload.get("code", ""))
    cls = _BY_CODE.get(code)
    if cls is None:
        cls = next((c for c in _BY_CODE.values() if c.http_status == status), InternalError)
    message = str(payload.get("message") or f"HTTP {status}")
    field = payload.get("field")
    details = payload.get("details") or {}
    return cls(message, field=field if isinstance(field, str) else None, **details)
