"""/api/v1/projects, /accounts, /roleBindings, /roles, /audit"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from raydeck.core.models.access import (
    Account,
    AccountCreate,
    AuditEntry,
    CustomRole,
    CustomRoleCreate,
    Project,
    ProjectCreate,
    ProjectRef,
    RoleBinding,
    RoleBindingCreate,
)
from raydeck.core.models.common import Page
from raydeck.server.auth import Principal, require
from raydeck.server.routers.common import DbSession, PageSize, PageToken
from raydeck.server.services import access as service
from raydeck.server.services import audit as audit_service

router = APIRouter(prefix="/api/v1", tags=["access"])


@router.post("/projects", status_code=201)
def create_project(
    body: ProjectCreate,
    session: DbSession,
    _: Annotated[Principal, Depends(require("projects.create"))],
) -> Project:
    return service.create_project(session, body)


@router.get("/projects")
def list_projects(
    session: DbSession, _: Annotated[Principal, Depends(require("projects.list"))]
) -> Page[Project]:
    return service.list_projects(session)


@router.delete("/projects/{project}")
def delete_project(
    project: str,
    session: DbSession,
    _: Annotated[Principal, Depends(require("projects.delete"))],
) -> Project:
    return service.delete_project(session, project)


@router.post("/accounts", status_code=201)
def create_account(
    body: AccountCreate,
    session: DbSession,
    _: Annotated[Principal, Depends(require("accounts.create"))],
) -> Account:
    return service.create_account(session, body)


@router.get("/accounts")
def list_accounts(
    session: DbSession,
    _: Annotated[Principal, Depends(require("accounts.list"))],
    page_size: PageSize = 100,
    page_token: PageToken = None,
) -> Page[Account]:
    return service.list_accounts(session, page_size, page_token)


@router.get("/accounts/{account}")
def get_account(
    account: str, session: DbSession, _: Annotated[Principal, Depends(require("accounts.get"))]
) -> Account:
    return service.get_account(session, account)


@router.delete("/accounts/{account}")
def delete_account(
    account: str,
    session: DbSession,
    _: Annotated[Principal, Depends(require("accounts.delete"))],
) -> Account:
    return service.delete_account(session, account)


@router.post("/roleBindings", status_code=201)
def create_binding(
    body: RoleBindingCreate,
    session: DbSession,
    _: Annotated[Principal, Depends(require("role_bindings.create"))],
) -> RoleBinding:
    return service.bind_role(session, body)


@router.get("/roleBindings")
def list_bindings(
    session: DbSession,
    _: Annotated[Principal, Depends(require("role_bindings.list"))],
    project: Annotated[ProjectRef | None, Query(alias="in_project")] = None,
) -> Page[RoleBinding]:
    return service.list_bindings(session, project)


@router.delete("/roleBindings/{binding_id}")
def delete_binding(
    binding_id: str,
    session: DbSession,
    _: Annotated[Principal, Depends(require("role_bindings.delete"))],
) -> RoleBinding:
    return service.unbind_role(session, binding_id)


@router.post("/roles", status_code=201)
def create_role(
    body: CustomRoleCreate,
    session: DbSession,
    _: Annotated[Principal, Depends(require("roles.create"))],
) -> CustomRole:
    return service.create_role(session, body)


@router.get("/roles")
def list_roles(
    session: DbSession, _: Annotated[Principal, Depends(require("roles.list"))]
) -> Page[CustomRole]:
    return service.list_roles(session)


@router.delete("/roles/{role}")
def delete_role(
    role: str, session: DbSession, _: Annotated[Principal, Depends(require("roles.delete"))]
) -> CustomRole:
    return service.delete_role(session, role)


@router.get("/audit")
def list_audit(
    session: DbSession,
    _: Annotated[Principal, Depends(require("audit.list"))],
    page_size: PageSize = 100,
    page_token: PageToken = None,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[str | None, Query(max_length=128, description="prefix")] = None,
    in_project: Annotated[ProjectRef | None, Query()] = None,
    since: Annotated[datetime | None, Query()] = None,
) -> Page[AuditEntry]:
    return audit_service.list_audit(
        session,
        page_size=page_size,
        page_token=page_token,
        actor=actor,
        action=action,
        project=in_project,
        since=since,
    )
