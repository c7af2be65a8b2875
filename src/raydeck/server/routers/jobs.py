"""/api/v1/jobs and /api/v1/clusters/{cluster}/jobs"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse, StreamingResponse

from raydeck.core.models import Job, JobState, JobSubmit, Page
from raydeck.server.auth import Principal, require
from raydeck.server.routers.common import DbSession, PageSize, PageToken, State
from raydeck.server.services import jobs as service

router = APIRouter(prefix="/api/v1", tags=["jobs"])


@router.post("/clusters/{cluster}/jobs", status_code=201)
async def submit_job(
    cluster: str,
    body: JobSubmit,
    state: State,
    caller: Annotated[Principal, Depends(require("jobs.submit"))],
) -> Job:
    return await service.submit_job(state, cluster, body, caller.project, caller.account)


@router.get("/jobs")
def list_jobs(
    session: DbSession,
    caller: Annotated[Principal, Depends(require("jobs.list"))],
    page_size: PageSize = 100,
    page_token: PageToken = None,
    cluster: Annotated[str | None, Query()] = None,
    state: Annotated[JobState | None, Query()] = None,
) -> Page[Job]:
    return service.list_jobs(
        session,
        page_size=page_size,
        page_token=page_token,
        cluster=cluster,
        state=state,
        project=caller.project,
    )


@router.get("/jobs/{job_id}")
async def get_job(
    job_id: str, state: State, caller: Annotated[Principal, Depends(require("jobs.get"))]
) -> Job:
    await asyncio.to_thread(service.ensure_in_project, state, job_id, caller.project)
    return await service.get_job(state, job_id)


@router.post("/jobs/{job_id}:stop")
async def stop_job(
    job_id: str, state: State, caller: Annotated[Principal, Depends(require("jobs.stop"))]
) -> Job:
    await asyncio.to_thread(service.ensure_in_project, state, job_id, caller.project)
    return await service.stop_job(state, job_id)


@router.delete("/jobs/{job_id}")
async def delete_job(
    job_id: str, state: State, caller: Annotated[Principal, Depends(require("jobs.delete"))]
) -> Job:
    await asyncio.to_thread(service.ensure_in_project, state, job_id, caller.project)
    return await service.delete_job(state, job_id)


@router.get("/jobs/{job_id}/logs", response_class=PlainTextResponse, response_model=None)
async def job_logs(
    job_id: str,
    state: State,
    caller: Annotated[Principal, Depends(require("jobs.logs"))],
    follow: bool = False,
) -> PlainTextResponse | StreamingResponse:
    await asyncio.to_thread(service.ensure_in_project, state, job_id, caller.project)
    if not follow:
        return PlainTextResponse(await service.get_job_logs(state, job_id))
    chunks = service.follow_job_logs(state, job_id)
    first = await anext(chunks, "")  # errors (unknown job, cluster down) surface as 4xx here

    async def stream() -> AsyncIterator[str]:
        yield first
        async for chunk in chunks:
            yield chunk

    return StreamingResponse(stream(), media_type="text/plain")
