"""/metrics, /api/v1/logs, /api/v1/billing/report, /api/v1/projects/{project}/budget"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.orm import Session

from raydeck.core.errors import PermissionDeniedError
from raydeck.core.models.common import Page
from raydeck.core.models.operations import (
    BillingDimension,
    BillingReport,
    Budget,
    BudgetUpdate,
    LogEntry,
    LogSeverity,
)
from raydeck.server.auth import Principal, require
from raydeck.server.metrics import exposition_for
from raydeck.server.routers.common import DbSession, PageSize, State
from raydeck.server.services import access, billing, budgets
from raydeck.server.services import logs as log_service
from raydeck.server.services.audit import as_utc

router = APIRouter(tags=["operations"])

AllProjects = Annotated[
    bool, Query(description="every project (needs the permission on all projects)")
]


def _projects(
    session: Session, caller: Principal, permission: str, everywhere: bool
) -> set[str] | None:
    if not everywhere:
        return {caller.project}
    if not access.allowed_everywhere(session, caller.account, permission):
        raise PermissionDeniedError(
            f"{caller.account!r} may not {permission} in every project", permission=permission
        )
    return None


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(
    state: State,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("metrics.get"))],
) -> Response:
    """Prometheus exposition of the control plane's metrics: the series of every project the
    caller may read metrics in (all of them, server-wide ones included, for a binding on
    every project)."""
    projects = access.projects_allowing(session, caller.account, "metrics.get")
    return Response(
        exposition_for(state.metrics.registry, projects), media_type=CONTENT_TYPE_LATEST
    )


@router.get("/api/v1/logs")
def query_logs(
    session: DbSession,
    caller: Annotated[Principal, Depends(require("logs.list"))],
    resource: Annotated[
        str | None, Query(max_length=200, description="<kind>/<name or id>, e.g. job/j-1")
    ] = None,
    since: Annotated[datetime | None, Query()] = None,
    until: Annotated[datetime | None, Query()] = None,
    severity: Annotated[LogSeverity | None, Query(description="minimum severity")] = None,
    text: Annotated[str | None, Query(max_length=500, description="substring")] = None,
    after: Annotated[int | None, Query(ge=0, description="only records after this id")] = None,
    page_size: PageSize = 100,
    all_projects: AllProjects = False,
    newest: Annotated[
        bool, Query(description="the newest page_size records (still oldest first), like tail")
    ] = False,
) -> Page[LogEntry]:
    return log_service.query_logs(
        session,
        projects=_projects(session, caller, "logs.list", all_projects),
        resource=resource,
        since=as_utc(since) if since else None,
        until=as_utc(until) if until else None,
        severity=severity,
        text=text,
        after=after,
        page_size=page_size,
        newest=newest,
    )


@router.get("/api/v1/billing/report")
def billing_report(
    session: DbSession,
    state: State,
    caller: Annotated[Principal, Depends(require("billing.view"))],
    by: BillingDimension = BillingDimension.PROJECT,
    since: Annotated[datetime | None, Query()] = None,
    until: Annotated[datetime | None, Query()] = None,
    all_projects: AllProjects = False,
) -> BillingReport:
    return billing.billing_report(
        session,
        by=by,
        currency=state.price_catalog.currency,
        projects=_projects(session, caller, "billing.view", all_projects),
        since=as_utc(since) if since else None,
        until=as_utc(until) if until else None,
    )


@router.get("/api/v1/projects/{project}/budget")
def get_budget(
    project: str,
    session: DbSession,
    state: State,
    _: Annotated[Principal, Depends(require("budgets.get"))],
) -> Budget:
    return budgets.get_budget(session, project, state.price_catalog.currency)


@router.put("/api/v1/projects/{project}/budget")
def set_budget(
    project: str,
    body: BudgetUpdate,
    session: DbSession,
    state: State,
    _: Annotated[Principal, Depends(require("budgets.update"))],
) -> Budget:
    return budgets.set_budget(session, project, body, state.price_catalog.currency, state.clock())


@router.delete("/api/v1/projects/{project}/budget")
def delete_budget(
    project: str,
    session: DbSession,
    state: State,
    _: Annotated[Principal, Depends(require("budgets.delete"))],
) -> Budget:
    return budgets.delete_budget(session, project, state.price_catalog.currency)
