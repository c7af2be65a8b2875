"""Ray jobs: submitted through the cluster's Ray Jobs API, recorded and tracked in the DB."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from raydeck.backends.ray_api import RayDashboardClient, RayJobInfo
from raydeck.core.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    NotFoundError,
)
from raydeck.core.ids import new_id
from raydeck.core.models import Job, JobState, JobSubmit, Page
from raydeck.core.models.jobs import TERMINAL_JOB_STATES
from raydeck.db.models import ClusterRow, JobRow
from raydeck.server.services import job_tokens
from raydeck.server.services.budgets import check_budget_allows
from raydeck.server.services.clusters import ACTIVE_STATES, get_cluster_row, ray_token
from raydeck.server.services.paging import fetch_page
from raydeck.server.state import ServerState

__all__ = [
    "ClusterTarget",
    "apply_ray_info",
    "check_budget",
    "cluster_target",
    "delete_job",
    "ensure_in_project",
    "follow_job_logs",
    "get_job",
    "get_job_logs",
    "list_jobs",
    "record_submission",
    "stop_job",
    "submit_job",
]

LOG_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class ClusterTarget:
    cluster_id: str
    name: str
    dashboard_url: str
    ray_auth_token: str
    project: str = "default"

    def client(self) -> RayDashboardClient:
        return RayDashboardClient(self.dashboard_url, self.ray_auth_token)


def _to_model(row: JobRow) -> Job:
    return Job(
        id=row.id,
        cluster=row.cluster_name,
        cluster_id=row.cluster_id,
        project=row.project,
        submission_id=row.submission_id,
        entrypoint=row.entrypoint,
        runtime_env=job_tokens.redact_runtime_env(row.runtime_env),
        metadata=row.job_metadata,
        state=JobState(row.state),
        message=job_tokens.redact_text(row.message) if row.message else row.message,
        created_at=row.created_at,
        start_time=row.start_time,
        end_time=row.end_time,
    )


def _target_from_row(state: ServerState, row: ClusterRow) -> ClusterTarget:
    if row.state not in ACTIVE_STATES or not row.dashboard_url:
        raise FailedPreconditionError(
            f"cluster {row.name!r} is {row.state}; it must be RUNNING", field="cluster"
        )
    token = ray_token(state.settings, row)
    return ClusterTarget(row.id, row.name, row.dashboard_url, token, row.project)


def cluster_target(state: ServerState, cluster: str, project: str = "default") -> ClusterTarget:
    with state.db.session() as session:
        return _target_from_row(state, get_cluster_row(session, cluster, project))


def record_submission(
    state: ServerState, target: ClusterTarget, submission_id: str, request: JobSubmit
) -> Job:
    """Store a job Ray has accepted (from our API or from the Ray Jobs proxy)."""
    with state.db.session() as session:
        row = JobRow(
            id=new_id("job"),
            project=target.project,
            cluster_id=target.cluster_id,
            cluster_name=target.name,
            submission_id=submission_id,
            entrypoint=request.entrypoint,
            runtime_env=request.runtime_env,
            job_metadata=dict(request.metadata),
            state=JobState.PENDING.value,
        )
        session.add(row)
        session.flush()
        return _to_model(row)


def _job_row(session: Session, job_id: str) -> JobRow:
    row = session.get(JobRow, job_id)
    if row is None:
        row = session.scalar(select(JobRow).where(JobRow.submission_id == job_id))
    if row is None:
        raise NotFoundError(f"job {job_id!r} not found", field="job")
    return row


def _submission_taken(state: ServerState, cluster_id: str, submission_id: str) -> bool:
    with state.db.session() as session:
        return (
            session.scalar(
                select(JobRow.id).where(
                    JobRow.cluster_id == cluster_id, JobRow.submission_id == submission_id
                )
            )
            is not None
        )


def check_budget(state: ServerState, project: str) -> None:
    """New jobs are refused while the project's budget limit is reached."""
    with state.db.session() as session:
        check_budget_allows(session, project, "submitting jobs")


