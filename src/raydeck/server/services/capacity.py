"""What a cluster can hold: checks at creation, reasons while work waits, adaptive defaults.

Two views of a cluster:

- its *shapes*, from the stored spec: the head and one node per worker pool that may have
  replicas (counting autoscaling's max). Work one replica of which fits no shape can never
  run there, so it is refused at creation (400 naming the field), as is work whose replicas
  together need more than every node at its pool's max could give.
- its *load*, from Ray's autoscaler report (``RayDashboardClient.cluster_load``): what each
  live node has free now. Work that is waiting gets a ``state_reason`` saying what it waits
  for and the largest free slot ("waiting for 1 CPU; largest free slot 0.5 CPU on
  workers-0"), and defaults (batch prediction's CPUs per replica) fit what is free.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from raydeck.backends.ray_api import ClusterLoad, RayDashboardClient
from raydeck.core.errors import InvalidArgumentError, RaydeckError
from raydeck.core.models import HeadNodeSpec, WorkerPoolSpec

__all__ = [
    "NodeShape",
    "check_fits",
    "check_total_fits",
    "current_load",
    "default_cpus",
    "describe",
    "fetch_load",
    "node_names",
    "node_shapes",
    "waiting_reason",
]

log = logging.getLogger(__name__)

_EPSILON = 1e-9
# Resource names Ray reports that say nothing about capacity for work.
_IGNORED = ("node:", "object_store_memory", "accelerator_type:")


@dataclass(frozen=True)
class NodeShape:
    pool: str  # "head" or the worker pool's name
    resources: dict[str, float]  # Ray's names: CPU, GPU, memory, custom ones
    max_count: int  # how many such nodes the cluster can have (autoscaling's max)


def _resources(
    cpus: float, gpus: float, memory: int | None, extra: Mapping[str, float]
) -> dict[str, float]:
    shape = {"CPU": float(cpus), "GPU": float(gpus), **{k: float(v) for k, v in extra.items()}}
    if memory:
        shape["memory"] = float(memory)
    return shape


def node_shapes(spec: Mapping[str, Any]) -> list[NodeShape]:
    """Head first, then each worker pool, from a cluster row's ``spec``."""
    head = HeadNodeSpec.model_validate(spec["head"])
    shapes = [
        NodeShape("head", _resources(head.num_cpus, head.num_gpus, head.memory, head.resources), 1)
    ]
    for raw in spec.get("worker_pools", []):
        pool = WorkerPoolSpec.model_validate(raw)
        resources = _resources(pool.num_cpus, pool.num_gpus, pool.memory, pool.resources)
        shapes.append(NodeShape(pool.name, resources, pool.max_replicas))
    return shapes


def describe(demand: Mapping[str, float]) -> str:
    """``{"CPU": 1, "accel": 1}`` → "1 CPU, 1 accel" (memory in GiB)."""
    parts = []
    for name, amount in demand.items():
        if amount <= 0:
            continue
        if name == "memory":
            parts.append(f"{amount / 2**30:g} GiB memory")
        else:
            parts.append(f"{amount:g} {name}")
    return ", ".join(parts) or "nothing"


def _fits(demand: Mapping[str, float], free: Mapping[str, float]) -> bool:
    return all(free.get(k, 0.0) + _EPSILON >= v for k, v in demand.items() if v > 0)


def check_fits(
    shapes: Sequence[NodeShape],
    demand: Mapping[str, float],
    *,
    cluster: str,
    field: str,
    fields: Mapping[str, str] | None = None,
) -> None:
    """400 when one replica needing ``demand`` fits no node the cluster can ever have (head,
    or a node of a pool); it names ``fields[resource]`` of the resource no node has enough
    of, else ``field``."""
    if any(_fits(demand, s.resources) for s in shapes):
        return
    wanted = [k for k, v in demand.items() if v > 0]
    short = [k for k in wanted if not any(_fits({k: demand[k]}, s.resources) for s in shapes)]
    key = (short or wanted)[0]
    best = max(shapes, key=lambda s: s.resources.get(key, 0.0))
    have = best.resources.get(key, 0.0)
    raise InvalidArgumentError(
        f"needs {describe(demand)} per replica, but no node of cluster {cluster!r} can ever "
        f"have that: the most {key} on one node is {have:g} ({best.pool}); use a cluster with "
        "bigger nodes or ask for less",
        field=(fields or {}).get(key, field),
    )


