"""The contract every cluster backend fulfils.

A backend makes reality match a desired ``ClusterSpec`` (``apply``), reports what exists
(``observe``) and tears a cluster down (``delete``). Every call is idempotent and must
re-attach to processes/resources started by an earlier server process, so the reconcilers
can simply call it again after a restart (kill -9 included). Backends translate Ray and
OS errors into ``BackendError`` (an ``UnavailableError``) so nothing untranslated leaks out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raydeck.core.errors import UnavailableError

__all__ = [
    "BackendError",
    "ClusterBackend",
    "ClusterEndpoints",
    "ClusterObservation",
    "ClusterSpec",
    "LogFileSource",
    "MetricsSource",
    "MetricsTarget",
    "NodeLogFile",
    "NodeObservation",
    "PoolSpec",
]


class BackendError(UnavailableError):
    """A backend could not do what was asked (process failed to start, ports taken...).

    Most such failures are transient on a loaded host (Ray's fixed start-up timeouts), so the
    reconciler retries them; ``retryable=False`` marks one that would fail the same way again.
    """

    def __init__(self, message: str, *, retryable: bool = True, **details: Any) -> None:
        super().__init__(message, **details)
        self.retryable = retryable


@dataclass(frozen=True)
class PoolSpec:
    """Resources of one node kind. ``replicas`` is the count wanted right now."""

    name: str
    replicas: int
    num_cpus: float = 1
    num_gpus: float = 0
    memory: int | None = None  # bytes
    resources: dict[str, float] = field(default_factory=dict)
    # Where replicas may go, for backends with several machines (others ignore these).
    placement: str = "pack"  # "pack" | "spread"
    hosts: tuple[str, ...] = ()
    host_labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterSpec:
    cluster_id: str  # stable, unique, safe in paths and env vars
    name: str
    head: PoolSpec  # replicas is ignored: always exactly one head
    worker_pools: tuple[PoolSpec, ...]
    ray_auth_token: str  # Ray's own token auth (RAY_AUTH_MODE=token) for this cluster
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterEndpoints:
    gcs_address: str  # host:port
    dashboard_url: str  # http://host:port (Ray Jobs REST API lives here)
    ray_client_address: str  # host:port of the Ray Client server (ray://...)
    serve_port: int | None = None  # where Ray Serve's HTTP proxy listens on the head


@dataclass(frozen=True)
class NodeObservation:
    name: str  # "head" or "<pool>-<n>"
    pool: str  # "head" for the head node
    alive: bool
    address: str | None = None


@dataclass(frozen=True)
class ClusterObservation:
    head_alive: bool
    endpoints: ClusterEndpoints | None
    nodes: tuple[NodeObservation, ...] = ()
    head_problem: str | None = None  # why the head is not alive, when the backend knows
    shortfall: str | None = None  # why pools have fewer nodes than asked (e.g. no room)

    def alive_replicas(self, pool: str) -> int:
        return sum(1 for n in self.nodes if n.pool == pool and n.alive)


@dataclass(frozen=True)
class NodeLogFile:
    node: str  # "head" or "<pool>-<n>"
    path: Path
    relative: str  # path under the node's log dir, e.g. "raylet.out" or "serve/replica_x.log"


class LogFileSource(ABC):
    """Capability: the backend can list the Ray log files of a cluster's nodes on this host."""

    @abstractmethod
    def log_files(self, spec: ClusterSpec) -> list[NodeLogFile]:
        """Log files that exist now (may be empty); never starts or stops anything."""


@dataclass(frozen=True)
class MetricsTarget:
    node: str
    pool: str
    address: str  # host:port serving Ray's Prometheus metrics of that node at /metrics


class MetricsSource(ABC):
    """Capability: the backend knows where each node exports Ray's own Prometheus metrics."""

    @abstractmethod
    def metrics_targets(self, spec: ClusterSpec) -> list[MetricsTarget]:
        """Targets of the nodes that exist now; never starts or stops anything."""


class ClusterBackend(ABC):
    """Drives Ray clusters for one kind of infrastructure."""

    kind: str

    @abstractmethod
    def apply(self, spec: ClusterSpec, *, prefer_remove: Sequence[str] = ()) -> ClusterEndpoints:
        """Start what is missing and stop what is surplus so that the cluster has one head and
        ``pool.replicas`` live workers per pool. When a pool shrinks, nodes named in
        ``prefer_remove`` go first. Blocking; returns once the nodes are up."""

    @abstractmethod
    def observe(self, spec: ClusterSpec) -> ClusterObservation:
        """What exists for this cluster right now. Cheap; never starts or stops anything."""

    @abstractmethod
    def delete(self, spec: ClusterSpec) -> None:
        """Stop every process/resource of this cluster and only this cluster; idempotent."""

    def check_capacity(self, spec: ClusterSpec) -> None:
        """Refuse a spec no host of this backend could ever hold, with an
        ``InvalidArgumentError`` naming the field (``head.num_cpus``,
        ``worker_pools[1].memory``, ``worker_pools``). ``pool.replicas`` is the most the pool
        may grow to. Cheap and pure: called before a cluster is stored or resized and
        before every apply. The API's caps (``core/models/limits.py``) already hold; a
        backend with host limits of its own adds them here."""
        del spec  # nothing beyond the API's caps by default
