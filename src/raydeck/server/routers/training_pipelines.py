"""/api/v1/trainingPipelines"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from raydeck.core.errors import FailedPreconditionError
from raydeck.core.models import Page
from raydeck.core.models.pipelines import TrainingPipeline, TrainingPipelineCreate
from raydeck.core.models.training import TrainingState
from raydeck.server.auth import Principal, require
from raydeck.server.routers.common import DbSession, PageSize, PageToken, State
from raydeck.server.services import training_pipelines as service
from raydeck.server.services import training_runs as runs

router = APIRouter(prefix="/api/v1/trainingPipelines", tags=["training"])


@router.post("", status_code=201)
def create_pipeline(
    body: TrainingPipelineCreate,
    state: State,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("training_pipelines.create"))],
) -> TrainingPipeline:
    """Stored with its training job (QUEUED); the model is uploaded when the job succeeds."""
    return service.create_pipeline(
        state, session, body, project=caller.project, submitter=caller.account
    )


@router.get("")
def list_pipelines(
    session: DbSession,
    caller: Annotated[Principal, Depends(require("training_pipelines.list"))],
    page_size: PageSize = 100,
    page_token: PageToken = None,
) -> Page[TrainingPipeline]:
    return service.list_pipelines(
        session, page_size=page_size, page_token=page_token, project=caller.project
    )


@router.get("/{pipeline_id}")
def get_pipeline(
    pipeline_id: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("training_pipelines.get"))],
) -> TrainingPipeline:
    row = service.get_pipeline_row(session, pipeline_id, caller.project)
    return service.to_model(row, service.child_of(session, row))


@router.post("/{pipeline_id}:cancel")
def cancel_pipeline(
    pipeline_id: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("training_pipelines.cancel"))],
) -> TrainingPipeline:
    row = service.get_pipeline_row(session, pipeline_id, caller.project)
    child = service.child_of(session, row)
    if row.state not in runs.LIVE_STATES:
        raise FailedPreconditionError(
            f"training pipeline {pipeline_id} already ended ({row.state})", field="pipeline"
        )
    row.state, row.state_reason = TrainingState.CANCELLING.value, "cancel requested"
    if child is not None and child.state in runs.LIVE_STATES:
        runs.cancel_run(session, child)
    return service.to_model(row, child)


@router.delete("/{pipeline_id}")
def delete_pipeline(
    pipeline_id: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("training_pipelines.delete"))],
) -> TrainingPipeline:
    """Only once ended; its training job stays (delete it on its own), the model too."""
    row = service.get_pipeline_row(session, pipeline_id, caller.project)
    if row.state in runs.LIVE_STATES:
        raise FailedPreconditionError(
            f"training pipeline {pipeline_id} is {row.state}; cancel it first", field="pipeline"
        )
    pipeline = service.to_model(row, service.child_of(session, row))
    session.delete(row)
    return pipeline
