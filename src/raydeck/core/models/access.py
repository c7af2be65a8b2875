"""Projects, accounts (users and service accounts), roles, role bindings and the audit log."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from raydeck.core.models.common import LenientModel, Name, StrictModel

__all__ = [
    "ALL_PROJECTS",
    "Account",
    "AccountCreate",
    "AccountKind",
    "AuditEntry",
    "CustomRole",
    "CustomRoleCreate",
    "Permission",
    "Project",
    "ProjectCreate",
    "ProjectRef",
    "RoleBinding",
    "RoleBindingCreate",
]

# A binding on ALL_PROJECTS applies in every project, and is the only kind that grants
# server-wide resources (tokens, accounts, roles, role bindings, projects, audit log).
ALL_PROJECTS = "*"
ProjectRef = Annotated[
    str,
    Field(
        pattern=r"^(\*|[a-z]([a-z0-9-]{0,38}[a-z0-9])?)$",
        description="a project name, or '*' for every project",
    ),
]
Permission = Annotated[
    str,
    Field(
        pattern=r"^(\*|[a-z][a-z_]{0,39})\.(\*|[a-zA-Z][a-zA-Z_]{0,39})$",
        description="<resource>.<verb>, '*' allowed for either part, e.g. clusters.create",
    ),
]


class ProjectCreate(StrictModel):
    name: Name
    description: Annotated[str, Field(max_length=500)] | None = None


class Project(LenientModel):
    name: str
    description: str | None = None
    created_at: datetime


class AccountKind(StrEnum):
    USER = "user"
    SERVICE_ACCOUNT = "service_account"


class AccountCreate(StrictModel):
    name: Name
    kind: AccountKind = AccountKind.USER
    display_name: Annotated[str, Field(max_length=128)] | None = None


class RoleBinding(LenientModel):
    id: str
    account: str
    role: str
    project: str
    created_at: datetime


class Account(LenientModel):
    id: str
    name: str
    kind: AccountKind
    display_name: str | None = None
    created_at: datetime
    bindings: list[RoleBinding] = Field(default_factory=list)


class RoleBindingCreate(StrictModel):
    account: Name
    role: Name
    project: ProjectRef = "default"


class CustomRoleCreate(StrictModel):
    name: Name
    permissions: Annotated[list[Permission], Field(min_length=1, max_length=200)]
    description: Annotated[str, Field(max_length=500)] | None = None


class CustomRole(LenientModel):
    name: str
    permissions: list[str]
    description: str | None = None
    builtin: bool = False
    created_at: datetime | None = None


class AuditEntry(LenientModel):
    """One mutation: who (account, token), what (action, method, path), when, outcome."""

    id: str
    time: datetime
    actor: str
    token_id: str | None = None
    project: str | None = None
    action: str
    method: str
    path: str
    status_code: int
    outcome: str
    detail: str | None = None
