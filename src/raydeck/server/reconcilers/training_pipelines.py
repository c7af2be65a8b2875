"""Follows each live pipeline's training job; on success uploads its model to the registry."""

from __future__ import annotations

import asyncio
import logging
import os
from functools import partial

from sqlalchemy import select

from raydeck.core.errors import RaydeckError
from raydeck.core.models.training import TrainingState
from raydeck.db.models import TrainingPipelineRow, utcnow
from raydeck.server.reconcilers.loop import ReconcileLoop
from raydeck.server.services import training_pipelines as service
from raydeck.server.services import training_runs as runs
from raydeck.server.services.artifacts import ArtifactStore
from raydeck.server.services.model_uploads import upload_model
from raydeck.server.state import ServerState

__all__ = ["PipelineReconciler"]

log = logging.getLogger(__name__)
S = TrainingState


class PipelineReconciler:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.loop = ReconcileLoop("pipelines", state.settings.reconcile_interval, self.tick)
        state.wake_callbacks.append(self.loop.wake)

    async def tick(self) -> None:
        uploads = await asyncio.to_thread(self._follow)
        for pipeline_id, model_dir in uploads:
            self.loop.spawn(pipeline_id, partial(self._upload, pipeline_id, model_dir))

    def _follow(self) -> list[tuple[str, str]]:
        """Mirror the child's state; list pipelines whose model is ready to upload."""
        ready: list[tuple[str, str]] = []
        with self.state.db.session() as session:
            rows = session.scalars(
                select(TrainingPipelineRow).where(TrainingPipelineRow.state.in_(runs.LIVE_STATES))
            )
            for row in rows:
                child = service.child_of(session, row)
                if child is None:
                    self._end(row, S.FAILED, "its training job was deleted")
                    continue
                if row.state == S.CANCELLING.value and child.state in runs.LIVE_STATES:
                    runs.cancel_run(session, child)
                child_state = S(child.state)
                if child_state is S.SUCCEEDED:
                    try:
                        ready.append((row.id, service.model_dir_of(session, child)))
                    except RaydeckError as exc:
                        self._end(row, S.FAILED, exc.message)
                elif child_state in (S.FAILED, S.CANCELLED):
                    what = "custom job" if child.kind == "custom" else "tuning job"
                    self._end(row, child_state, f"{what} {child.id}: {child.state_reason}")
                elif row.state != S.CANCELLING.value:
                    new = S.RUNNING if child_state is S.RUNNING else S.PENDING
                    if child_state is S.QUEUED:
                        new = S.QUEUED
                    if row.state != new.value:
                        row.state = new.value
                        if new is S.RUNNING:
                            row.start_time = row.start_time or utcnow()
        return ready

    @staticmethod
    def _end(row: TrainingPipelineRow, end: TrainingState, reason: str | None) -> None:
        row.state, row.end_time = end.value, utcnow()
        row.state_reason = reason[:2000] if reason else None

    async def _upload(self, pipeline_id: str, model_dir: str) -> None:
        with self.state.db.session() as session:
            row = service.get_pipeline_row(session, pipeline_id, None)
            if row.state not in runs.LIVE_STATES:
                return
            request = service.upload_request(row, model_dir)
            project = row.project
        outcome: tuple[TrainingState, str | None, str | None, str | None]
        if not os.path.isdir(model_dir) or not os.listdir(model_dir):
            reason = f"the training job left no model in AIP_MODEL_DIR ({model_dir})"
            outcome = (S.FAILED, reason, None, None)
        else:
            # The job's own AIP_MODEL_DIR: a server-chosen directory, or a base_output_dir
            # checked against the project's areas when the job was created.
            store = ArtifactStore.from_settings(self.state.settings, user_project=None)
            try:
                version = await asyncio.to_thread(
                    upload_model, self.state.db, store, request, project=project
                )
                outcome = (S.SUCCEEDED, None, version.id, version.ref)
            except RaydeckError as exc:
                outcome = (S.FAILED, f"model upload failed: {exc.message}", None, None)
        with self.state.db.session() as session:
            row = service.get_pipeline_row(session, pipeline_id, None)
            if row.state in runs.LIVE_STATES:
                self._end(row, outcome[0], outcome[1])
                row.model_version_id, row.model_version = outcome[2], outcome[3]
