"""API tokens: created once in clear, stored as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from raydeck.core.errors import AlreadyExistsError, NotFoundError, UnauthenticatedError
from raydeck.core.ids import new_id
from raydeck.core.models import Page, Role, Token, TokenCreate, TokenCreated
from raydeck.db.models import TokenRow, utcnow
from raydeck.server.services.paging import fetch_page

__all__ = [
    "authenticate",
    "create_token",
    "ensure_admin_token",
    "hash_secret",
    "list_tokens",
    "revoke_token",
]

SECRET_PREFIX = "rdk_"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _to_model(row: TokenRow) -> Token:
    return Token(
        id=row.id,
        name=row.name,
        role=Role(row.role),
        prefix=row.prefix,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def create_token(session: Session, request: TokenCreate) -> TokenCreated:
    active = session.scalar(
        select(TokenRow).where(TokenRow.name == request.name, TokenRow.revoked_at.is_(None))
    )
    if active is not None:
        raise AlreadyExistsError(f"token {request.name!r} already exists", field="name")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = TokenRow(
        id=new_id("tok"),
        name=request.name,
        role=request.role.value,
        prefix=secret[:12],
        secret_hash=hash_secret(secret),
        created_at=now,
        expires_at=now + timedelta(days=request.expires_in_days)
        if request.expires_in_days
        else None,
    )
    session.add(row)
    session.flush()
    return TokenCreated(**_to_model(row).model_dump(), secret=secret)


def list_tokens(session: Session, page_size: int, page_token: str | None) -> Page[Token]:
    rows, next_token = fetch_page(session, select(TokenRow), TokenRow.id, page_size, page_token)
    return Page[Token](items=[_to_model(r) for r in rows], next_page_token=next_token)


def revoke_token(session: Session, name_or_id: str) -> Token:
    row = session.scalar(
        select(TokenRow)
        .where((TokenRow.id == name_or_id) | (TokenRow.name == name_or_id))
        .where(TokenRow.revoked_at.is_(None))
    )
    if row is None:
        raise NotFoundError(f"token {name_or_id!r} not found", field="token")
    row.revoked_at = utcnow()
    return _to_model(row)


def authenticate(session: Session, secret: str) -> Token:
    row = session.scalar(select(TokenRow).where(TokenRow.secret_hash == hash_secret(secret)))
    now = datetime.now(UTC)
    if row is None or row.revoked_at is not None:
        raise UnauthenticatedError("invalid or revoked token")
    if row.expires_at is not None and row.expires_at <= now:
        raise UnauthenticatedError("token expired")
    # Coarse last-use stamp: one write per minute at most keeps reads cheap.
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        row.last_used_at = now
    return _to_model(row)


def ensure_admin_token(session: Session) -> TokenCreated | None:
    """On first start create the bootstrap admin token; later starts return None."""
    if session.scalar(select(TokenRow.id).limit(1)) is not None:
        return None
    return create_token(session, TokenCreate(name="admin", role=Role.ADMIN))