async def submit_job(
    state: ServerState,
    cluster: str,
    request: JobSubmit,
    project: str = "default",
    submitter: str | None = None,
) -> Job:
    """``submitter``: the account the job's token acts for (narrowed to job permissions)."""
    await asyncio.to_thread(check_budget, state, project)
    target = await asyncio.to_thread(cluster_target, state, cluster, project)
    submission_id = request.submission_id or f"raydeck-{secrets.token_hex(8)}"
    if await asyncio.to_thread(_submission_taken, state, target.cluster_id, submission_id):
        raise AlreadyExistsError(
            f"submission_id {submission_id!r} already used on cluster {cluster!r}",
            field="submission_id",
        )
    runtime_env = request.runtime_env
    if job_tokens.wants_job_token(runtime_env):
        secret = await asyncio.to_thread(_issue_token, state, target, submission_id, submitter)
        runtime_env = job_tokens.job_runtime_env(
            runtime_env, state.settings, secret, target.project
        )
    try:
        async with target.client() as ray:
            await ray.submit_job(
                request.entrypoint,
                submission_id=submission_id,
                runtime_env=runtime_env,
                metadata=dict(request.metadata) or None,
                entrypoint_num_cpus=request.entrypoint_num_cpus,
                entrypoint_num_gpus=request.entrypoint_num_gpus,
                entrypoint_memory=request.entrypoint_memory,
                entrypoint_resources=request.entrypoint_resources,
            )
    except BaseException:
        await asyncio.to_thread(_discard_token, state, target, submission_id)
        raise
    # The stored runtime_env is the caller's: the job's token is never stored in clear.
    return await asyncio.to_thread(record_submission, state, target, submission_id, request)


def _issue_token(
    state: ServerState, target: ClusterTarget, submission_id: str, submitter: str | None
) -> str:
    with state.db.session() as session:
        return job_tokens.issue_job_token(session, target.cluster_id, submission_id, submitter)


def _discard_token(state: ServerState, target: ClusterTarget, submission_id: str) -> None:
    with state.db.session() as session:
        job_tokens.discard_job_token(session, target.cluster_id, submission_id)


def summarize_message(message: str | None) -> str | None:
    """Ray puts the log tail into a failed job's message; keep one line of reason plus the
    last line of output (usually the exception), and leave the rest to ``logs``."""
    if not message:
        return message
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    head = lines[0].removesuffix(":").split(", last available logs")[0]
    summary = head if len(lines) == 1 else f"{head}: {lines[-1]}"
    return summary[:1000]


def apply_ray_info(row: JobRow, info: RayJobInfo) -> None:
    row.state = info.status if info.status in JobState.__members__ else row.state
    row.message = summarize_message(info.message)
    row.start_time = info.start_time or row.start_time
    row.end_time = info.end_time or row.end_time


def _load(state: ServerState, job_id: str) -> tuple[Job, ClusterTarget | None]:
    with state.db.session() as session:
        row = _job_row(session, job_id)
        cluster = session.get(ClusterRow, row.cluster_id)
        target = None
        if cluster is not None and cluster.state in ACTIVE_STATES and cluster.dashboard_url:
            target = _target_from_row(state, cluster)
        return _to_model(row), target


def ensure_in_project(state: ServerState, job_id: str, project: str) -> None:
    """Jobs of other projects do not exist for the caller (404, not 403: no probing)."""
    with state.db.session() as session:
        if _job_row(session, job_id).project != project:
            raise NotFoundError(f"job {job_id!r} not found", field="job")


def _store_info(state: ServerState, job_id: str, info: RayJobInfo) -> Job:
    with state.db.session() as session:
        row = _job_row(session, job_id)
        apply_ray_info(row, info)
        if JobState(row.state) in TERMINAL_JOB_STATES:
            job_tokens.revoke_job_token(session, row.cluster_id, row.submission_id)
        return _to_model(row)


