"""What CustomJobs and tuning jobs share: a row in ``training_jobs`` that becomes one Ray job
per attempt on an existing or ephemeral cluster; cancel, delete, logs and metrics."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from raydeck.core.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from raydeck.core.models import ClusterCreate, HeadNodeSpec, WorkerPoolSpec
from raydeck.core.models.training import (
    TERMINAL_TRAINING_STATES,
    CustomJobSpec,
    MetricPoint,
    TrainingState,
)
from raydeck.db.models import (
    ClusterRow,
    MlflowRunRow,
    TrainingJobRow,
    TrainingMetricRow,
    utcnow,
)
from raydeck.server.services import clusters as cluster_service
from raydeck.server.services.job_tokens import redact_text, revoke_job_token
from raydeck.server.services.paging import fetch_page
from raydeck.server.state import RAY_VERSION, ServerState

__all__ = [
    "LIVE_STATES",
    "STATUS_FILE",
    "cancel_run",
    "default_output_dir",
    "delete_run",
    "delete_run_metrics",
    "finish",
    "get_run_row",
    "list_run_rows",
    "metric_points",
    "place_run",
    "read_replica_log",
    "record_points",
    "status_path",
]

S = TrainingState
LIVE_STATES = frozenset(s.value for s in TrainingState if s not in TERMINAL_TRAINING_STATES)
STATUS_FILE = "status.json"
KIND_NAMES = {"custom": "custom job", "tuning": "hyperparameter tuning job"}


def default_output_dir(state: ServerState, job_id: str) -> str:
    return str(state.settings.home / "training" / job_id)


def status_path(output_dir: str) -> str:
    return os.path.join(output_dir, ".raydeck", STATUS_FILE)


def _ephemeral_cluster(job_id: str, spec: CustomJobSpec, parallel: int) -> ClusterCreate:
    """A cluster shaped by the pools: the head hosts the chief(s), one worker pool per pool."""
    chief = spec.worker_pool_specs[0].machine_spec
    pools = [
        WorkerPoolSpec(
            name=f"workerpool{i}",
            num_cpus=max(pool.machine_spec.cpus, 0.001),
            num_gpus=pool.machine_spec.gpus,
            memory=pool.machine_spec.memory,
            resources=dict(pool.machine_spec.resources),
            replica_count=pool.replica_count * parallel,
        )
        for i, pool in enumerate(spec.worker_pool_specs[1:], 1)
    ]
    return ClusterCreate(
        name=f"eph-{job_id.split('-', 1)[1][-12:]}",
        head=HeadNodeSpec(
            num_cpus=chief.cpus * parallel,
            num_gpus=chief.gpus * parallel,
            resources={k: v * parallel for k, v in chief.resources.items()},
        ),
        worker_pools=pools,
        labels={"raydeck-ephemeral-for": job_id},
    )


def place_run(
    state: ServerState,
    session: Session,
    row: TrainingJobRow,
    cluster: str | None,
    spec: CustomJobSpec,
    *,
    parallel: int = 1,
) -> None:
    """Point the row at its cluster: an existing one of the row's project (404 naming
    ``cluster`` if that project has none of that name), or a new ephemeral one there."""
    if cluster is not None:
        cluster_row = cluster_service.get_cluster_row(session, cluster, row.project)
        if cluster_row.state in ("STOPPING", "DELETED", "ERROR"):
            raise FailedPreconditionError(
                f"cluster {cluster!r} is {cluster_row.state}", field="cluster"
            )
        row.cluster_id, row.cluster_name, row.ephemeral_cluster = (
            cluster_row.id,
            cluster_row.name,
            False,
        )
        return
    try:
        request = _ephemeral_cluster(row.id, spec, parallel)
    except ValidationError as exc:  # pools × parallel trials outgrow a cluster's caps
        error = exc.errors()[0]
        raise InvalidArgumentError(
            "worker_pool_specs: the job's own cluster would be too large: "
            f"{'.'.join(map(str, error['loc']))}: {error['msg'].removeprefix('Value error, ')}",
            field="worker_pool_specs",
        ) from exc
    backend = state.settings.default_backend
    created = cluster_service.create_cluster(
        session,
        request,
        backend=backend,
        ray_version=RAY_VERSION,
        capacity=state.backend(backend),
        settings=state.settings,
        project=row.project,
    )
    row.cluster_id, row.cluster_name, row.ephemeral_cluster = created.id, created.name, True


def get_run_row(session: Session, kind: str, job_id: str, project: str | None) -> TrainingJobRow:
    """``project`` None only for the server's own loops; callers' lookups pass theirs, so a
    run of another project is not found."""
    row = session.get(TrainingJobRow, job_id)
    if row is None or row.kind != kind or project not in (None, row.project):
        raise NotFoundError(f"{KIND_NAMES[kind]} {job_id!r} not found", field="job")
    return row


def list_run_rows(
    session: Session,
    kind: str,
    *,
    page_size: int,
    page_token: str | None,
    project: str,
    state: TrainingState | None = None,
    label: str | None = None,
) -> tuple[list[TrainingJobRow], str | None]:
    """A page of the project's runs; ``label`` ("key=value") keeps those carrying it."""
    query = select(TrainingJobRow).where(
        TrainingJobRow.kind == kind, TrainingJobRow.project == project
    )
    if state is not None:
        query = query.where(TrainingJobRow.state == state.value)
    wanted: tuple[str, str] | None = None
    if label:
        key, sep, value = label.partition("=")
        if not sep or not key:
            raise InvalidArgumentError("label filter must look like key=value", field="label")
        wanted = (key, value)
    rows, token = fetch_page(session, query, TrainingJobRow.id, page_size, page_token)
    if wanted is not None:
        rows = [r for r in rows if r.labels.get(wanted[0]) == wanted[1]]
    return list(rows), token


