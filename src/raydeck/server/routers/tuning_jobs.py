"""/api/v1/hyperparameterTuningJobs (+ trials, and the calls of the study driver)"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse, PlainTextResponse
from pydantic import Field
from sqlalchemy.orm import Session

from raydeck.core.models import Page
from raydeck.core.models.common import StrictModel
from raydeck.core.models.training import ArtifactFile, MetricPoint, TrainingState
from raydeck.core.models.tuning import (
    MAX_PARALLEL_TRIALS,
    HyperparameterTuningJob,
    HyperparameterTuningJobCreate,
    Trial,
    TrialReport,
    TrialReportResult,
)
from raydeck.server.auth import Principal, require
from raydeck.server.routers.common import DbSession, PageSize, PageToken, State
from raydeck.server.services import training_runs as runs
from raydeck.server.services import tuning_jobs as service
from raydeck.server.services.run_artifacts import artifact_file, list_artifacts
from raydeck.server.services.studies import StudyCache, trial_output_dir

router = APIRouter(prefix="/api/v1/hyperparameterTuningJobs", tags=["training"])


class SuggestRequest(StrictModel):
    count: Annotated[int, Field(ge=1, le=MAX_PARALLEL_TRIALS)] = 1


class TrialOutcome(StrictModel):
    ok: bool
    stopped: bool = False
    message: Annotated[str, Field(max_length=4000)] | None = None


@router.post("", status_code=201)
def create_tuning_job(
    body: HyperparameterTuningJobCreate,
    state: State,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("tuning_jobs.create"))],
) -> HyperparameterTuningJob:
    return service.create_tuning_job(
        state, session, body, project=caller.project, submitter=caller.account
    )


@router.get("")
def list_tuning_jobs(
    session: DbSession,
    caller: Annotated[Principal, Depends(require("tuning_jobs.list"))],
    page_size: PageSize = 100,
    page_token: PageToken = None,
    state: Annotated[TrainingState | None, Query()] = None,
    label: Annotated[str | None, Query(description="key=value")] = None,
) -> Page[HyperparameterTuningJob]:
    return service.list_tuning_jobs(
        session,
        page_size=page_size,
        page_token=page_token,
        project=caller.project,
        state=state,
        label=label,
    )


@router.get("/{job_id}")
def get_tuning_job(
    job_id: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("tuning_jobs.get"))],
) -> HyperparameterTuningJob:
    return service.get_tuning_job(session, job_id, caller.project)


@router.post("/{job_id}:cancel")
def cancel_tuning_job(
    job_id: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("tuning_jobs.cancel"))],
) -> HyperparameterTuningJob:
    row = runs.get_run_row(session, service.KIND, job_id, caller.project)
    runs.cancel_run(session, row)
    return service.to_model(session, row)


@router.delete("/{job_id}")
def delete_tuning_job(
    job_id: str,
    state: State,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("tuning_jobs.delete"))],
) -> HyperparameterTuningJob:
    row = runs.get_run_row(session, service.KIND, job_id, caller.project)
    job = service.to_model(session, row)
    for trial in service.list_trials(session, job_id, caller.project):
        runs.delete_run_metrics(session, trial.id)
    runs.delete_run(session, row)
    StudyCache.of(state.db).forget(job_id)
    return job


@router.get("/{job_id}/trials")
def list_trials(
    job_id: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("tuning_jobs.get"))],
) -> list[Trial]:
    return service.list_trials(session, job_id, caller.project)


@router.get("/{job_id}/trials/{trial_id}/metrics")
def trial_metrics(
    job_id: str,
    trial_id: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("tuning_jobs.get"))],
    metric: Annotated[str | None, Query()] = None,
) -> list[MetricPoint]:
    _trial_dir(session, job_id, trial_id, caller.project)
    return runs.metric_points(session, trial_id, metric)


@router.get("/{job_id}/trials/{trial_id}/logs", response_class=PlainTextResponse)
def trial_logs(
    job_id: str,
    trial_id: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("tuning_jobs.logs"))],
    replica: Annotated[str, Query()] = "workerpool0-0",
) -> PlainTextResponse:
    directory = _trial_dir(session, job_id, trial_id, caller.project)
    return PlainTextResponse(runs.read_replica_log(directory, replica))


@router.get("/{job_id}/trials/{trial_id}/artifacts")
def trial_artifacts(
    job_id: str,
    trial_id: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("tuning_jobs.get"))],
) -> list[ArtifactFile]:
    """Files the trial wrote under its AIP_* directories and metrics/."""
    return list_artifacts(_trial_dir(session, job_id, trial_id, caller.project))


@router.get("/{job_id}/trials/{trial_id}/artifacts/{path:path}", response_class=FileResponse)
def download_trial_artifact(
    job_id: str,
    trial_id: str,
    path: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("tuning_jobs.get"))],
) -> FileResponse:
    found = artifact_file(_trial_dir(session, job_id, trial_id, caller.project), path)
    return FileResponse(found, filename=found.name)


def _trial_dir(session: Session, job_id: str, trial_id: str, project: str) -> str:
    row = runs.get_run_row(session, service.KIND, job_id, project)
    service.get_trial_row(session, job_id, trial_id)
    return trial_output_dir(row.spec["base_output_dir"], trial_id)


# ---- called by the study driver and the trials on the cluster ---------------------------------


@router.post("/{job_id}/trials:suggest")
async def suggest_trials(
    job_id: str,
    body: SuggestRequest,
    state: State,
    caller: Annotated[Principal, Depends(require("tuning_jobs.run"))],
) -> dict[str, object]:
    return await asyncio.to_thread(
        service.suggest_trials, state, job_id, body.count, project=caller.project
    )


@router.post("/{job_id}/trials/{trial_id}:report")
async def report_trial(
    job_id: str,
    trial_id: str,
    body: TrialReport,
    state: State,
    caller: Annotated[Principal, Depends(require("tuning_jobs.run"))],
) -> TrialReportResult:
    return await asyncio.to_thread(
        service.report_trial, state, job_id, trial_id, body.points, project=caller.project
    )


@router.post("/{job_id}/trials/{trial_id}:complete")
async def complete_trial(
    job_id: str,
    trial_id: str,
    body: TrialOutcome,
    state: State,
    caller: Annotated[Principal, Depends(require("tuning_jobs.run"))],
) -> Trial:
    return await asyncio.to_thread(
        service.complete_trial,
        state,
        job_id,
        trial_id,
        body.ok,
        body.stopped,
        body.message,
        project=caller.project,
    )
