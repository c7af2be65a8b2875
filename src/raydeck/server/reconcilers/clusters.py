"""Drives cluster rows: PROVISIONING/UPDATING → apply, STOPPING → delete, RUNNING → health."""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any

from sqlalchemy import delete, select

from raydeck.backends.base import ClusterEndpoints, ClusterObservation, ClusterSpec
from raydeck.core.errors import InvalidArgumentError
from raydeck.core.models import ClusterState, WorkerPoolSpec
from raydeck.core.models.limits import stored_data
from raydeck.db.models import ClusterRow
from raydeck.server.reconcilers.loop import ReconcileLoop
from raydeck.server.services.clusters import backend_spec, teardown_spec
from raydeck.server.state import ServerState

__all__ = ["ClusterReconciler"]

log = logging.getLogger(__name__)

HEALTH_CHECK_SECONDS = 5.0
# Ray's own start-up timeouts fire on a loaded host; a failed apply is tried this many times
# (same generation) before the cluster goes to ERROR.
APPLY_ATTEMPTS = 3


class ClusterReconciler:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.loop = ReconcileLoop("clusters", state.settings.reconcile_interval, self.tick)
        self._last_health: dict[str, float] = {}
        self._failures: dict[str, tuple[int, int]] = {}  # cluster id → (generation, failures)
        state.wake_callbacks.append(self.loop.wake)

    async def tick(self) -> None:
        rows = await asyncio.to_thread(self._load)
        now = time.monotonic()
        for cluster_id, cluster_state in rows:
            if cluster_state in (ClusterState.PROVISIONING, ClusterState.UPDATING):
                self.loop.spawn(cluster_id, partial(self._apply, cluster_id))
            elif cluster_state == ClusterState.STOPPING:
                self.loop.spawn(cluster_id, partial(self._delete, cluster_id))
            elif (
                cluster_state == ClusterState.RUNNING
                and now - self._last_health.get(cluster_id, 0.0) >= HEALTH_CHECK_SECONDS
            ):
                self._last_health[cluster_id] = now
                self.loop.spawn(cluster_id, partial(self._check_health, cluster_id))

    def _load(self) -> list[tuple[str, str]]:
        with self.state.db.session() as session:
            return [
                (r.id, r.state) for r in session.execute(select(ClusterRow.id, ClusterRow.state))
            ]

    def _snapshot(self, cluster_id: str) -> tuple[ClusterSpec, str, int, list[str]] | None:
        with self.state.db.session() as session:
            row = session.get(ClusterRow, cluster_id)
            if row is None:
                return None
            prefer_remove = list(row.spec.get("prefer_remove", []))
            return (
                backend_spec(row, self.state.settings),
                row.backend,
                row.generation,
                prefer_remove,
            )

    async def _apply(self, cluster_id: str) -> None:
        snapshot = await asyncio.to_thread(self._snapshot, cluster_id)
        if snapshot is None:
            return
        spec, backend_kind, generation, prefer_remove = snapshot
        backend = self.state.backend(backend_kind)
        try:
            endpoints = await asyncio.to_thread(backend.apply, spec, prefer_remove=prefer_remove)
            observation = await asyncio.to_thread(backend.observe, spec)
        except Exception as exc:  # retried, then the cluster's ERROR reason
            failed_gen, failures = self._failures.get(cluster_id, (generation, 0))
            failures = failures + 1 if failed_gen == generation else 1
            self._failures[cluster_id] = (generation, failures)
            final = (
                failures >= APPLY_ATTEMPTS
                or not getattr(exc, "retryable", True)
                or isinstance(exc, InvalidArgumentError)  # e.g. a row over a host's capacity
            )
            log.warning(
                "cluster %s: apply attempt %d failed%s: %s",
                spec.name,
                failures,
                "" if final else "; retrying",
                exc,
            )
            reason = _one_line(exc)
            if final:
                self._failures.pop(cluster_id, None)
                await asyncio.to_thread(self._record_error, cluster_id, generation, reason)
            else:
                note = f"attempt {failures} of {APPLY_ATTEMPTS} failed, retrying: {reason}"
                await asyncio.to_thread(self._record_retry, cluster_id, generation, note)
            return
        self._failures.pop(cluster_id, None)
        await asyncio.to_thread(
            self._record_running, cluster_id, generation, endpoints, observation
        )
        self.state.cluster_observed()

    def _record_running(
        self,
        cluster_id: str,
        generation: int,
        endpoints: ClusterEndpoints,
        observation: ClusterObservation,
    ) -> None:
        with self.state.db.session() as session:
            row = session.get(ClusterRow, cluster_id)
            if row is None:
                return
            row.dashboard_url = endpoints.dashboard_url
            row.ray_client_address = endpoints.ray_client_address
            row.gcs_address = endpoints.gcs_address
            row.spec = {
                **_with_observation(row.spec, observation),
                "serve_port": endpoints.serve_port,
            }
            # A newer desired state arrived while we worked: leave the state for the next pass.
            if row.generation == generation and row.state in (
                ClusterState.PROVISIONING,
                ClusterState.UPDATING,
            ):
                row.state = ClusterState.RUNNING.value
                row.state_reason = observation.shortfall  # running, short of what was asked
                row.spec = {k: v for k, v in row.spec.items() if k != "prefer_remove"}
        log.info("cluster %s is RUNNING at %s", cluster_id, endpoints.dashboard_url)

    def _record_error(self, cluster_id: str, generation: int, reason: str) -> None:
        with self.state.db.session() as session:
            row = session.get(ClusterRow, cluster_id)
            if row is not None and row.generation == generation and row.state != "STOPPING":
                row.state = ClusterState.ERROR.value
                row.state_reason = reason

    def _record_retry(self, cluster_id: str, generation: int, note: str) -> None:
        with self.state.db.session() as session:
            row = session.get(ClusterRow, cluster_id)
            if row is not None and row.generation == generation:
                row.state_reason = note  # the state stays PROVISIONING/UPDATING: next pass retries

    def _teardown(self, cluster_id: str) -> tuple[ClusterSpec, str] | None:
        with self.state.db.session() as session:
            row = session.get(ClusterRow, cluster_id)
            return None if row is None else (teardown_spec(row, self.state.settings), row.backend)

    async def _delete(self, cluster_id: str) -> None:
        found = await asyncio.to_thread(self._teardown, cluster_id)
        if found is None:
            return
        spec, backend_kind = found
        await asyncio.to_thread(self.state.backend(backend_kind).delete, spec)
        await asyncio.to_thread(self._forget, cluster_id)
        self.state.cluster_observed()
        self._last_health.pop(cluster_id, None)
        log.info("cluster %s deleted", spec.name)

    def _forget(self, cluster_id: str) -> None:
        with self.state.db.session() as session:
            session.execute(
                delete(ClusterRow).where(
                    ClusterRow.id == cluster_id, ClusterRow.state == ClusterState.STOPPING.value
                )
            )

    async def _check_health(self, cluster_id: str) -> None:
        snapshot = await asyncio.to_thread(self._snapshot, cluster_id)
        if snapshot is None:
            return
        spec, backend_kind, generation, _ = snapshot
        observation = await asyncio.to_thread(self.state.backend(backend_kind).observe, spec)
        await asyncio.to_thread(self._record_health, cluster_id, generation, observation)
        self.state.cluster_observed()

    def _record_health(
        self, cluster_id: str, generation: int, observation: ClusterObservation
    ) -> None:
        with self.state.db.session() as session:
            row = session.get(ClusterRow, cluster_id)
            if row is None or row.generation != generation or row.state != "RUNNING":
                return
            row.spec = _with_observation(row.spec, observation)
            if not observation.head_alive:
                row.state = ClusterState.ERROR.value
                row.state_reason = (
                    observation.head_problem
                    or "the head node is not running (its processes exited)"
                )
                return
            with stored_data():
                pools = [WorkerPoolSpec.model_validate(p) for p in row.spec["worker_pools"]]
            missing = sum(
                max(0, p.replica_count - observation.alive_replicas(p.name)) for p in pools
            )
            if missing:  # re-applied: replaced, or placed once a host has room
                row.state = ClusterState.UPDATING.value
                row.state_reason = (
                    observation.shortfall or f"replacing {missing} worker node(s) that stopped"
                )


def _with_observation(spec: dict[str, Any], observation: ClusterObservation) -> dict[str, Any]:
    nodes = [
        {"name": n.name, "pool": n.pool, "alive": n.alive, "address": n.address}
        for n in observation.nodes
    ]
    current: dict[str, int] = {}
    for node in observation.nodes:
        if node.alive and node.pool != "head":
            current[node.pool] = current.get(node.pool, 0) + 1
    return {**spec, "nodes": nodes, "current_replicas": current}


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:500]
