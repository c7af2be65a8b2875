"""Cost accrual and reports.

Each pass observes every cluster and charges the interval since its previous observation
by what that observation saw: nothing unless the cluster was RUNNING or UPDATING, else the
hourly price of each node alive then × elapsed seconds (so autoscaling counts as it happens).
The interval's cost goes to the cluster (and so its project) and is split evenly between the
jobs running and the endpoints serving on it, so job/endpoint reports show their share.
Intervals that change nothing extend the previous records instead of adding rows.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from raydeck.core.ids import new_id
from raydeck.core.models import ClusterState, JobState
from raydeck.core.models.operations import (
    BillingDimension,
    BillingReport,
    BillingRow,
    PriceCatalog,
)
from raydeck.db.models import (
    ClusterRow,
    CostMeterRow,
    CostRecordRow,
    EndpointRow,
    JobRow,
)
from raydeck.server.services.pricing import node_hour_prices

__all__ = ["accrue", "billing_report", "spent_since", "total_accrued"]

_BILLABLE = {ClusterState.RUNNING.value, ClusterState.UPDATING.value}
_ACTIVE_JOB_STATES = {JobState.RUNNING.value}


def _observe(session: Session, row: ClusterRow, catalog: PriceCatalog) -> dict[str, Any]:
    if row.state not in _BILLABLE:
        return {"billable": False, "nodes": [], "subjects": []}
    prices = node_hour_prices(catalog, row.spec)
    nodes = [
        {"node": n["name"], "pool": n["pool"], "hour_price": prices.get(n["pool"], 0.0)}
        for n in row.spec.get("nodes", [])
        if n.get("alive")
    ]
    subjects: list[dict[str, str]] = [
        {"kind": "job", "id": job_id, "name": job_id}
        for job_id, _ in session.execute(
            select(JobRow.id, JobRow.submission_id).where(
                JobRow.cluster_id == row.id, JobRow.state.in_(_ACTIVE_JOB_STATES)
            )
        )
    ]
    for endpoint in session.scalars(select(EndpointRow).where(EndpointRow.cluster_id == row.id)):
        if endpoint.spec.get("deployed_models"):
            subjects.append({"kind": "endpoint", "id": endpoint.id, "name": endpoint.name})
    subjects.sort(key=lambda s: (s["kind"], s["id"]))
    return {"billable": True, "nodes": nodes, "subjects": subjects}


def _charge(session: Session, meter: CostMeterRow, now: datetime) -> None:
    """Charge [meter.observed_at, now) by what the meter last saw."""
    seconds = (now - meter.observed_at).total_seconds()
    if seconds <= 0 or not meter.billable or not meter.nodes:
        meter.open_records = {}
        return
    node_seconds = seconds * len(meter.nodes)
    amount = sum(float(n["hour_price"]) for n in meter.nodes) * seconds / 3600.0
    signature = {"nodes": meter.nodes, "subjects": meter.subjects}
    shares: list[tuple[str, str, str, float, float]] = [
        ("cluster", meter.cluster_id, meter.cluster_name, amount, node_seconds)
    ]
    if meter.subjects:
        n = len(meter.subjects)
        shares += [
            (s["kind"], s["id"], s["name"], amount / n, node_seconds / n) for s in meter.subjects
        ]
    previous = meter.open_records or {}
    extend = previous.get("signature") == signature
    records: dict[str, str] = {}
    for kind, subject_id, name, share, share_seconds in shares:
        key = f"{kind}:{subject_id}"
        record = session.get(CostRecordRow, previous["records"][key]) if extend else None
        if record is not None and record.end_at == meter.observed_at:
            record.end_at = now
            record.amount += share
            record.node_seconds += share_seconds
        else:
            record = CostRecordRow(
                id=new_id("cost"),
                project=meter.project,
                kind=kind,
                subject_id=subject_id,
                subject_name=name,
                cluster_id=meter.cluster_id,
                start_at=meter.observed_at,
                end_at=now,
                node_seconds=share_seconds,
                amount=share,
            )
            session.add(record)
        records[key] = record.id
    meter.open_records = {"signature": signature, "records": records}


def accrue(session: Session, catalog: PriceCatalog, now: datetime) -> None:
    """One metering pass over every cluster (and the meters of clusters now gone)."""
    clusters = {row.id: row for row in session.scalars(select(ClusterRow))}
    meters = {m.cluster_id: m for m in session.scalars(select(CostMeterRow))}
    for cluster_id, meter in meters.items():
        if cluster_id not in clusters:
            _charge(session, meter, now)
            session.delete(meter)
    for cluster_id, row in clusters.items():
        seen = _observe(session, row, catalog)
        found = meters.get(cluster_id)
        if found is None:
            meter = CostMeterRow(
                cluster_id=cluster_id,
                project=row.project,
                cluster_name=row.name,
                observed_at=now,
                open_records={},
            )
            session.add(meter)
        elif now < found.observed_at:  # the clock went back: never charge negative time
            continue
        else:
            meter = found
            _charge(session, meter, now)
        meter.observed_at = now
        meter.billable = seen["billable"]
        meter.nodes = seen["nodes"]
        meter.subjects = seen["subjects"]


def spent_since(session: Session, project: str, since: datetime) -> float:
    """Spend of ``project`` from ``since`` (records straddling it are prorated)."""
    return sum(
        _prorated(r, since, None)
        for r in session.scalars(
            select(CostRecordRow).where(
                CostRecordRow.kind == "cluster",
                CostRecordRow.project == project,
                CostRecordRow.end_at > since,
            )
        )
    )


def _prorated(record: CostRecordRow, since: datetime | None, until: datetime | None) -> float:
    start = max(record.start_at, since) if since else record.start_at
    end = min(record.end_at, until) if until else record.end_at
    total = (record.end_at - record.start_at).total_seconds()
    if end <= start or total <= 0:
        return 0.0
    return record.amount * (end - start).total_seconds() / total


_OWNER_KEYS = ("raydeck_batch_prediction", "raydeck_training_job")


def _job_owners(session: Session, job_ids: list[str]) -> dict[str, str]:
    """Job id → the Raydeck id users know it by: the batch prediction or training job that
    submitted it (bpj-/cj-/hpt-), else the job's own id (never Ray's submission id)."""
    owners = {}
    for job_id, metadata in session.execute(
        select(JobRow.id, JobRow.job_metadata).where(JobRow.id.in_(job_ids))
    ):
        owner = next((metadata[k] for k in _OWNER_KEYS if (metadata or {}).get(k)), None)
        owners[job_id] = str(owner) if owner else job_id
    return owners


def billing_report(
    session: Session,
    *,
    by: BillingDimension,
    currency: str,
    projects: set[str] | None,
    since: datetime | None,
    until: datetime | None,
) -> BillingReport:
    """``projects`` None means every project."""
    kind = "cluster" if by in (BillingDimension.PROJECT, BillingDimension.CLUSTER) else by.value
    query = select(CostRecordRow).where(CostRecordRow.kind == kind)
    if projects is not None:
        query = query.where(CostRecordRow.project.in_(projects))
    if since is not None:
        query = query.where(CostRecordRow.end_at > since)
    if until is not None:
        query = query.where(CostRecordRow.start_at < until)
    amounts: dict[str, float] = defaultdict(float)
    seconds: dict[str, float] = defaultdict(float)
    names: dict[str, tuple[str, str]] = {}
    spans: dict[str, tuple[datetime, datetime]] = {}
    for record in session.scalars(query):
        key = record.project if by is BillingDimension.PROJECT else record.subject_id
        name = record.project if by is BillingDimension.PROJECT else record.subject_name
        fraction_amount = _prorated(record, since, until)
        share = fraction_amount / record.amount if record.amount else 0.0
        amounts[key] += fraction_amount
        seconds[key] += record.node_seconds * share
        names[key] = (name, record.project)
        first, last = spans.get(key, (record.start_at, record.end_at))
        spans[key] = (min(first, record.start_at), max(last, record.end_at))
    if by is BillingDimension.JOB:
        owners = _job_owners(session, list(amounts))
        names = {k: (owners.get(k, k), project) for k, (_, project) in names.items()}
    rows = [
        BillingRow(
            key=key,
            name=names[key][0],
            project=names[key][1],
            amount=round(amounts[key], 6),
            node_seconds=round(seconds[key], 3),
            first=spans[key][0],
            last=spans[key][1],
        )
        for key in sorted(amounts, key=lambda k: -amounts[k])
    ]
    return BillingReport(
        by=by,
        currency=currency,
        since=since,
        until=until,
        rows=rows,
        total=round(sum(amounts.values()), 6),
    )


def total_accrued(session: Session) -> float:
    return float(
        session.scalar(
            select(func.sum(CostRecordRow.amount)).where(CostRecordRow.kind == "cluster")
        )
        or 0.0
    )
