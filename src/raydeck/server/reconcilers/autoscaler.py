"""Feeds each RUNNING cluster's Ray load into the policy and stores its decisions."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import partial

from sqlalchemy import select

from raydeck.backends.ray_api import ClusterLoad, RayDashboardClient
from raydeck.core.errors import RaydeckError
from raydeck.core.models import ClusterState, WorkerPoolSpec
from raydeck.core.models.limits import stored_data
from raydeck.db.models import ClusterRow
from raydeck.server.reconcilers.autoscaling_policy import (
    NodeActivity,
    PoolDecision,
    plan_scaling,
)
from raydeck.server.reconcilers.loop import ReconcileLoop
from raydeck.server.services.clusters import ray_token
from raydeck.server.state import ServerState

__all__ = ["Autoscaler"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Target:
    cluster_id: str
    generation: int
    dashboard_url: str
    ray_auth_token: str
    pools: tuple[WorkerPoolSpec, ...]
    node_names: dict[str, tuple[str, str]]  # raylet address → (node name, pool)


class Autoscaler:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.loop = ReconcileLoop("autoscaler", state.settings.autoscale_interval, self.tick)
        # cluster id → node name → monotonic time it was first seen idle
        self._idle_since: dict[str, dict[str, float]] = {}

    async def tick(self) -> None:
        for target in await asyncio.to_thread(self._targets):
            self.loop.spawn(target.cluster_id, partial(self._scale, target))

    def _targets(self) -> list[_Target]:
        targets = []
        with self.state.db.session() as session:
            rows = session.scalars(
                select(ClusterRow).where(ClusterRow.state == ClusterState.RUNNING.value)
            )
            for row in rows:
                with stored_data():
                    pools = tuple(
                        WorkerPoolSpec.model_validate(p) for p in row.spec["worker_pools"]
                    )
                if not any(p.autoscaling for p in pools) or not row.dashboard_url:
                    continue
                names = {
                    str(n["address"]): (str(n["name"]), str(n["pool"]))
                    for n in row.spec.get("nodes", [])
                    if n.get("address")
                }
                targets.append(
                    _Target(
                        row.id,
                        row.generation,
                        row.dashboard_url,
                        ray_token(self.state.settings, row),
                        pools,
                        names,
                    )
                )
        return targets

    async def _scale(self, target: _Target) -> None:
        try:
            async with RayDashboardClient(target.dashboard_url, target.ray_auth_token) as ray:
                load = await ray.cluster_load()
        except RaydeckError as exc:
            log.debug("autoscaler: cluster %s not reachable: %s", target.cluster_id, exc)
            return
        decisions = plan_scaling(
            target.pools,
            load.demands,
            self._activity(target, load),
            idle_seconds=self.state.settings.autoscale_idle_seconds,
        )
        if decisions:
            await asyncio.to_thread(self._store, target, decisions)

    def _activity(self, target: _Target, load: ClusterLoad) -> list[NodeActivity]:
        now = time.monotonic()
        idle_since = self._idle_since.setdefault(target.cluster_id, {})
        activity = []
        for node in load.nodes:
            known = target.node_names.get(node.address)
            if known is None or node.is_head:
                continue
            name, pool = known
            if node.busy:
                idle_since.pop(name, None)
            else:
                idle_since.setdefault(name, now)
            idle_for = now - idle_since[name] if name in idle_since else 0.0
            activity.append(NodeActivity(name, pool, node.available, idle_for))
        return activity

    def _store(self, target: _Target, decisions: list[PoolDecision]) -> None:
        with self.state.db.session() as session:
            row = session.get(ClusterRow, target.cluster_id)
            if row is None or row.generation != target.generation or row.state != "RUNNING":
                return  # the user changed something meanwhile: decide again next tick
            by_pool = {d.pool: d for d in decisions}
            pools = []
            for pool in row.spec["worker_pools"]:
                decision = by_pool.get(pool["name"])
                pools.append({**pool, "replica_count": decision.replicas} if decision else pool)
            remove = [name for d in decisions for name in d.remove]
            row.spec = {**row.spec, "worker_pools": pools, "prefer_remove": remove}
            row.generation += 1
            row.state = ClusterState.UPDATING.value
            row.state_reason = "; ".join(d.reason for d in decisions)
        for decision in decisions:
            log.info("cluster %s: %s", target.cluster_id, decision.reason)
        self._idle_since.pop(target.cluster_id, None)
        self.state.wake_reconcilers()
