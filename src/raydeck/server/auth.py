"""Bearer-token authentication and role-based permission checks (a FastAPI dependency)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from raydeck.core.errors import PermissionDeniedError, UnauthenticatedError
from raydeck.core.models import Role, Token
from raydeck.server.services import tokens as token_service
from raydeck.server.state import ServerState, get_state

__all__ = ["Principal", "authorize", "bearer_secret", "require", "role_allows"]

Principal = Token

_READ_VERBS = ("get", "list", "logs")


def role_allows(role: Role, permission: str) -> bool:
    """Permissions are ``<resource>.<verb>``; roles are fixed sets of them."""
    resource, _, verb = permission.partition(".")
    if role is Role.ADMIN:
        return True
    if role is Role.USER:
        return resource != "tokens"
    return verb in _READ_VERBS and resource != "tokens"


def bearer_secret(request: HTTPConnection) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise UnauthenticatedError("missing bearer token (Authorization: Bearer <token>)")
    return secret.strip()


def authorize(request: HTTPConnection, state: ServerState, permission: str) -> Principal:
    """401 without a valid token, 403 when the token's role lacks ``permission``."""
    secret = bearer_secret(request)
    with state.db.session() as session:
        principal = token_service.authenticate(session, secret)
    if not role_allows(principal.role, permission):
        raise PermissionDeniedError(
            f"role {principal.role.value!r} may not {permission}", permission=permission
        )
    return principal


def require(permission: str) -> Callable[..., Principal]:
    def dependency(
        request: Request, state: Annotated[ServerState, Depends(get_state)]
    ) -> Principal:
        return authorize(request, state, permission)

    dependency.__name__ = f"require_{permission.replace('.', '_')}"
    return dependency
