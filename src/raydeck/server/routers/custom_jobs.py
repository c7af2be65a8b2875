"""/api/v1/customJobs"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse, PlainTextResponse

from raydeck.core.models import Page
from raydeck.core.models.training import (
    ArtifactFile,
    CustomJob,
    CustomJobCreate,
    MetricPoint,
    TrainingState,
)
from raydeck.core.models.tuning import TrialReport, TrialReportResult
from raydeck.server.auth import Principal, require
from raydeck.server.routers.common import DbSession, PageSize, PageToken, State
from raydeck.server.services import custom_jobs as service
from raydeck.server.services import training_runs as runs
from raydeck.server.services.run_artifacts import artifact_file, list_artifacts

router = APIRouter(prefix="/api/v1/customJobs", tags=["training"])


@router.post("", status_code=201)
def create_custom_job(
    body: CustomJobCreate,
    state: State,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("custom_jobs.create"))],
) -> CustomJob:
    """Stored QUEUED at once (with its ephemeral cluster when ``cluster`` is left out)."""
    return service.create_custom_job(
        state, session, body, project=caller.project, submitter=caller.account
    )


@router.get("")
def list_custom_jobs(
    session: DbSession,
    caller: Annotated[Principal, Depends(require("custom_jobs.list"))],
    page_size: PageSize = 100,
    page_token: PageToken = None,
    state: Annotated[TrainingState | None, Query()] = None,
    label: Annotated[str | None, Query(description="key=value")] = None,
) -> Page[CustomJob]:
    return service.list_custom_jobs(
        session,
        page_size=page_size,
        page_token=page_token,
        project=caller.project,
        state=state,
        label=label,
    )


@router.get("/{job_id}")
def get_custom_job(
    job_id: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("custom_jobs.get"))],
) -> CustomJob:
    return service.get_custom_job(session, job_id, caller.project)


@router.post("/{job_id}:cancel")
def cancel_custom_job(
    job_id: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("custom_jobs.cancel"))],
) -> CustomJob:
    row = runs.get_run_row(session, service.KIND, job_id, caller.project)
    runs.cancel_run(session, row)
    return service.to_model(row)


@router.delete("/{job_id}")
def delete_custom_job(
    job_id: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("custom_jobs.delete"))],
) -> CustomJob:
    """Only once ended; its output directory is kept."""
    row = runs.get_run_row(session, service.KIND, job_id, caller.project)
    job = service.to_model(row)
    runs.delete_run(session, row)
    return job


@router.get("/{job_id}/logs", response_class=PlainTextResponse, response_model=None)
def custom_job_logs(
    job_id: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("custom_jobs.logs"))],
    replica: Annotated[str, Query()] = "workerpool0-0",
) -> PlainTextResponse:
    """One replica's output (``workerpool<pool>-<index>``; the chief by default)."""
    job = service.get_custom_job(session, job_id, caller.project)
    return PlainTextResponse(runs.read_replica_log(job.base_output_dir, replica))


@router.get("/{job_id}/metrics")
def custom_job_metrics(
    job_id: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("custom_jobs.get"))],
    metric: Annotated[str | None, Query()] = None,
) -> list[MetricPoint]:
    runs.get_run_row(session, service.KIND, job_id, caller.project)
    return runs.metric_points(session, job_id, metric)


@router.get("/{job_id}/artifacts")
def custom_job_artifacts(
    job_id: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("custom_jobs.get"))],
) -> list[ArtifactFile]:
    """Files under AIP_MODEL_DIR, AIP_CHECKPOINT_DIR, AIP_TENSORBOARD_LOG_DIR and metrics/."""
    return list_artifacts(service.get_custom_job(session, job_id, caller.project).base_output_dir)


@router.get("/{job_id}/artifacts/{path:path}", response_class=FileResponse)
def download_custom_job_artifact(
    job_id: str,
    path: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("custom_jobs.get"))],
) -> FileResponse:
    """One file, by its path in the listing (``model/model.joblib``)."""
    output_dir = service.get_custom_job(session, job_id, caller.project).base_output_dir
    found = artifact_file(output_dir, path)
    return FileResponse(found, filename=found.name)


@router.post("/{job_id}/metrics:report")
def report_custom_job_metrics(
    job_id: str,
    body: TrialReport,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("custom_jobs.report"))],
) -> TrialReportResult:
    """Called by the job's replica runner with points from ``raydeck.report``/hypertune."""
    runs.get_run_row(session, service.KIND, job_id, caller.project)
    runs.record_points(session, job_id, body.points)
    return TrialReportResult(should_stop=False)
