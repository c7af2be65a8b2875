"""Budgets per project: an alert threshold and a hard limit on spend since a start time."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from raydeck.core.errors import NotFoundError, ResourceExhaustedError
from raydeck.core.models.operations import Budget, BudgetUpdate
from raydeck.db.models import BudgetRow
from raydeck.server.services.access import get_project_row
from raydeck.server.services.billing import spent_since

__all__ = [
    "check_budget_allows",
    "delete_budget",
    "get_budget",
    "list_budget_rows",
    "masked_webhook",
    "set_budget",
    "to_model",
]


def masked_webhook(url: str | None) -> str | None:
    """Only scheme and host: a webhook URL's path and query are often its secret, and a
    budget is readable by everyone with ``budgets.get``."""
    if not url:
        return url
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"


def to_model(session: Session, row: BudgetRow, currency: str) -> Budget:
    return Budget(
        project=row.project,
        currency=currency,
        alert_amount=row.alert_amount,
        limit_amount=row.limit_amount,
        webhook_url=masked_webhook(row.webhook_url),
        since=row.since,
        spent=round(spent_since(session, row.project, row.since), 6),
        alerted_at=row.alerted_at,
        exhausted_at=row.exhausted_at,
    )


def _row(session: Session, project: str) -> BudgetRow:
    get_project_row(session, project)
    row = session.get(BudgetRow, project)
    if row is None:
        raise NotFoundError(f"project {project!r} has no budget", field="project")
    return row


def get_budget(session: Session, project: str, currency: str) -> Budget:
    return to_model(session, _row(session, project), currency)


def set_budget(
    session: Session, project: str, request: BudgetUpdate, currency: str, now: datetime
) -> Budget:
    """Create or replace; thresholds are evaluated anew at the next billing pass."""
    get_project_row(session, project)
    row = session.get(BudgetRow, project)
    if row is None:
        row = BudgetRow(project=project, since=request.since or now)
        session.add(row)
    elif request.since is not None:
        row.since = request.since
    row.alert_amount = request.alert_amount
    row.limit_amount = request.limit_amount
    row.webhook_url = str(request.webhook_url) if request.webhook_url else None
    row.alerted_at = None
    row.exhausted_at = None
    session.flush()
    return to_model(session, row, currency)


def delete_budget(session: Session, project: str, currency: str) -> Budget:
    row = _row(session, project)
    found = to_model(session, row, currency)
    session.delete(row)
    return found


def list_budget_rows(session: Session) -> list[BudgetRow]:
    return list(session.scalars(select(BudgetRow)))


def check_budget_allows(session: Session, project: str, what: str) -> None:
    """New work is refused while the project's hard limit is reached."""
    row = session.get(BudgetRow, project)
    if row is not None and row.exhausted_at is not None:
        raise ResourceExhaustedError(
            f"project {project!r} reached its budget limit ({row.limit_amount}); "
            f"{what} is refused until the budget is raised",
            field="project",
        )
