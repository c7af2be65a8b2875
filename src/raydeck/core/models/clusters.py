"""Cluster: a Ray head plus named worker pools."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PositiveInt, model_validator

from raydeck.core.models.common import LenientModel, Name, StrictModel, parse_memory
from raydeck.core.models.limits import Cpus, Gpus, LabelMap, ResourceMap, capped

__all__ = [
    "Cluster",
    "ClusterCreate",
    "ClusterState",
    "ClusterUpdate",
    "HeadNodeSpec",
    "NodeStatus",
    "PoolReplicaUpdate",
    "WorkerPoolSpec",
    "WorkerPoolStatus",
]


def _memory(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | str):
        return parse_memory(value)
    return value


MemoryBytes = Annotated[PositiveInt | None, BeforeValidator(_memory), capped("max_node_memory")]
Replicas = Annotated[PositiveInt, capped("max_pool_replicas")]


class ClusterState(StrEnum):
    PROVISIONING = "PROVISIONING"
    RUNNING = "RUNNING"
    UPDATING = "UPDATING"
    STOPPING = "STOPPING"
    ERROR = "ERROR"
    DELETED = "DELETED"


HostNames = list[Name]
HostLabels = dict[Annotated[str, Field(max_length=63)], Annotated[str, Field(max_length=63)]]


class HeadNodeSpec(StrictModel):
    machine_type: str | None = None
    num_cpus: Cpus = 1
    num_gpus: Gpus = 0
    memory: MemoryBytes = None
    resources: ResourceMap = Field(default_factory=dict)
    disk_size_gb: PositiveInt | None = None
    # `hosts` backend only: pin to these hosts / hosts carrying these labels.
    hosts: HostNames = Field(default_factory=list, max_length=64)
    host_labels: HostLabels = Field(default_factory=dict, max_length=16)


class WorkerPoolSpec(StrictModel):
    name: Name
    machine_type: str | None = None
    num_cpus: Annotated[Cpus, Field(gt=0)] = 1
    num_gpus: Gpus = 0
    memory: MemoryBytes = None
    resources: ResourceMap = Field(default_factory=dict)
    replica_count: Replicas = 1
    min_replica_count: Replicas | None = None
    max_replica_count: Replicas | None = None
    disk_size_gb: PositiveInt | None = None
    # `hosts` backend only: "pack" fills hosts one by one, "spread" puts replicas on
    # different hosts; `hosts` / `host_labels` restrict where replicas may go.
    placement: Literal["pack", "spread"] = "pack"
    hosts: HostNames = Field(default_factory=list, max_length=64)
    host_labels: HostLabels = Field(default_factory=dict, max_length=16)

    @model_validator(mode="after")
    def _bounds(self) -> WorkerPoolSpec:
        _check_bounds(self.replica_count, self.min_replica_count, self.max_replica_count)
        return self

    @property
    def autoscaling(self) -> bool:
        return self.min_replica_count is not None or self.max_replica_count is not None

    @property
    def min_replicas(self) -> int:
        return self.min_replica_count if self.min_replica_count is not None else self.replica_count

    @property
    def max_replicas(self) -> int:
        return self.max_replica_count if self.max_replica_count is not None else self.replica_count


def _check_bounds(replicas: int | None, low: int | None, high: int | None) -> None:
    if low is not None and high is not None and low > high:
        raise ValueError("min_replica_count must be <= max_replica_count")
    if replicas is not None and low is not None and replicas < low:
        raise ValueError("replica_count must be >= min_replica_count")
    if replicas is not None and high is not None and replicas > high:
        raise ValueError("replica_count must be <= max_replica_count")


class ClusterCreate(StrictModel):
    name: Name
    ray_version: str | None = None
    head: HeadNodeSpec = Field(default_factory=HeadNodeSpec)
    worker_pools: Annotated[list[WorkerPoolSpec], capped("max_worker_pools")] = Field(
        default_factory=list
    )
    runtime_env: dict[str, Any] | None = None
    image: str | None = None
    labels: LabelMap = Field(default_factory=dict)
    network: Literal["local", "public", "private"] = "local"
    backend: str | None = None

    @model_validator(mode="after")
    def _unique_pools(self) -> ClusterCreate:
        names = [pool.name for pool in self.worker_pools]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"worker pool names must be unique: {', '.join(duplicates)}")
        return self


class PoolReplicaUpdate(StrictModel):
    name: Name
    replica_count: Replicas | None = None
    min_replica_count: Replicas | None = None
    max_replica_count: Replicas | None = None

    @model_validator(mode="after")
    def _bounds(self) -> PoolReplicaUpdate:
        _check_bounds(self.replica_count, self.min_replica_count, self.max_replica_count)
        return self


class ClusterUpdate(StrictModel):
    """Like the reference platform, only replica counts of existing pools change."""

    worker_pools: Annotated[list[PoolReplicaUpdate], capped("max_worker_pools")] = Field(
        min_length=1
    )


class NodeStatus(LenientModel):
    name: str
    pool: str
    alive: bool
    address: str | None = None


class WorkerPoolStatus(WorkerPoolSpec):
    """A pool as stored: the spec plus what exists now."""

    model_config = LenientModel.model_config
    current_replica_count: int = 0


class Cluster(LenientModel):
    id: str
    name: str
    project: str = "default"
    state: ClusterState
    state_reason: str | None = None
    ray_version: str
    backend: str
    head: HeadNodeSpec
    worker_pools: list[WorkerPoolStatus]
    runtime_env: dict[str, Any] | None = None
    image: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    network: str = "local"
    dashboard_url: str | None = None
    ray_client_address: str | None = None
    gcs_address: str | None = None
    nodes: list[NodeStatus] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
