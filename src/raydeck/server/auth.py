"""Bearer-token authentication and per-project permission checks (a FastAPI dependency).

``require("<resource>.<verb>")`` is all a router needs: the caller's account must hold a
role binding that grants the permission in the request's project, which is the route's
``{project}`` path parameter, else the ``X-Raydeck-Project`` header, else ``default``.
Which role grants what is decided in ``services/roles.py`` (one table).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.requests import HTTPConnection

from raydeck.core.errors import (
    InvalidArgumentError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from raydeck.core.models import Caller
from raydeck.core.models.common import NAME_PATTERN
from raydeck.server.services import access
from raydeck.server.services import tokens as token_service
from raydeck.server.services.roles import (
    GLOBAL_RESOURCES,
    SELF_RESOURCES,
    permission_matches,
    role_allows,
)
from raydeck.server.state import ServerState, get_state

__all__ = [
    "DEFAULT_PROJECT",
    "PROJECT_HEADER",
    "Principal",
    "authorize",
    "bearer_secret",
    "request_project",
    "require",
    "role_allows",
]

Principal = Caller
DEFAULT_PROJECT = "default"
PROJECT_HEADER = "X-Raydeck-Project"
_PROJECT_RE = re.compile(NAME_PATTERN)

# Keys under request.state the audit middleware reads.
CALLER_KEY = "raydeck_caller"
PERMISSION_KEY = "raydeck_permission"


def bearer_secret(request: HTTPConnection) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise UnauthenticatedError("missing bearer token (Authorization: Bearer <token>)")
    return secret.strip()


def request_project(request: HTTPConnection) -> str:
    project = request.path_params.get("project") or request.headers.get(PROJECT_HEADER)
    project = str(project or DEFAULT_PROJECT)
    if not _PROJECT_RE.match(project):
        raise InvalidArgumentError(f"project {project!r} is not a valid name", field="project")
    return project


def authorize(request: HTTPConnection, state: ServerState, permission: str) -> Principal:
    """401 without a valid token, 403 when no binding grants ``permission`` in the project."""
    setattr(request.state, PERMISSION_KEY, permission)
    secret = bearer_secret(request)
    project = request_project(request)
    with state.db.session() as session:
        token, account = token_service.authenticate(session, secret)
        bindings = access.roles_in_project(session, account.id, project)
        caller = Caller(
            **token.model_dump(),
            account_kind=account.kind,
            project=project,
            roles=sorted({role for role, _ in bindings}),
        )
        setattr(request.state, CALLER_KEY, caller)
        _check_scope(caller, project, permission)
        if not access.account_allows(session, bindings, permission):
            where = (
                "server-wide"
                if permission.partition(".")[0] in GLOBAL_RESOURCES
                else f"in project {project!r}"
            )
            raise PermissionDeniedError(
                f"{account.name!r} may not {permission} {where}", permission=permission
            )
        if project != DEFAULT_PROJECT:
            access.get_project_row(session, project)  # 404 naming ``project`` if unknown
    return caller


def _check_scope(caller: Principal, project: str, permission: str) -> None:
    """A scoped token (a job's) works in its project only, for its permissions only."""
    if permission.partition(".")[0] in SELF_RESOURCES:
        return
    if caller.scope_project is not None and caller.scope_project != project:
        raise PermissionDeniedError(
            f"token {caller.name!r} is limited to project {caller.scope_project!r}",
            permission=permission,
        )
    scope = caller.scope_permissions
    if scope is not None and not any(permission_matches(p, permission) for p in scope):
        raise PermissionDeniedError(
            f"token {caller.name!r} may not {permission} (a job token: {', '.join(scope)})",
            permission=permission,
        )


def require(permission: str) -> Callable[..., Principal]:
    def dependency(
        request: Request,
        state: Annotated[ServerState, Depends(get_state)],
        x_raydeck_project: Annotated[
            str | None,
            Header(
                alias=PROJECT_HEADER,
                description="project to act in (default: 'default')",
                include_in_schema=True,
            ),
        ] = None,
    ) -> Principal:
        del x_raydeck_project  # read (and validated) by authorize, also for websockets
        return authorize(request, state, permission)

    dependency.__name__ = f"require_{permission.replace('.', '_')}"
    dependency.permission = permission  # type: ignore[attr-defined]  # read by the auth walk
    return dependency
