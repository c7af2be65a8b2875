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
from raydeck.server.routers.resource_routes import (
    ResourceRoutes,
    add_resource_routes,
    query_parameter,
)
from raydeck.server.services import access as service
from raydeck.server.services import audit as audit_service

router = APIRouter(prefix="/api/v1", tags=["access"])

RESOURCES = (
    ResourceRoutes(
        path="/projects",
        key="project",
        singular="project",
        plural="projects",
        permission="projects",
        item=Project,
        body=ProjectCreate,
        create=service.create_project,
        list=service.list_projects,
        delete=service.delete_project,
    ),
    ResourceRoutes(
        path="/accounts",
        key="account",
        singular="account",
        plural="accounts",
        permission="accounts",
        item=Account,
        body=AccountCreate,
        create=service.create_account,
        list=service.list_accounts,
        get=service.get_account,
        delete=service.delete_account,
        list_query=(
            query_parameter("page_size", PageSize, 100),
            query_parameter("page_token", PageToken),
        ),
    ),
    ResourceRoutes(
        path="/roleBindings",
        key="binding_id",
        singular="binding",
        plural="bindings",
        permission="role_bindings",
        item=RoleBinding,
        body=RoleBindingCreate,
        create=service.bind_role,
        list=service.list_bindings,
        delete=service.unbind_role,
        list_query=(
            query_parameter("project", Annotated[ProjectRef | None, Query(alias="in_project")]),
        ),
    ),
    ResourceRoutes(
        path="/roles",
        key="role",
        singular="role",
        plural="roles",
        permission="roles",
        item=CustomRole,
        body=CustomRoleCreate,
        create=service.create_role,
        list=service.list_roles,
        delete=service.delete_role,
    ),
)
for resource in RESOURCES:
    add_resource_routes(router, resource)


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
