"""Which nodes a cluster should gain or lose, and what they are called. Pure functions."""

from __future__ import annotations

from pathlib import Path

from raydeck.backends.base import ClusterSpec, PoolSpec
from raydeck.backends.local.state import ClusterState, NodeRecord

__all__ = [
    "HEAD",
    "MAX_TEMP_DIR_LEN",
    "choose_surplus",
    "missing_workers",
    "node_index",
    "node_order",
    "node_temp_dir",
]

HEAD = "head"
# Ray puts Unix sockets at <temp>/session_<date>_<pid>/sockets/dash_MetricsHead (up to 68
# chars past <temp>), and sun_path holds 107.
MAX_TEMP_DIR_LEN = 36


def node_index(record: NodeRecord) -> int:
    suffix = record.name[len(record.pool) + 1 :]
    return int(suffix) if suffix.isdigit() else -1


def node_order(record: NodeRecord) -> tuple[bool, str, int]:
    return (record.pool != HEAD, record.pool, node_index(record))


def choose_surplus(
    state: ClusterState, spec: ClusterSpec, prefer_remove: set[str]
) -> list[NodeRecord]:
    """Workers beyond their pool's replicas (all of a pool no longer in the spec): nodes
    named in ``prefer_remove`` first, then the highest index."""
    wanted = {p.name: max(0, p.replicas) for p in spec.worker_pools}
    surplus: list[NodeRecord] = []
    for pool in {r.pool for r in state.workers()}:
        nodes = [r for r in state.workers() if r.pool == pool]
        extra = len(nodes) - wanted.get(pool, 0)
        if extra > 0:
            nodes.sort(key=lambda r: (r.name not in prefer_remove, -node_index(r)))
            surplus += nodes[:extra]
    return surplus


def missing_workers(
    state: ClusterState, spec: ClusterSpec, surplus: list[NodeRecord]
) -> list[tuple[str, PoolSpec]]:
    """Names (``<pool>-<n>``, lowest free n first) and pools of the workers to start."""
    leaving = {r.name for r in surplus}
    missing: list[tuple[str, PoolSpec]] = []
    for pool in spec.worker_pools:
        kept = [r for r in state.workers() if r.pool == pool.name and r.name not in leaving]
        used = {node_index(r) for r in kept}
        index = 0
        for _ in range(max(0, pool.replicas) - len(kept)):
            while index in used:
                index += 1
            used.add(index)
            missing.append((f"{pool.name}-{index}", pool))
    return missing


def node_temp_dir(base: Path, name: str, port_base: int) -> Path:
    """``<base>/<node name>``, or ``<base>/n<port base>`` when that is too long or odd."""
    by_name = base / name
    if len(str(by_name)) <= MAX_TEMP_DIR_LEN and name.replace("-", "").isalnum():
        return by_name
    return base / f"n{port_base}"
