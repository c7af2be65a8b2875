"""Drives batch prediction jobs: submits QUEUED ones, follows their Ray job, reads results.

Everything it needs is in the rows and in Ray (the submission id is chosen at creation, so a
re-submission after a restart is recognised), hence nothing is lost when the server dies.
The Ray job gets RAYDECK_SERVER and a job-scoped RAYDECK_TOKEN (revoked when it ends), with
which it resolves the warehouse connections of table inputs and outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from sqlalchemy import select

from raydeck.backends.ray_api import RayJobInfo
from raydeck.core.errors import AlreadyExistsError, NotFoundError, RaydeckError, UnavailableError
from raydeck.core.models import JobSubmit
from raydeck.core.models.batch_predictions import TERMINAL_BATCH_STATES, BatchPredictionState
from raydeck.db.models import BatchPredictionJobRow, ClusterRow, JobRow, utcnow
from raydeck.runtime.batch_files import (
    ERROR_MARKER,
    PROGRESS_FILE,
    SUMMARY_FILE,
    join_uri,
    read_json_file,
)
from raydeck.server.reconcilers.loop import ReconcileLoop
from raydeck.server.services import job_tokens
from raydeck.server.services import jobs as job_service
from raydeck.server.services.batch_predictions import LIVE_STATES, entrypoint, status_uri
from raydeck.server.services.clusters import ACTIVE_STATES, ray_token
from raydeck.server.services.jobs import ClusterTarget
from raydeck.server.state import ServerState

__all__ = ["BatchPredictionReconciler", "failure_reason"]

log = logging.getLogger(__name__)

S = BatchPredictionState


def failure_reason(message: str | None) -> str:
    """The runtime's own one-line reason when it left one, else Ray's summarized message."""
    if message and ERROR_MARKER in message:
        tail = message.rsplit(ERROR_MARKER, 1)[1].strip()
        return tail.splitlines()[0] if tail else "the batch prediction failed"
    return job_service.summarize_message(message) or "the Ray job failed"


@dataclass(frozen=True)
class _Work:
    job_id: str
    state: BatchPredictionState
    submission_id: str
    target: ClusterTarget
    output_uri: str
    entrypoint: str


class BatchPredictionReconciler:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.loop = ReconcileLoop("batch_predictions", state.settings.reconcile_interval, self.tick)
        state.wake_callbacks.append(self.loop.wake)

    async def tick(self) -> None:
        for work in await asyncio.to_thread(self._plan):
            self.loop.spawn(work.job_id, partial(self._reconcile, work))

    def _plan(self) -> list[_Work]:
        work: list[_Work] = []
        with self.state.db.session() as session:
            rows = session.scalars(
                select(BatchPredictionJobRow).where(BatchPredictionJobRow.state.in_(LIVE_STATES))
            )
            for row in rows:
                cluster = session.get(ClusterRow, row.cluster_id)
                if cluster is None or cluster.state not in ACTIVE_STATES:
                    what = "deleted" if cluster is None else cluster.state
                    end = S.CANCELLED if row.state == S.CANCELLING.value else S.FAILED
                    row.state, row.end_time = end.value, utcnow()
                    row.state_reason = f"cluster {row.cluster_name!r} is {what}"
                    job_tokens.revoke_job_token(session, row.cluster_id, row.submission_id)
                    continue
                if not cluster.dashboard_url:
                    continue
                target = ClusterTarget(  # its Ray job is recorded in the cluster's project
                    cluster.id,
                    cluster.name,
                    cluster.dashboard_url,
                    ray_token(self.state.settings, cluster),
                    cluster.project,
                )
                work.append(
                    _Work(
                        row.id,
                        S(row.state),
                        row.submission_id,
                        target,
                        status_uri(row.spec),
                        entrypoint(row) if row.state == S.QUEUED.value else "",
                    )
                )
        return work

    async def _reconcile(self, work: _Work) -> None:
        if work.state is S.QUEUED:
            await self._submit(work)
        elif work.state is S.CANCELLING:
            await self._cancel(work)
        else:
            await self._follow(work)

    # ---- QUEUED → PENDING --------------------------------------------------------------------

    async def _submit(self, work: _Work) -> None:
        metadata = {"raydeck_batch_prediction": work.job_id}
        try:
            async with work.target.client() as ray:
                try:
                    await ray.get_job(work.submission_id)
                    adopted = True  # submitted before a restart: the same Ray job (and token)
                except NotFoundError:
                    adopted = False
                if not adopted:
                    secret = await asyncio.to_thread(self._token, work)
                    with contextlib.suppress(AlreadyExistsError):
                        await ray.submit_job(
                            work.entrypoint,
                            submission_id=work.submission_id,
                            runtime_env=job_tokens.job_runtime_env(
                                None, self.state.settings, secret, work.target.project
                            ),
                            metadata=metadata,
                            # the driver only coordinates; actors do the work
                            entrypoint_num_cpus=0,
                        )
        except UnavailableError as exc:
            await asyncio.to_thread(self._note, work.job_id, f"waiting to submit: {exc.message}")
            return
        except RaydeckError as exc:
            reason = f"the cluster refused the Ray job: {exc.message}"
            await asyncio.to_thread(self._store, work, None, S.FAILED, reason)
            return
        request = JobSubmit(entrypoint=work.entrypoint, metadata=metadata)
        job_id = await asyncio.to_thread(self._job_record, work, request)
        await asyncio.to_thread(self._submitted, work.job_id, job_id)

    def _token(self, work: _Work) -> str:
        with self.state.db.session() as session:
            row = session.get(BatchPredictionJobRow, work.job_id)
            submitter = row.spec.get("submitted_by") if row is not None else None
            return job_tokens.issue_job_token(
                session, work.target.cluster_id, work.submission_id, submitter
            )

    def _job_record(self, work: _Work, request: JobSubmit) -> str:
        """Id of the Raydeck Job for the Ray job (so `jobs list/logs` show it), made once."""
        with self.state.db.session() as session:
            existing = session.scalar(
                select(JobRow.id).where(
                    JobRow.cluster_id == work.target.cluster_id,
                    JobRow.submission_id == work.submission_id,
                )
            )
        if existing is not None:
            return existing
        return job_service.record_submission(
            self.state, work.target, work.submission_id, request
        ).id

    def _submitted(self, job_id: str, raydeck_job_id: str) -> None:
        with self.state.db.session() as session:
            row = session.get(BatchPredictionJobRow, job_id)
            if row is None:
                return
            row.job_id = raydeck_job_id
            if row.state == S.QUEUED.value:
                row.state, row.state_reason = S.PENDING.value, None
            elif row.state == S.CANCELLED.value:  # cancelled while we were submitting
                row.state, row.state_reason = S.CANCELLING.value, "cancel requested"
                row.end_time = None

    def _note(self, job_id: str, reason: str) -> None:
        with self.state.db.session() as session:
            row = session.get(BatchPredictionJobRow, job_id)
            if row is not None and row.state == S.QUEUED.value:
                row.state_reason = reason[:1000]

    # ---- PENDING / RUNNING → SUCCEEDED / FAILED ------------------------------------------------

    async def _ray_job(self, work: _Work) -> RayJobInfo | None:
        """Ray's view of the job; None after a transient error (retried next pass)."""
        try:
            async with work.target.client() as ray:
                if work.state is S.CANCELLING:
                    await ray.stop_job(work.submission_id)
                return await ray.get_job(work.submission_id)
        except NotFoundError:
            reason = "the cluster no longer knows this job (its head restarted?)"
            end = S.CANCELLED if work.state is S.CANCELLING else S.FAILED
            await asyncio.to_thread(self._store, work, None, end, reason)
        except RaydeckError as exc:
            log.debug("batch job %s: Ray not reachable: %s", work.job_id, exc)
        return None

    async def _follow(self, work: _Work) -> None:
        info = await self._ray_job(work)
        if info is None:
            return
        status = info.status
        if status == "SUCCEEDED":
            summary = await asyncio.to_thread(
                read_json_file, join_uri(work.output_uri, SUMMARY_FILE)
            )
            if summary is None:
                reason = f"the job ended without writing {SUMMARY_FILE}"
                await asyncio.to_thread(self._store, work, info, S.FAILED, reason)
            else:
                await asyncio.to_thread(self._store, work, info, S.SUCCEEDED, None, summary)
            return
        progress = await asyncio.to_thread(read_json_file, join_uri(work.output_uri, PROGRESS_FILE))
        if status == "FAILED":
            reason = failure_reason(info.message)
            await asyncio.to_thread(self._store, work, info, S.FAILED, reason, progress)
        elif status == "STOPPED":
            reason = "the Ray job was stopped outside Raydeck"
            await asyncio.to_thread(self._store, work, info, S.CANCELLED, reason, progress)
        elif status == "RUNNING":
            await asyncio.to_thread(self._store, work, info, S.RUNNING, None, progress)

    async def _cancel(self, work: _Work) -> None:
        info = await self._ray_job(work)  # asks Ray to stop it, then looks
        if info is None or info.status not in ("SUCCEEDED", "FAILED", "STOPPED"):
            return  # still stopping: look again next pass
        if info.status != "STOPPED":  # it ended on its own before the stop took effect
            await self._follow(replace(work, state=S.RUNNING))
            return
        progress = await asyncio.to_thread(read_json_file, join_uri(work.output_uri, PROGRESS_FILE))
        await asyncio.to_thread(self._store, work, info, S.CANCELLED, "cancelled", progress)

    def _store(
        self,
        work: _Work,
        info: RayJobInfo | None,
        new_state: BatchPredictionState,
        reason: str | None,
        results: dict[str, Any] | None = None,
    ) -> None:
        with self.state.db.session() as session:
            row = session.get(BatchPredictionJobRow, work.job_id)
            if row is None:
                return
            if row.state != work.state.value:
                # Only a cancel may overtake us; other changes are decided on the next pass.
                overtaken = row.state == S.CANCELLING.value and work.state in (S.PENDING, S.RUNNING)
                if not overtaken:
                    return
                if new_state not in TERMINAL_BATCH_STATES:  # refresh counts, stay CANCELLING
                    new_state, reason = S.CANCELLING, row.state_reason
            if info is not None:
                row.start_time = info.start_time or row.start_time
            if results is not None:
                _apply_results(row, results)
            row.state = new_state.value
            row.state_reason = reason[:1000] if reason else None
            if new_state in TERMINAL_BATCH_STATES:
                row.end_time = (info.end_time if info else None) or utcnow()
                job_tokens.revoke_job_token(session, row.cluster_id, row.submission_id)


def _apply_results(row: BatchPredictionJobRow, results: dict[str, Any]) -> None:
    for name in ("rows_total", "rows_succeeded", "rows_failed"):
        value = results.get(name)
        if isinstance(value, int):
            setattr(row, name, value)
    files = results.get("output_files")
    if isinstance(files, list):
        row.output_files = {"files": [str(f) for f in files]}
