"""Drives CustomJobs and tuning jobs: one Ray job per attempt, followed to an end state.

QUEUED: waiting for the cluster (or, after submission, for capacity: the launcher's status
says so) · PENDING: submitted, driver starting · RUNNING: replicas started · then SUCCEEDED /
FAILED (with the reason) / CANCELLED. A failed CustomJob attempt is resubmitted while
``scheduling.max_restarts`` allows (the code resumes from AIP_CHECKPOINT_DIR); a tuning job's
study driver is resubmitted up to DRIVER_RESTARTS times (its trials are stored, the study
goes on). Submission ids are chosen per attempt, so a restart of the server re-adopts the
running Ray job instead of submitting twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import sys
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from sqlalchemy import select

from raydeck.backends.ray_api import RayJobInfo
from raydeck.core.errors import AlreadyExistsError, NotFoundError, RaydeckError, UnavailableError
from raydeck.core.models import JobSubmit
from raydeck.core.models.limits import stored_data
from raydeck.core.models.training import CustomJobSpec, TrainingState
from raydeck.db.models import ClusterRow, TrainingJobRow, utcnow
from raydeck.runtime.training.spec import RunSpec
from raydeck.server.reconcilers.loop import ReconcileLoop
from raydeck.server.services import job_tokens, tuning_jobs
from raydeck.server.services import jobs as job_service
from raydeck.server.services import training_runs as runs
from raydeck.server.services.clusters import ACTIVE_STATES, ray_token
from raydeck.server.services.jobs import ClusterTarget
from raydeck.server.state import ServerState

__all__ = ["DRIVER_RESTARTS", "TrainingReconciler", "read_status"]

log = logging.getLogger(__name__)
S = TrainingState
DRIVER_RESTARTS = 3
ERROR_MARKER = "RAYDECK_ERROR:"


@dataclass(frozen=True)
class _Work:
    job_id: str
    kind: str
    state: TrainingState
    attempt: int
    submission_id: str | None
    target: ClusterTarget
    output_dir: str
    spec: dict[str, Any]
    timed_out: bool


def read_status(output_dir: str) -> dict[str, Any]:
    try:
        with open(runs.status_path(output_dir), encoding="utf-8") as source:
            data = json.load(source)
            return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _submission_id(job_id: str, kind: str, attempt: int) -> str:
    return f"raydeck-{kind}-{job_id.split('-', 1)[1]}-a{attempt}"


def _job_spec(kind: str, spec: dict[str, Any]) -> CustomJobSpec:
    with stored_data():
        return CustomJobSpec.model_validate(
            spec["job_spec" if kind == "custom" else "trial_job_spec"]
        )


class TrainingReconciler:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.loop = ReconcileLoop("training", state.settings.reconcile_interval, self.tick)
        state.wake_callbacks.append(self.loop.wake)

    async def tick(self) -> None:
        for work in await asyncio.to_thread(self._plan):
            self.loop.spawn(work.job_id, partial(self._reconcile, work))

    # ---- what to do ----------------------------------------------------------------------

    def _plan(self) -> list[_Work]:
        work: list[_Work] = []
        with self.state.db.session() as session:
            rows = session.scalars(
                select(TrainingJobRow).where(TrainingJobRow.state.in_(runs.LIVE_STATES))
            )
            for row in rows:
                item = self._plan_row(session, row)
                if item is not None:
                    work.append(item)
        return work

    def _plan_row(self, session: Any, row: TrainingJobRow) -> _Work | None:
        cluster = session.get(ClusterRow, row.cluster_id) if row.cluster_id else None
        cancelling = row.state == S.CANCELLING.value
        if cluster is None or cluster.state in ("STOPPING", "DELETED", "ERROR"):
            what = "deleted" if cluster is None else cluster.state
            detail = f": {cluster.state_reason}" if cluster and cluster.state_reason else ""
            end = S.CANCELLED if cancelling else S.FAILED
            runs.finish(session, row, end, f"cluster {row.cluster_name!r} is {what}{detail}")
            return None
        if cancelling and row.submission_id is None:
            runs.finish(session, row, S.CANCELLED, "cancelled before it was submitted")
            return None
        if cluster.state not in ACTIVE_STATES or not cluster.dashboard_url:
            row.state_reason = f"waiting for cluster {cluster.name!r} ({cluster.state})"
            return None
        target = ClusterTarget(  # its Ray job is recorded in the cluster's (= run's) project
            cluster.id,
            cluster.name,
            cluster.dashboard_url,
            ray_token(self.state.settings, cluster),
            cluster.project,
        )
        timeout = _job_spec(row.kind, row.spec).scheduling.timeout_seconds
        timed_out = bool(
            row.kind == "custom"
            and timeout
            and row.start_time is not None
            and utcnow() - row.start_time > timedelta(seconds=timeout)
        )
        return _Work(
            row.id,
            row.kind,
            S(row.state),
            row.attempt,
            row.submission_id,
            target,
            row.spec["base_output_dir"],
            row.spec,
            timed_out,
        )

    async def _reconcile(self, work: _Work) -> None:
        if work.submission_id is None:
            await self._submit(work)
        else:
            await self._follow(work)

    # ---- QUEUED → PENDING ----------------------------------------------------------------

    def _files(self, work: _Work, submission_id: str) -> str:
        """Write what the driver reads; return its entrypoint."""
        meta = os.path.join(work.output_dir, ".raydeck")
        os.makedirs(meta, exist_ok=True)
        spec_path = os.path.join(meta, f"attempt-{work.attempt}.json")
        if work.kind == "custom":
            job_spec = _job_spec(work.kind, work.spec)
            payload = RunSpec(
                job_id=work.job_id,
                run_id=work.job_id,
                attempt=work.attempt,
                output_dir=work.output_dir,
                pools=job_spec.worker_pool_specs,
                report_path=f"/api/v1/customJobs/{work.job_id}/metrics:report",
            ).model_dump_json()
            module = "raydeck.runtime.training.launcher"
        else:
            payload = json.dumps(
                {
                    "job_id": work.job_id,
                    "attempt": work.attempt,
                    "parallel_trial_count": work.spec["parallel_trial_count"],
                    "trial_job_spec": work.spec["trial_job_spec"],
                }
            )
            module = "raydeck.runtime.training.study_driver"
        with open(spec_path, "w", encoding="utf-8") as out:
            out.write(payload)
        status = runs.status_path(work.output_dir)
        if os.path.exists(status):
            os.remove(status)  # a new attempt starts from a clean status
        # The cluster runs from the server's own environment, so its interpreter has raydeck.
        command = [sys.executable, "-m", module, "--spec", spec_path, "--status", status]
        return shlex.join(command)

    def _entry_resources(self, work: _Work) -> dict[str, Any]:
        if work.kind != "custom":
            return {"entrypoint_num_cpus": 0}  # trials reserve their own resources
        chief = _job_spec(work.kind, work.spec).worker_pool_specs[0].machine_spec
        return {
            "entrypoint_num_cpus": chief.cpus,
            "entrypoint_num_gpus": chief.gpus or None,
            "entrypoint_memory": chief.memory,
            "entrypoint_resources": dict(chief.resources) or None,
        }

    async def _submit(self, work: _Work) -> None:
        submission_id = _submission_id(work.job_id, work.kind, work.attempt)
        metadata = {"raydeck_training_job": work.job_id, "attempt": str(work.attempt)}
        try:
            async with work.target.client() as ray:
                try:
                    await ray.get_job(submission_id)
                    adopted = True  # submitted before a server restart: the same Ray job
                except NotFoundError:
                    adopted = False
                if not adopted:
                    entrypoint = await asyncio.to_thread(self._files, work, submission_id)
                    secret = await asyncio.to_thread(
                        self._token, work.target, submission_id, work.spec.get("submitted_by")
                    )
                    runtime_env = job_tokens.job_runtime_env(
                        None, self.state.settings, secret, work.target.project
                    )
                    with contextlib.suppress(AlreadyExistsError):
                        await ray.submit_job(
                            entrypoint,
                            submission_id=submission_id,
                            runtime_env=runtime_env,
                            metadata=metadata,
                            **self._entry_resources(work),
                        )
        except UnavailableError as exc:
            await asyncio.to_thread(self._note, work, f"waiting to submit: {exc.message}")
            return
        except (RaydeckError, OSError) as exc:
            reason = f"the cluster refused the Ray job: {exc}"
            await asyncio.to_thread(self._end, work, S.FAILED, reason)
            return
        request = JobSubmit(entrypoint=f"raydeck {work.kind} job {work.job_id}", metadata=metadata)
        await asyncio.to_thread(self._submitted, work, submission_id, request)

    def _token(self, target: ClusterTarget, submission_id: str, submitter: str | None) -> str:
        with self.state.db.session() as session:
            return job_tokens.issue_job_token(session, target.cluster_id, submission_id, submitter)

    def _submitted(self, work: _Work, submission_id: str, request: JobSubmit) -> None:
        try:
            job_id = job_service.record_submission(
                self.state, work.target, submission_id, request
            ).id
        except Exception:  # recorded before a restart
            job_id = None
        with self.state.db.session() as session:
            row = session.get(TrainingJobRow, work.job_id)
            if row is None:
                return
            row.submission_id, row.job_id = submission_id, job_id or row.job_id
            if row.state == S.QUEUED.value:
                row.state, row.state_reason = S.PENDING.value, None

    def _note(self, work: _Work, reason: str) -> None:
        with self.state.db.session() as session:
            row = session.get(TrainingJobRow, work.job_id)
            if row is not None and row.state in runs.LIVE_STATES:
                row.state_reason = reason[:1000]

    # ---- PENDING / RUNNING → the end -----------------------------------------------------

    async def _follow(self, work: _Work) -> None:
        assert work.submission_id is not None
        try:
            async with work.target.client() as ray:
                if work.state is S.CANCELLING or work.timed_out:
                    await ray.stop_job(work.submission_id)
                info = await ray.get_job(work.submission_id)
        except NotFoundError:
            reason = "the cluster no longer knows this job (its head restarted?)"
            end = S.CANCELLED if work.state is S.CANCELLING else S.FAILED
            await asyncio.to_thread(self._end, work, end, reason)
            return
        except RaydeckError as exc:
            log.debug("training job %s: Ray not reachable: %s", work.job_id, exc)
            return
        status = await asyncio.to_thread(read_status, work.output_dir)
        if status.get("attempt") != work.attempt:
            status = {}
        await asyncio.to_thread(self._apply, work, info, status)

    def _apply(self, work: _Work, info: RayJobInfo, status: dict[str, Any]) -> None:
        with self.state.db.session() as session:
            row = session.get(TrainingJobRow, work.job_id)
            if row is None or row.state not in runs.LIVE_STATES:
                return
            if row.submission_id != work.submission_id:
                return
            cancelling = row.state == S.CANCELLING.value
            ray_state = info.status
            if ray_state in ("PENDING", "RUNNING"):
                if cancelling:
                    return
                if work.timed_out:
                    return  # the stop is on its way; the end is recorded when Ray says so
                phase = status.get("phase")
                if ray_state == "RUNNING" and phase == "running":
                    if row.state != S.RUNNING.value:
                        row.state, row.state_reason = S.RUNNING.value, None
                        row.start_time = row.start_time or utcnow()
                elif ray_state == "RUNNING" and phase == "waiting":
                    row.state, row.state_reason = S.QUEUED.value, status.get("message")
                elif ray_state == "PENDING":
                    row.state_reason = job_service.summarize_message(info.message)
                return
            if ray_state == "SUCCEEDED":
                end, reason = S.SUCCEEDED, None
                if row.kind == "tuning":
                    end, reason = tuning_jobs.finalize(session, row)
                runs.finish(session, row, end, reason)
                return
            if ray_state == "STOPPED":
                if work.timed_out:
                    timeout = _job_spec(row.kind, row.spec).scheduling.timeout_seconds
                    runs.finish(session, row, S.FAILED, f"timed out after {timeout:g} s")
                else:
                    why = "cancelled" if cancelling else "the Ray job was stopped outside Raydeck"
                    runs.finish(session, row, S.CANCELLED, why)
                return
            reason = _failure(info, status)
            if cancelling:
                runs.finish(session, row, S.CANCELLED, f"cancelled (the job had failed: {reason})")
                return
            allowed = (
                _job_spec(row.kind, row.spec).scheduling.max_restarts
                if row.kind == "custom"
                else DRIVER_RESTARTS
            )
            if row.attempt < allowed:
                assert row.cluster_id is not None and row.submission_id is not None
                job_tokens.revoke_job_token(session, row.cluster_id, row.submission_id)
                row.attempt += 1
                row.submission_id, row.job_id = None, None
                row.state = S.QUEUED.value
                row.state_reason = (
                    f"restarting (restart {row.attempt} of {allowed}) after: {reason}"
                )[:2000]
                return
            runs.finish(session, row, S.FAILED, reason)

    def _end(self, work: _Work, end: TrainingState, reason: str) -> None:
        with self.state.db.session() as session:
            row = session.get(TrainingJobRow, work.job_id)
            if row is not None and row.state in runs.LIVE_STATES:
                if end is S.FAILED and row.kind == "tuning":
                    tuning_jobs.finalize(session, row)
                runs.finish(session, row, end, reason)


def _failure(info: RayJobInfo, status: dict[str, Any]) -> str:
    if status.get("phase") == "failed" and status.get("message"):
        return str(status["message"])
    message = info.message or ""
    if ERROR_MARKER in message:
        return message.rsplit(ERROR_MARKER, 1)[1].strip().splitlines()[0]
    return job_service.summarize_message(message) or "the Ray job failed"