def check_total_fits(
    shapes: Sequence[NodeShape], demands: Sequence[Mapping[str, float]], *, cluster: str, field: str
) -> None:
    """400 naming ``field`` when the replicas together need more of a resource than every node
    of the cluster at its pool's max could give."""
    totals: dict[str, float] = {}
    for demand in demands:
        for name, amount in demand.items():
            totals[name] = totals.get(name, 0.0) + amount
    for name, amount in totals.items():
        capacity = sum(s.resources.get(name, 0.0) * s.max_count for s in shapes)
        if amount > capacity + _EPSILON:
            raise InvalidArgumentError(
                f"its {len(demands)} replicas need {amount:g} {name} together, but cluster "
                f"{cluster!r} can have at most {capacity:g} {name}; use fewer replicas, "
                "smaller ones or a bigger cluster",
                field=field,
            )


def node_names(spec: Mapping[str, Any]) -> dict[str, str]:
    """Raylet address → the node's name (``head``, ``workers-0``) from a cluster row's spec."""
    return {str(n["address"]): str(n["name"]) for n in spec.get("nodes", []) if n.get("address")}


async def fetch_load(dashboard_url: str, ray_auth_token: str) -> ClusterLoad | None:
    """Ray's current view, or None when the cluster does not answer (or has not reported)."""
    try:
        async with RayDashboardClient(dashboard_url, ray_auth_token) as ray:
            return await ray.cluster_load()
    except RaydeckError as exc:
        log.debug("cluster load of %s not available: %s", dashboard_url, exc)
        return None


def current_load(dashboard_url: str | None, ray_auth_token: str) -> ClusterLoad | None:
    """``fetch_load`` for synchronous services (they run in worker threads, not the loop)."""
    if not dashboard_url:
        return None
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(fetch_load(dashboard_url, ray_auth_token))
    return None  # called on the event loop itself: no blocking there, so no live view


def _free(load: ClusterLoad, names: Mapping[str, str]) -> list[tuple[str, dict[str, float]]]:
    free = []
    for node in load.nodes:
        name = names.get(node.address) or ("head" if node.is_head else node.address)
        available = {k: v for k, v in node.available.items() if not k.startswith(_IGNORED)}
        free.append((name, available))
    return free


def waiting_reason(
    load: ClusterLoad,
    names: Mapping[str, str],
    demand: Mapping[str, float] | None = None,
) -> str | None:
    """Why work needing ``demand`` per task (None: whatever Ray has pending) cannot start now,
    or None when it fits somewhere (or nothing is pending)."""
    free = _free(load, names)
    if demand is None:
        stuck = [d for d in load.demands if not any(_fits(d, f) for _, f in free)]
        if not stuck:
            return None
        demand = max(stuck, key=lambda d: d.get("CPU", 0.0))
    wanted = {k: v for k, v in demand.items() if v > 0 and not k.startswith(_IGNORED)}
    if not wanted or any(_fits(wanted, f) for _, f in free):
        return None
    key = "CPU" if "CPU" in wanted else next(iter(wanted))
    if not free:
        return f"waiting for {describe(wanted)}; the cluster has no live node"
    name, slot = max(free, key=lambda item: item[1].get(key, 0.0))
    return (
        f"waiting for {describe(wanted)}; largest free slot {slot.get(key, 0.0):g} {key} on {name}"
    )


def default_cpus(shapes: Sequence[NodeShape], load: ClusterLoad | None) -> float:
    """CPUs per replica when the user gave none: 1, or less when no node has 1 CPU free (the
    largest free slot; with nothing free, the largest node's CPUs) so the work can start."""
    if load is not None:
        largest_free = max((node.available.get("CPU", 0.0) for node in load.nodes), default=0.0)
        if largest_free > _EPSILON:
            return min(1.0, round(largest_free, 4))
    largest = max((s.resources.get("CPU", 0.0) for s in shapes), default=0.0)
    return min(1.0, largest) if largest > _EPSILON else 1.0
