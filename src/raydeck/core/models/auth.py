"""API tokens, built-in roles and the authenticated caller."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from raydeck.core.models.access import ProjectRef
from raydeck.core.models.common import LenientModel, Name, StrictModel

__all__ = ["Caller", "Role", "Token", "TokenCreate", "TokenCreated"]


class Role(StrEnum):
    """Built-in roles; custom roles (named permission sets) live next to them."""

    ADMIN = "admin"
    USER = "user"
    VIEWER = "viewer"


class TokenCreate(StrictModel):
    """A token acts as an account. Without ``account``, a service account named after the
    token is created (or reused) and bound to ``role`` in ``project`` (default: every project).
    """

    name: Name
    role: Name | None = None
    project: ProjectRef | None = None
    account: Name | None = None
    expires_in_days: Annotated[int, Field(gt=0, le=3650)] | None = None


class Token(LenientModel):
    id: str
    name: str
    account: str | None = None
    role: str | None = None  # the role the token was created with, if any (display only)
    prefix: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    scope_project: str | None = None  # a job token's: the one project it works in
    scope_permissions: list[str] | None = None  # ...and the most it may do there


class TokenCreated(Token):
    """Returned once, at creation: the only time the secret is visible."""

    secret: str


class Caller(Token):
    """Who is calling: the token, its account and that account's roles in ``project``."""

    account_kind: str = "service_account"
    project: str = "default"
    roles: list[str] = Field(default_factory=list)
