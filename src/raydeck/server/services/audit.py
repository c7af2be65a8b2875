"""The audit log: every mutation (who, what, when, outcome), written once per request."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from raydeck.core.ids import new_id
from raydeck.core.models.access import AuditEntry
from raydeck.core.models.common import Page
from raydeck.db.models import AuditRow, utcnow
from raydeck.server.services.paging import fetch_page

__all__ = ["SYSTEM_ACTOR", "as_utc", "list_audit", "record_audit", "set_attempts"]

SYSTEM_ACTOR = "system"


def as_utc(value: datetime) -> datetime:
    """Query parameters without a timezone are taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def record_audit(
    session: Session,
    *,
    actor: str,
    action: str,
    method: str,
    path: str,
    status_code: int,
    outcome: str,
    project: str | None = None,
    token_id: str | None = None,
    detail: str | None = None,
    time: datetime | None = None,
    row_id: str | None = None,
) -> str:
    """The new row's id (``row_id`` if given)."""
    row_id = row_id or new_id("aud")
    session.add(
        AuditRow(
            id=row_id,
            time=time or utcnow(),
            actor=actor[:128],
            token_id=token_id,
            project=project,
            action=action[:128],
            method=method[:8],
            path=path,
            status_code=status_code,
            outcome=outcome[:32],
            detail=detail,
        )
    )
    return row_id


def set_attempts(session: Session, row_id: str, count: int) -> None:
    """An aggregated row of unauthenticated attempts: how many its window has seen."""
    row = session.get(AuditRow, row_id)
    if row is not None and row.detail:
        source = row.detail.split(":", 1)[0]
        row.detail = f"{source}: {count} attempt{'s' if count != 1 else ''}"


def _to_model(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        time=row.time,
        actor=row.actor,
        token_id=row.token_id,
        project=row.project,
        action=row.action,
        method=row.method,
        path=row.path,
        status_code=row.status_code,
        outcome=row.outcome,
        detail=row.detail,
    )


def list_audit(
    session: Session,
    *,
    page_size: int,
    page_token: str | None,
    actor: str | None = None,
    action: str | None = None,
    project: str | None = None,
    since: datetime | None = None,
) -> Page[AuditEntry]:
    query = select(AuditRow)
    if actor:
        query = query.where(AuditRow.actor == actor)
    if action:
        query = query.where(AuditRow.action.startswith(action, autoescape=True))
    if project:
        query = query.where(AuditRow.project == project)
    if since:
        query = query.where(AuditRow.time >= as_utc(since))
    rows, next_token = fetch_page(session, query, AuditRow.id, page_size, page_token)
    return Page[AuditEntry](items=[_to_model(r) for r in rows], next_page_token=next_token)
