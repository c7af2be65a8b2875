"""API tokens: created once in clear, stored as SHA-256 hashes, each acting as an account."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from raydeck.core.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    UnauthenticatedError,
)
from raydeck.core.ids import new_id
from raydeck.core.models import Page, Role, Token, TokenCreate, TokenCreated
from raydeck.core.models.access import ALL_PROJECTS, AccountKind, RoleBindingCreate
from raydeck.db.models import AccountRow, RoleBindingRow, TokenRow, utcnow
from raydeck.server.services import access
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


def _to_model(row: TokenRow, account: str | None) -> Token:
    return Token(
        id=row.id,
        name=row.name,
        account=account,
        role=row.role,
        prefix=row.prefix,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
        scope_project=row.scope_project,
        scope_permissions=row.scope_permissions,
    )


def _account_for(session: Session, request: TokenCreate) -> AccountRow:
    if request.account is not None:
        if request.role is not None or request.project is not None:
            field = "role" if request.role is not None else "project"
            raise InvalidArgumentError(
                f"{field}: a token for an existing account acts with that account's role "
                "bindings; bind roles to the account instead",
                field=field,
            )
        found = session.scalar(select(AccountRow).where(AccountRow.name == request.account))
        if found is None:
            raise NotFoundError(f"account {request.account!r} not found", field="account")
        return found
    existing = session.scalar(select(AccountRow).where(AccountRow.name == request.name))
    if existing is not None and existing.kind != AccountKind.SERVICE_ACCOUNT:
        raise AlreadyExistsError(
            f"{request.name!r} is a user account; pass account={request.name!r} to create a "
            "token for it, or choose another token name",
            field="name",
        )
    row = access.ensure_account(session, request.name, AccountKind.SERVICE_ACCOUNT)
    role = request.role or Role.USER.value
    project = request.project or ALL_PROJECTS
    already = session.scalar(
        select(RoleBindingRow.id).where(
            RoleBindingRow.account_id == row.id,
            RoleBindingRow.project == project,
            RoleBindingRow.role == role,
        )
    )
    if already is None:
        access.bind_role(session, RoleBindingCreate(account=row.name, role=role, project=project))
    return row


def create_token(session: Session, request: TokenCreate) -> TokenCreated:
    active = session.scalar(
        select(TokenRow).where(TokenRow.name == request.name, TokenRow.revoked_at.is_(None))
    )
    if active is not None:
        raise AlreadyExistsError(f"token {request.name!r} already exists", field="name")
    account = _account_for(session, request)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = TokenRow(
        id=new_id("tok"),
        name=request.name,
        role=None if request.account else (request.role or Role.USER.value),
        account_id=account.id,
        prefix=secret[:12],
        secret_hash=hash_secret(secret),
        created_at=now,
        expires_at=now + timedelta(days=request.expires_in_days)
        if request.expires_in_days
        else None,
    )
    session.add(row)
    session.flush()
    return TokenCreated(**_to_model(row, account.name).model_dump(), secret=secret)


def _account_names(session: Session, rows: list[TokenRow]) -> dict[str, str]:
    ids = {r.account_id for r in rows if r.account_id}
    if not ids:
        return {}
    query = select(AccountRow.id, AccountRow.name).where(AccountRow.id.in_(ids))
    return {account_id: name for account_id, name in session.execute(query)}


def list_tokens(session: Session, page_size: int, page_token: str | None) -> Page[Token]:
    rows, next_token = fetch_page(session, select(TokenRow), TokenRow.id, page_size, page_token)
    names = _account_names(session, rows)
    return Page[Token](
        items=[_to_model(r, names.get(r.account_id or "")) for r in rows],
        next_page_token=next_token,
    )


def revoke_token(session: Session, name_or_id: str) -> Token:
    row = session.scalar(
        select(TokenRow)
        .where((TokenRow.id == name_or_id) | (TokenRow.name == name_or_id))
        .where(TokenRow.revoked_at.is_(None))
    )
    if row is None:
        raise NotFoundError(f"token {name_or_id!r} not found", field="token")
    row.revoked_at = utcnow()
    return _to_model(row, _account_names(session, [row]).get(row.account_id or ""))


def authenticate(session: Session, secret: str) -> tuple[Token, AccountRow]:
    """The token and its account; 401 when unknown, revoked, expired or account-less."""
    row = session.scalar(select(TokenRow).where(TokenRow.secret_hash == hash_secret(secret)))
    now = datetime.now(UTC)
    if row is None or row.revoked_at is not None:
        raise UnauthenticatedError("invalid or revoked token")
    if row.expires_at is not None and row.expires_at <= now:
        raise UnauthenticatedError("token expired")
    account = session.get(AccountRow, row.account_id) if row.account_id else None
    if account is None:
        raise UnauthenticatedError("the token's account no longer exists")
    # Coarse last-use stamp: one write per minute at most keeps reads cheap.
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        row.last_used_at = now
    return _to_model(row, account.name), account


def ensure_admin_token(session: Session) -> TokenCreated | None:
    """On first start create the bootstrap admin token; later starts return None."""
    if session.scalar(select(TokenRow.id).limit(1)) is not None:
        return None
    return create_token(session, TokenCreate(name="admin", role=Role.ADMIN.value))
