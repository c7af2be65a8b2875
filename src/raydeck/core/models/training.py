"""CustomJob: the user's training code run on a cluster, shaped like the reference platform's.

A job has worker pools (``worker_pool_specs``); pool 0 is the chief and runs in the Ray job's
driver, the other pools' replicas run as Ray actors with their pool's resources. A pool
without code (no module, script or command) is a Ray Train worker pool: nothing is launched
for it, its replicas are the workers the chief's Ray Train trainer scales to (see
``raydeck.training.scaling_config``).
"""

from __future__ import annotations

import os
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PositiveInt, field_validator, model_validator

from raydeck.core.models.clusters import MemoryBytes
from raydeck.core.models.common import LenientModel, StrictModel
from raydeck.core.models.limits import Cpus, Gpus, LabelMap, ResourceMap, capped

__all__ = [
    "TERMINAL_TRAINING_STATES",
    "ArtifactFile",
    "CustomJob",
    "CustomJobCreate",
    "CustomJobSpec",
    "MachineSpec",
    "MetricPoint",
    "PythonModuleSpec",
    "ReplicaSpec",
    "Scheduling",
    "ScriptSpec",
    "TrainingPoolSpec",
    "TrainingState",
]


class TrainingState(StrEnum):
    QUEUED = "QUEUED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


TERMINAL_TRAINING_STATES = frozenset(
    {TrainingState.SUCCEEDED, TrainingState.FAILED, TrainingState.CANCELLED}
)

EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
Arg = Annotated[str, Field(max_length=4096)]


def _absolute_path(value: Any) -> Any:
    if isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
        raise ValueError(f"{value!r} is relative; give an absolute path the cluster can read")
    return value


AbsolutePath = Annotated[str, BeforeValidator(_absolute_path), Field(min_length=1)]


class MachineSpec(StrictModel):
    """What one replica of a pool reserves on the cluster."""

    cpus: Cpus = 1
    gpus: Gpus = 0
    memory: MemoryBytes = None
    resources: ResourceMap = Field(default_factory=dict)

    def ray_resources(self) -> dict[str, float]:
        """One placement-group bundle: Ray's resource names."""
        bundle = {"CPU": self.cpus, "GPU": self.gpus, **self.resources}
        if self.memory:
            bundle["memory"] = float(self.memory)
        return {k: v for k, v in bundle.items() if v > 0}


class PythonModuleSpec(StrictModel):
    """``python -m module_name`` run from ``package_dir`` (on the import path)."""

    module_name: Annotated[str, Field(pattern=r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")]
    package_dir: AbsolutePath | None = None


class ScriptSpec(StrictModel):
    path: AbsolutePath


class TrainingPoolSpec(StrictModel):
    """One worker pool: replicas × machine, running a module, a script or a command."""

    replica_count: Annotated[PositiveInt, capped("max_job_replicas")] = 1
    machine_spec: MachineSpec = Field(default_factory=MachineSpec)
    python_module: PythonModuleSpec | None = None
    script: ScriptSpec | None = None
    command: list[Arg] | None = Field(default=None, min_length=1)
    args: list[Arg] = Field(default_factory=list)
    env: dict[EnvName, Annotated[str, Field(max_length=16384)]] = Field(default_factory=dict)
    working_dir: AbsolutePath | None = None

    @model_validator(mode="after")
    def _one_program(self) -> TrainingPoolSpec:
        given = [n for n in ("python_module", "script", "command") if getattr(self, n)]
        if len(given) > 1:
            raise ValueError(f"give one of python_module, script, command (got {given})")
        return self

    @property
    def has_program(self) -> bool:
        return bool(self.python_module or self.script or self.command)


class Scheduling(StrictModel):
    timeout_seconds: Annotated[float, Field(gt=0)] | None = None
    max_restarts: Annotated[int, Field(ge=0, le=100)] = 0


class CustomJobSpec(StrictModel):
    """The reusable part: also a tuning job's ``trial_job_spec``."""

    worker_pool_specs: list[TrainingPoolSpec] = Field(min_length=1, max_length=8)
    base_output_dir: AbsolutePath | None = None
    scheduling: Scheduling = Field(default_factory=Scheduling)

    @field_validator("worker_pool_specs")
    @classmethod
    def _chief(cls, pools: list[TrainingPoolSpec]) -> list[TrainingPoolSpec]:
        if not pools[0].has_program:
            raise ValueError("pool 0 (the chief) needs python_module, script or command")
        if pools[0].replica_count != 1:
            raise ValueError("pool 0 (the chief) has exactly one replica")
        return pools


class CustomJobCreate(CustomJobSpec):
    display_name: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    cluster: str | None = Field(
        default=None, description="existing cluster; leave out for an ephemeral one"
    )
    labels: LabelMap = Field(default_factory=dict)


class ReplicaSpec(LenientModel):
    """Where a replica's output went: one entry per launched process."""

    pool: int
    index: int
    name: str
    log_path: str


class CustomJob(LenientModel):
    id: str
    display_name: str
    project: str = "default"
    cluster: str | None = None
    ephemeral_cluster: bool = False
    job_spec: CustomJobSpec
    labels: dict[str, str] = Field(default_factory=dict)
    state: TrainingState
    state_reason: str | None = None
    attempt: int = 0
    submission_id: str | None = None
    job_id: str | None = None
    base_output_dir: str
    replicas: list[ReplicaSpec] = Field(default_factory=list)
    pipeline_id: str | None = None
    created_at: datetime
    start_time: datetime | None = None
    end_time: datetime | None = None
    updated_at: datetime


class MetricPoint(LenientModel):
    metric: str
    step: int | None = None
    value: float
    time: datetime | None = None


class ArtifactFile(LenientModel):
    """A file a job or trial wrote: ``path`` is relative to its output directory."""

    path: str
    size: int
    modified: datetime
