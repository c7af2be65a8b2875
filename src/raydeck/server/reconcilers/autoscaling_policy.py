"""Pure autoscaling decisions: pending demand → more replicas, idle nodes → fewer.

Like Ray's own autoscaler, pending bundles are first packed onto the free resources of
existing nodes; only what does not fit asks for new nodes, of the first autoscaling pool
whose node shape can hold the bundle, never beyond ``max_replica_count``. Nodes idle for
``idle_seconds`` are removed down to ``min_replica_count`` while nothing is pending.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from raydeck.core.models import WorkerPoolSpec

__all__ = ["NodeActivity", "PoolDecision", "node_shape", "plan_scaling"]

# Ray adds these to every node; a pool shape never "provides" them explicitly.
_IMPLICIT = ("node:", "object_store_memory", "accelerator_type:")


@dataclass(frozen=True)
class NodeActivity:
    name: str
    pool: str
    available: Mapping[str, float]
    idle_for: float  # seconds this node has had nothing running (0 when busy)


@dataclass(frozen=True)
class PoolDecision:
    pool: str
    replicas: int
    remove: tuple[str, ...] = ()
    reason: str = ""


def node_shape(pool: WorkerPoolSpec) -> dict[str, float]:
    shape = {"CPU": pool.num_cpus, **pool.resources}
    if pool.num_gpus:
        shape["GPU"] = pool.num_gpus
    if pool.memory:
        shape["memory"] = float(pool.memory)
    return shape


def _fits(bundle: Mapping[str, float], free: Mapping[str, float]) -> bool:
    return all(
        amount <= free.get(key, 0.0) + 1e-9
        for key, amount in bundle.items()
        if amount > 0 and not key.startswith(_IMPLICIT)
    )


def _take(bundle: Mapping[str, float], free: dict[str, float]) -> None:
    for key, amount in bundle.items():
        if key in free:
            free[key] -= amount


def _place(bundle: Mapping[str, float], nodes: list[dict[str, float]]) -> bool:
    for free in nodes:
        if _fits(bundle, free):
            _take(bundle, free)
            return True
    return False


def plan_scaling(
    pools: Sequence[WorkerPoolSpec],
    demands: Sequence[Mapping[str, float]],
    nodes: Sequence[NodeActivity],
    *,
    idle_seconds: float,
) -> list[PoolDecision]:
    """Decisions for autoscaling pools whose replica count should change."""
    existing = [dict(n.available) for n in nodes]
    new_nodes: dict[str, list[dict[str, float]]] = {p.name: [] for p in pools}
    unplaced = 0
    for bundle in sorted(demands, key=lambda b: -sum(b.values())):
        if _place(bundle, existing):
            continue
        placed = False
        for pool in pools:
            if not pool.autoscaling:
                continue
            if _place(bundle, new_nodes[pool.name]):
                placed = True
                break
            shape = node_shape(pool)
            if _fits(bundle, shape) and pool.replica_count + len(new_nodes[pool.name]) < (
                pool.max_replicas
            ):
                new_nodes[pool.name].append(shape)
                _take(bundle, new_nodes[pool.name][-1])
                placed = True
                break
        unplaced += not placed

    decisions = []
    for pool in pools:
        if not pool.autoscaling:
            continue
        grow = len(new_nodes[pool.name])
        if grow:
            decisions.append(
                PoolDecision(
                    pool.name,
                    pool.replica_count + grow,
                    reason=f"autoscaling {pool.name} {pool.replica_count}→"
                    f"{pool.replica_count + grow}: {len(demands)} pending resource request(s)",
                )
            )
            continue
        if demands:  # something still waits: keep every node
            continue
        idle = sorted(
            (n for n in nodes if n.pool == pool.name and n.idle_for >= idle_seconds),
            key=lambda n: -n.idle_for,
        )
        removable = idle[: max(0, pool.replica_count - pool.min_replicas)]
        if removable:
            target = pool.replica_count - len(removable)
            decisions.append(
                PoolDecision(
                    pool.name,
                    target,
                    remove=tuple(n.name for n in removable),
                    reason=f"autoscaling {pool.name} {pool.replica_count}→{target}: "
                    f"{len(removable)} node(s) idle ≥ {idle_seconds:g}s",
                )
            )
    return decisions