def cancel_run(session: Session, row: TrainingJobRow) -> None:
    """Not yet submitted: CANCELLED at once; submitted: CANCELLING until its Ray job stopped."""
    current = S(row.state)
    if current in (S.SUCCEEDED, S.FAILED):
        raise FailedPreconditionError(
            f"{KIND_NAMES[row.kind]} {row.id} already ended ({current.value})", field="job"
        )
    if current is S.CANCELLED or current is S.CANCELLING:
        return
    if row.submission_id is None:
        finish(session, row, S.CANCELLED, "cancelled before it was submitted")
    else:
        row.state, row.state_reason = S.CANCELLING.value, "cancel requested"


def finish(session: Session, row: TrainingJobRow, end: TrainingState, reason: str | None) -> None:
    """Terminal state, and what ends with the run: its ephemeral cluster, its job token."""
    row.state = end.value
    row.state_reason = reason[:2000] if reason else None
    row.end_time = utcnow()
    if row.cluster_id and row.submission_id:
        revoke_job_token(session, row.cluster_id, row.submission_id)
    if row.ephemeral_cluster and row.cluster_id:
        cluster = session.get(ClusterRow, row.cluster_id)
        if cluster is not None and cluster.state not in ("STOPPING", "DELETED"):
            cluster_service.delete_cluster(session, cluster.name, cluster.project)


def delete_run(session: Session, row: TrainingJobRow) -> None:
    if row.state in LIVE_STATES:
        raise FailedPreconditionError(
            f"{KIND_NAMES[row.kind]} {row.id} is {row.state}; cancel it before deleting",
            field="job",
        )
    delete_run_metrics(session, row.id)
    session.delete(row)


def delete_run_metrics(session: Session, run_id: str) -> None:
    """Its metric points and its MLflow mirroring record (the MLflow run itself stays)."""
    session.execute(delete(TrainingMetricRow).where(TrainingMetricRow.run_id == run_id))
    session.execute(delete(MlflowRunRow).where(MlflowRunRow.run_id == run_id))


def read_replica_log(output_dir: str, replica: str) -> str:
    """A replica's output (``workerpool1-0``); the files outlive the cluster."""
    if not replica.replace("-", "").isalnum():
        raise InvalidArgumentError(f"not a replica name: {replica!r}", field="replica")
    path = Path(output_dir) / "replica_logs" / f"{replica}.log"
    if not path.is_file():
        raise NotFoundError(f"no log for replica {replica!r} (yet): {path}", field="replica")
    return redact_text(path.read_text(errors="replace"))


def record_points(session: Session, run_id: str, points: list[MetricPoint]) -> None:
    now = utcnow()
    for point in points:
        session.add(
            TrainingMetricRow(
                run_id=run_id,
                metric=point.metric,
                step=point.step,
                value=point.value,
                recorded_at=point.time or now,
            )
        )
    session.flush()


def metric_points(
    session: Session, run_id: str, metric: str | None = None, since: datetime | None = None
) -> list[MetricPoint]:
    query = select(TrainingMetricRow).where(TrainingMetricRow.run_id == run_id)
    if metric is not None:
        query = query.where(TrainingMetricRow.metric == metric)
    if since is not None:
        query = query.where(TrainingMetricRow.recorded_at >= since)
    rows = session.scalars(query.order_by(TrainingMetricRow.id))
    return [
        MetricPoint(metric=r.metric, step=r.step, value=r.value, time=r.recorded_at) for r in rows
    ]