async def get_job(state: ServerState, job_id: str) -> Job:
    job, target = await asyncio.to_thread(_load, state, job_id)
    if job.state in TERMINAL_JOB_STATES or target is None:
        return job
    # Live jobs are read through from Ray so callers never see a stale state.
    async with target.client() as ray:
        info = await ray.get_job(job.submission_id)
    return await asyncio.to_thread(_store_info, state, job.id, info)


def list_jobs(
    session: Session,
    *,
    page_size: int,
    page_token: str | None,
    cluster: str | None = None,
    state: JobState | None = None,
    project: str | None = None,
) -> Page[Job]:
    query = select(JobRow)
    if project is not None:
        query = query.where(JobRow.project == project)
    if cluster is not None:
        query = query.where(JobRow.cluster_name == cluster)
    if state is not None:
        query = query.where(JobRow.state == state.value)
    rows, next_token = fetch_page(session, query, JobRow.id, page_size, page_token)
    return Page[Job](items=[_to_model(r) for r in rows], next_page_token=next_token)


async def stop_job(state: ServerState, job_id: str) -> Job:
    job, target = await asyncio.to_thread(_load, state, job_id)
    if job.state in TERMINAL_JOB_STATES:
        return job
    if target is None:
        raise FailedPreconditionError(f"cluster {job.cluster!r} is not running", field="job")
    async with target.client() as ray:
        await ray.stop_job(job.submission_id)
        info = await ray.get_job(job.submission_id)
    return await asyncio.to_thread(_store_info, state, job.id, info)


def _delete_row(state: ServerState, job_id: str) -> None:
    with state.db.session() as session:
        session.delete(_job_row(session, job_id))


async def delete_job(state: ServerState, job_id: str) -> Job:
    job = await get_job(state, job_id)
    if job.state not in TERMINAL_JOB_STATES:
        raise FailedPreconditionError(
            f"job {job.id!r} is {job.state}; stop it before deleting", field="job"
        )
    _, target = await asyncio.to_thread(_load, state, job_id)
    if target is not None:
        # Already gone from Ray is fine: the record is what we delete.
        async with target.client() as ray:
            with contextlib.suppress(NotFoundError):
                await ray.delete_job(job.submission_id)
    await asyncio.to_thread(_delete_row, state, job.id)
    return job


async def get_job_logs(state: ServerState, job_id: str) -> str:
    job, target = await asyncio.to_thread(_load, state, job_id)
    if target is None:
        raise FailedPreconditionError(
            f"cluster {job.cluster!r} is not running; its logs are gone with it", field="job"
        )
    async with target.client() as ray:
        return job_tokens.redact_text(await ray.get_job_logs(job.submission_id))


async def follow_job_logs(state: ServerState, job_id: str) -> AsyncIterator[str]:
    """Yield new log text as it appears, until the job ends."""
    job, target = await asyncio.to_thread(_load, state, job_id)
    if target is None:
        raise FailedPreconditionError(f"cluster {job.cluster!r} is not running", field="job")
    sent = 0
    async with target.client() as ray:
        while True:
            info = await ray.get_job(job.submission_id)
            logs = await ray.get_job_logs(job.submission_id)
            if len(logs) > sent:
                yield job_tokens.redact_text(logs[sent:])
                sent = len(logs)
            if info.status in {s.value for s in TERMINAL_JOB_STATES}:
                await asyncio.to_thread(_store_info, state, job.id, info)
                return
            await asyncio.sleep(LOG_POLL_SECONDS)


def parse_proxy_submission(body: dict[str, Any]) -> JobSubmit:
    """The subset of Ray's JobSubmitRequest we record (unknown fields are Ray's business)."""
    known = set(JobSubmit.model_fields)
    return JobSubmit.model_validate({k: v for k, v in body.items() if k in known and v is not None})
