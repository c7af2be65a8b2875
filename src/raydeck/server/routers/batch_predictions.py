"""/api/v1/batchPredictionJobs"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse

from raydeck.core.models import Page
from raydeck.core.models.batch_predictions import (
    BatchPredictionJob,
    BatchPredictionJobCreate,
    BatchPredictionState,
)
from raydeck.server.auth import Principal, require
from raydeck.server.routers.common import DbSession, PageSize, PageToken, State
from raydeck.server.services import batch_predictions as service

router = APIRouter(prefix="/api/v1/batchPredictionJobs", tags=["batch predictions"])


@router.post("", status_code=201)
def create_batch_prediction(
    body: BatchPredictionJobCreate,
    state: State,
    caller: Annotated[Principal, Depends(require("batch_predictions.create"))],
) -> BatchPredictionJob:
    """Checked and stored QUEUED at once; the server then runs it as a Ray job on the cluster."""
    return service.create_batch_prediction(state, body, caller.project, caller.account)


@router.get("")
def list_batch_predictions(
    session: DbSession,
    caller: Annotated[Principal, Depends(require("batch_predictions.list"))],
    page_size: PageSize = 100,
    page_token: PageToken = None,
    state: Annotated[BatchPredictionState | None, Query()] = None,
    cluster: Annotated[str | None, Query()] = None,
) -> Page[BatchPredictionJob]:
    return service.list_batch_predictions(
        session,
        page_size=page_size,
        page_token=page_token,
        state=state,
        cluster=cluster,
        project=caller.project,
    )


@router.get("/{job_id}")
def get_batch_prediction(
    job_id: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("batch_predictions.get"))],
) -> BatchPredictionJob:
    return service.get_batch_prediction(session, job_id, caller.project)


@router.post("/{job_id}:cancel")
def cancel_batch_prediction(
    job_id: str,
    state: State,
    caller: Annotated[Principal, Depends(require("batch_predictions.cancel"))],
) -> BatchPredictionJob:
    """QUEUED jobs end at once; running ones go CANCELLING until their Ray job stopped."""
    return service.cancel_batch_prediction(state, job_id, caller.project)


@router.delete("/{job_id}")
async def delete_batch_prediction(
    job_id: str,
    state: State,
    caller: Annotated[Principal, Depends(require("batch_predictions.delete"))],
) -> BatchPredictionJob:
    """Only once ended; the output files are kept."""
    return await service.delete_batch_prediction(state, job_id, caller.project)


@router.get("/{job_id}/logs", response_class=PlainTextResponse, response_model=None)
async def batch_prediction_logs(
    job_id: str,
    state: State,
    caller: Annotated[Principal, Depends(require("batch_predictions.logs"))],
) -> PlainTextResponse:
    return PlainTextResponse(await service.get_batch_prediction_logs(state, job_id, caller.project))
