"""Keeps job rows in step with Ray; jobs whose cluster is gone end with a reason."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from functools import partial

from sqlalchemy import select

from raydeck.backends.ray_api import RayJobInfo
from raydeck.core.errors import RaydeckError
from raydeck.core.models import JobState
from raydeck.core.models.jobs import TERMINAL_JOB_STATES
from raydeck.db.models import ClusterRow, JobRow, utcnow
from raydeck.server.reconcilers.loop import ReconcileLoop
from raydeck.server.services.clusters import ACTIVE_STATES, ray_token
from raydeck.server.services.job_tokens import revoke_job_token
from raydeck.server.services.jobs import ClusterTarget, apply_ray_info
from raydeck.server.state import ServerState

__all__ = ["JobReconciler"]

log = logging.getLogger(__name__)

_LIVE = [s.value for s in JobState if s not in TERMINAL_JOB_STATES]
_ENDED = frozenset(s.value for s in TERMINAL_JOB_STATES)


class JobReconciler:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.loop = ReconcileLoop("jobs", state.settings.reconcile_interval, self.tick)

    async def tick(self) -> None:
        targets = await asyncio.to_thread(self._live_jobs_by_cluster)
        for target, submission_ids in targets:
            self.loop.spawn(target.cluster_id, partial(self._sync, target, submission_ids))

    def _live_jobs_by_cluster(self) -> list[tuple[ClusterTarget, list[str]]]:
        by_cluster: dict[str, list[JobRow]] = defaultdict(list)
        result: list[tuple[ClusterTarget, list[str]]] = []
        with self.state.db.session() as session:
            for row in session.scalars(select(JobRow).where(JobRow.state.in_(_LIVE))):
                by_cluster[row.cluster_id].append(row)
            for cluster_id, rows in by_cluster.items():
                cluster = session.get(ClusterRow, cluster_id)
                if cluster is None or cluster.state not in ACTIVE_STATES:
                    reason = "deleted" if cluster is None else cluster.state
                    for row in rows:  # the job cannot outlive its cluster
                        row.state = JobState.FAILED.value
                        row.message = f"cluster {row.cluster_name!r} is {reason}"
                        row.end_time = utcnow()
                        revoke_job_token(session, row.cluster_id, row.submission_id)
                    continue
                if cluster.dashboard_url:
                    target = ClusterTarget(
                        cluster.id,
                        cluster.name,
                        cluster.dashboard_url,
                        ray_token(self.state.settings, cluster),
                    )
                    result.append((target, [r.submission_id for r in rows]))
        return result

    async def _sync(self, target: ClusterTarget, submission_ids: list[str]) -> None:
        try:
            async with target.client() as ray:
                infos = {info.submission_id: info for info in await ray.list_jobs()}
        except RaydeckError as exc:
            log.debug("jobs on %s not reachable: %s", target.name, exc)
            return
        await asyncio.to_thread(self._store, target.cluster_id, submission_ids, infos)

    def _store(self, cluster_id: str, ids: list[str], infos: dict[str, RayJobInfo]) -> None:
        with self.state.db.session() as session:
            rows = session.scalars(
                select(JobRow).where(JobRow.cluster_id == cluster_id, JobRow.submission_id.in_(ids))
            )
            for row in rows:
                info = infos.get(row.submission_id)
                if info is not None:
                    apply_ray_info(row, info)
                else:  # e.g. the head restarted and Ray forgot it
                    row.state = JobState.FAILED.value
                    row.message = "the cluster no longer knows this job"
                    row.end_time = utcnow()
                if row.state in _ENDED:  # its job-scoped token dies with it
                    revoke_job_token(session, row.cluster_id, row.submission_id)
