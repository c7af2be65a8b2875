"""TrainingPipelines: a training job, then its model (AIP_MODEL_DIR) uploaded to the registry.

The pipeline's child job is created with the pipeline (same transaction, so a refused
request stores nothing); the pipelines reconciler follows it and uploads the model.
"""

from __future__ import annotations

import os

from sqlalchemy import select
from sqlalchemy.orm import Session

from raydeck.core.errors import NotFoundError
from raydeck.core.ids import new_id
from raydeck.core.models import ModelUpload, Page
from raydeck.core.models.pipelines import TrainingPipeline, TrainingPipelineCreate
from raydeck.core.models.training import TrainingState
from raydeck.db.models import TrainingJobRow, TrainingPipelineRow, TrialRow
from raydeck.server.services import custom_jobs, tuning_jobs
from raydeck.server.services.model_uploads import _precheck
from raydeck.server.services.paging import fetch_page
from raydeck.server.services.studies import trial_output_dir
from raydeck.server.state import ServerState

__all__ = [
    "child_of",
    "create_pipeline",
    "get_pipeline_row",
    "list_pipelines",
    "model_dir_of",
    "to_model",
    "upload_request",
]


def to_model(row: TrainingPipelineRow, child: TrainingJobRow | None = None) -> TrainingPipeline:
    custom = row.training_job_id if child is not None and child.kind == "custom" else None
    tuning = row.training_job_id if child is not None and child.kind == "tuning" else None
    return TrainingPipeline(
        id=row.id,
        display_name=row.display_name,
        project=row.project,
        training_task=row.spec["training_task"],
        model_to_upload=row.spec["model_to_upload"],
        labels=row.labels,
        state=TrainingState(row.state),
        state_reason=row.state_reason,
        custom_job_id=custom,
        hyperparameter_tuning_job_id=tuning,
        model_version=row.model_version,
        model_version_id=row.model_version_id,
        created_at=row.created_at,
        start_time=row.start_time,
        end_time=row.end_time,
        updated_at=row.updated_at,
    )


def upload_request(row: TrainingPipelineRow, artifact_uri: str | None) -> ModelUpload:
    target = row.spec["model_to_upload"]
    return ModelUpload.model_validate(
        {
            "display_name": target.get("display_name"),
            "parent_model": target.get("parent_model"),
            "framework": target["framework"],
            "description": target.get("description"),
            "labels": {**target.get("labels", {}), "raydeck-pipeline": row.id},
            "version_aliases": target.get("version_aliases", []),
            "artifact_uri": artifact_uri,
        }
    )


def create_pipeline(
    state: ServerState,
    session: Session,
    request: TrainingPipelineCreate,
    *,
    project: str,
    submitter: str | None = None,
) -> TrainingPipeline:
    """The pipeline, its training job (on a cluster of ``project``) and, later, its model all
    belong to ``project``."""
    pipeline_id = new_id("tp")
    row = TrainingPipelineRow(
        id=pipeline_id,
        project=project,
        display_name=request.display_name or pipeline_id,
        state=TrainingState.QUEUED.value,
        spec=request.model_dump(mode="json", include={"training_task", "model_to_upload"}),
        labels=dict(request.labels),
    )
    # The model target must be usable now (parent exists / name free, framework known).
    _precheck(state.db, upload_request(row, "pending"), uploaded=False, project=project)
    task = request.training_task
    if task.custom_job is not None:
        child_id = custom_jobs.create_custom_job(
            state,
            session,
            task.custom_job,
            project=project,
            pipeline_id=pipeline_id,
            submitter=submitter,
        ).id
    else:
        assert task.hyperparameter_tuning_job is not None
        child_id = tuning_jobs.create_tuning_job(
            state,
            session,
            task.hyperparameter_tuning_job,
            project=project,
            pipeline_id=pipeline_id,
            submitter=submitter,
        ).id
    row.training_job_id = child_id
    session.add(row)
    session.flush()
    return to_model(row, session.get(TrainingJobRow, child_id))


def get_pipeline_row(
    session: Session, pipeline_id: str, project: str | None
) -> TrainingPipelineRow:
    """``project`` None only for the server's own loops (another project's id: not found)."""
    row = session.get(TrainingPipelineRow, pipeline_id)
    if row is None or project not in (None, row.project):
        raise NotFoundError(f"training pipeline {pipeline_id!r} not found", field="pipeline")
    return row


def child_of(session: Session, row: TrainingPipelineRow) -> TrainingJobRow | None:
    return session.get(TrainingJobRow, row.training_job_id) if row.training_job_id else None


def list_pipelines(
    session: Session, *, page_size: int, page_token: str | None, project: str
) -> Page[TrainingPipeline]:
    query = select(TrainingPipelineRow).where(TrainingPipelineRow.project == project)
    rows, token = fetch_page(session, query, TrainingPipelineRow.id, page_size, page_token)
    return Page[TrainingPipeline](
        items=[to_model(r, child_of(session, r)) for r in rows], next_page_token=token
    )


def model_dir_of(session: Session, child: TrainingJobRow) -> str:
    """AIP_MODEL_DIR of the job, or of the tuning job's best trial."""
    output = child.spec["base_output_dir"]
    if child.kind == "tuning":
        best = session.get(TrialRow, child.best_trial_id) if child.best_trial_id else None
        if best is None:
            raise NotFoundError("the tuning job has no best trial", field="training_task")
        output = trial_output_dir(output, best.id)
    return os.path.join(output, "model")
