"""Meters cluster cost and enforces budgets: alert (log, metric, webhook), then hard limit
(stop the project's jobs, scale its endpoints to their minimum, refuse new clusters)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

import httpx
from sqlalchemy import select

from raydeck.core.errors import RaydeckError
from raydeck.core.models import JobState
from raydeck.core.models.operations import PriceCatalog
from raydeck.db.models import EndpointRow, JobRow
from raydeck.server.reconcilers.loop import ReconcileLoop
from raydeck.server.services import billing, budgets
from raydeck.server.services import endpoints as endpoint_service
from raydeck.server.services import jobs as job_service
from raydeck.server.services.audit import SYSTEM_ACTOR, record_audit
from raydeck.server.state import ServerState

__all__ = ["BillingReconciler", "BudgetBreach"]

log = logging.getLogger(__name__)

_STOPPABLE = (JobState.PENDING.value, JobState.RUNNING.value)


@dataclass(frozen=True)
class BudgetBreach:
    project: str
    kind: str  # "alert" or "limit"
    spent: float
    alert_amount: float | None
    limit_amount: float | None
    webhook_url: str | None
    time: datetime


class BillingReconciler:
    def __init__(self, state: ServerState, catalog: PriceCatalog) -> None:
        self.state = state
        self.catalog = catalog
        self.loop = ReconcileLoop("billing", state.settings.billing_interval, self.tick)
        # Woken by API changes and by every cluster observation, so cost follows node changes.
        state.wake_callbacks.append(self.loop.wake)
        state.observation_callbacks.append(self.loop.wake)

    async def tick(self) -> None:
        for breach in await asyncio.to_thread(self.meter):
            await self.act(breach)

    def meter(self) -> list[BudgetBreach]:
        """Accrue cost up to now and return the budget thresholds newly crossed."""
        now = self.state.clock()
        breaches = []
        with self.state.db.session() as session:
            billing.accrue(session, self.catalog, now)
            session.flush()
            for row in budgets.list_budget_rows(session):
                spent = billing.spent_since(session, row.project, row.since)
                crossed = []
                if (
                    row.alert_amount is not None
                    and spent >= row.alert_amount
                    and not row.alerted_at
                ):
                    row.alerted_at = now
                    crossed.append("alert")
                if (
                    row.limit_amount is not None
                    and spent >= row.limit_amount
                    and not row.exhausted_at
                ):
                    row.exhausted_at = now
                    crossed.append("limit")
                breaches += [
                    BudgetBreach(
                        row.project,
                        kind,
                        spent,
                        row.alert_amount,
                        row.limit_amount,
                        row.webhook_url,
                        now,
                    )
                    for kind in crossed
                ]
        return breaches

    async def act(self, breach: BudgetBreach) -> None:
        log.warning(
            "project %s: budget %s crossed (spent %.6f %s, alert %s, limit %s)",
            breach.project,
            breach.kind,
            breach.spent,
            self.catalog.currency,
            breach.alert_amount,
            breach.limit_amount,
        )
        self.state.metrics.budget_alerts.labels(breach.project, breach.kind).inc()
        detail = f"spent {breach.spent:.6f} {self.catalog.currency}"
        if breach.kind == "limit":
            detail += "; " + await self._stop_work(breach.project)
        if breach.webhook_url:
            detail += "; webhook " + await self._notify(breach)
        await asyncio.to_thread(self._audit, breach, detail)

    async def _stop_work(self, project: str) -> str:
        job_ids, scaled = await asyncio.to_thread(self._scale_endpoints_and_list_jobs, project)
        stopped, failed = [], []
        for job_id in job_ids:
            try:
                await job_service.stop_job(self.state, job_id)
                stopped.append(job_id)
            except RaydeckError as exc:
                failed.append(f"{job_id} ({exc.message})")
        self.state.wake_reconcilers()
        summary = f"stopped jobs: {', '.join(stopped) or 'none'}"
        if failed:
            summary += f"; could not stop: {', '.join(failed)}"
        return summary + f"; endpoints scaled to minimum: {', '.join(scaled) or 'none'}"

    def _scale_endpoints_and_list_jobs(self, project: str) -> tuple[list[str], list[str]]:
        with self.state.db.session() as session:
            job_ids = list(
                session.scalars(
                    select(JobRow.id).where(JobRow.project == project, JobRow.state.in_(_STOPPABLE))
                )
            )
            scaled = [
                row.name
                for row in session.scalars(
                    select(EndpointRow).where(EndpointRow.project == project)
                )
                if endpoint_service.scale_to_minimum(row)
            ]
        return job_ids, scaled

    async def _notify(self, breach: BudgetBreach) -> str:
        payload = {
            "project": breach.project,
            "kind": breach.kind,
            "spent": round(breach.spent, 6),
            "currency": self.catalog.currency,
            "alert_amount": breach.alert_amount,
            "limit_amount": breach.limit_amount,
            "time": breach.time.isoformat(),
        }
        assert breach.webhook_url is not None
        try:
            async with httpx.AsyncClient(timeout=10.0) as client:
                response = await client.post(breach.webhook_url, json=payload)
            return f"answered {response.status_code}"
        except httpx.HTTPError as exc:
            log.warning("budget webhook %s failed: %s", breach.webhook_url, exc)
            return f"failed: {exc}"

    def _audit(self, breach: BudgetBreach, detail: str) -> None:
        with self.state.db.session() as session:
            record_audit(
                session,
                actor=SYSTEM_ACTOR,
                action="budgets.alert" if breach.kind == "alert" else "budgets.enforce",
                method="-",
                path=f"/api/v1/projects/{breach.project}/budget",
                status_code=200,
                outcome="ok",
                project=breach.project,
                detail=detail,
                time=breach.time,
            )
