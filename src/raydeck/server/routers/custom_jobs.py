"""/api/v1/customJobs"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse

from raydeck.core.models import Page
from raydeck.core.models.training import CustomJob, CustomJobCreate, MetricPoint, TrainingState
from raydeck.core.models.tuning import TrialReport, TrialReportResult
from raydeck.server.auth import Principal, require
from raydeck.server.routers.common import DbSession, PageSize, PageToken, State
from raydeck.server.services import custom_jobs as service
from raydeck.server.services import training_runs as runs

router = APIRouter(prefix="/api/v1/customJobs", tags=["training"])


@router.post("", status_code=201)
def create_custom_job(
    body: CustomJobCreate,
    state: State,
    session: DbSession,
    _: Annotated[Principal, Depends(require("custom_jobs.create"))],
) -> CustomJob:
    """Stored QUEUED at once (with its ephemeral cluster when ``cluster`` is left out)."""
    return service.create_custom_job(state, session, body)


@router.get("")
def list_custom_jobs(
    session: DbSession,
    _: Annotated[Principal, Depends(require("custom_jobs.list"))],
    page_size: PageSize = 100,
    page_token: PageToken = None,
    state: Annotated[TrainingState | None, Query()] = None,
) -> Page[CustomJob]:
    return service.list_custom_jobs(
        session, page_size=page_size, page_token=page_token, state=state
    )


@router.get("/{job_id}")
def get_custom_job(
    job_id: str,
    session: DbSession,
    _: Annotated[Principal, Depends(require("custom_jobs.get"))],
) -> CustomJob:
    return service.get_custom_job(session, job_id)


@router.post("/{job_id}:cancel")
def cancel_custom_job(
    job_id: str,
    session: DbSession,
    _: Annotated[Principal, Depends(require("custom_jobs.cancel"))],
) -> CustomJob:
    row = runs.get_run_row(session, service.KIND, job_id)
    runs.cancel_run(session, row)
    return service.to_model(row)


@router.delete("/{job_id}")
def delete_custom_job(
    job_id: str,
    session: DbSession,
    _: Annotated[Principal, Depends(require("custom_jobs.delete"))],
) -> CustomJob:
    """Only once ended; its output directory is kept."""
    row = runs.get_run_row(session, service.KIND, job_id)
    job = service.to_model(row)
    runs.delete_run(session, row)
    return job


@router.get("/{job_id}/logs", response_class=PlainTextResponse, response_model=None)
def custom_job_logs(
    job_id: str,
    session: DbSession,
    _: Annotated[Principal, Depends(require("custom_jobs.logs"))],
    replica: Annotated[str, Query()] = "workerpool0-0",
) -> PlainTextResponse:
    """One replica's output (``workerpool<pool>-<index>``; the chief by default)."""
    job = service.get_custom_job(session, job_id)
    return PlainTextResponse(runs.read_replica_log(job.base_output_dir, replica))


@router.get("/{job_id}/metrics")
def custom_job_metrics(
    job_id: str,
    session: DbSession,
    _: Annotated[Principal, Depends(require("custom_jobs.get"))],
    metric: Annotated[str | None, Query()] = None,
) -> list[MetricPoint]:
    runs.get_run_row(session, service.KIND, job_id)
    return runs.metric_points(session, job_id, metric)


@router.get("/{job_id}/artifacts")
def custom_job_artifacts(
    job_id: str,
    session: DbSession,
    _: Annotated[Principal, Depends(require("custom_jobs.get"))],
) -> list[str]:
    """Files the job wrote under AIP_MODEL_DIR and AIP_CHECKPOINT_DIR (relative paths)."""
    root = Path(service.get_custom_job(session, job_id).base_output_dir)
    return sorted(
        str(p.relative_to(root))
        for sub in ("model", "checkpoints")
        for p in (root / sub).rglob("*")
        if p.is_file()
    )


@router.post("/{job_id}/metrics:report")
def report_custom_job_metrics(
    job_id: str,
    body: TrialReport,
    session: DbSession,
    _: Annotated[Principal, Depends(require("custom_jobs.report"))],
) -> TrialReportResult:
    """Called by the job's replica runner with points from ``raydeck.report``/hypertune."""
    runs.get_run_row(session, service.KIND, job_id)
    runs.record_points(session, job_id, body.points)
    return TrialReportResult(should_stop=False)
