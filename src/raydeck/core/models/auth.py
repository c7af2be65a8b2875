"""API tokens and roles."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from raydeck.core.models.common import LenientModel, Name, StrictModel

__all__ = ["Role", "Token", "TokenCreate", "TokenCreated"]


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"
    VIEWER = "viewer"


class TokenCreate(StrictModel):
    name: Name
    role: Role = Role.USER
    expires_in_days: Annotated[int, Field(gt=0, le=3650)] | None = None


class Token(LenientModel):
    id: str
    name: str
    role: Role
    prefix: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class TokenCreated(Token):
    """Returned once, at creation: the only time the secret is visible."""

    secret: str
