"""Job: a Ray job submitted to a cluster through the Ray Jobs API."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field

from raydeck.core.models.common import LenientModel, StrictModel
from raydeck.core.models.limits import Cpus, Gpus, ResourceMap, capped

__all__ = ["TERMINAL_JOB_STATES", "Job", "JobState", "JobSubmit"]


class JobState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"


TERMINAL_JOB_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED})


class JobSubmit(StrictModel):
    entrypoint: Annotated[str, Field(min_length=1, max_length=16384)]
    runtime_env: dict[str, Any] | None = None
    submission_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")] | None = None
    metadata: Annotated[
        dict[Annotated[str, Field(max_length=256)], Annotated[str, Field(max_length=4096)]],
        capped("max_labels"),
    ] = Field(default_factory=dict)
    entrypoint_num_cpus: Cpus | None = None
    entrypoint_num_gpus: Gpus | None = None
    entrypoint_memory: Annotated[int, Field(ge=0), capped("max_node_memory")] | None = None
    entrypoint_resources: ResourceMap | None = None


class Job(LenientModel):
    id: str
    cluster: str
    cluster_id: str
    project: str = "default"
    submission_id: str
    entrypoint: str
    runtime_env: dict[str, Any] | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    state: JobState
    message: str | None = None
    created_at: datetime
    start_time: datetime | None = None
    end_time: datetime | None = None
