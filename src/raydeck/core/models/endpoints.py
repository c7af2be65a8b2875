"""Endpoint: a Ray Serve application with deployed model versions and a traffic split."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, PositiveInt, model_validator

from raydeck.core.models.clusters import MemoryBytes
from raydeck.core.models.common import LenientModel, Name, StrictModel
from raydeck.core.models.limits import Cpus, Gpus, LabelMap, capped

__all__ = [
    "BatchingSpec",
    "DeployModel",
    "DeployedModel",
    "Endpoint",
    "EndpointCreate",
    "EndpointState",
    "EndpointUpdate",
    "PredictRequest",
    "Prediction",
    "UndeployModel",
]

Percent = Annotated[int, Field(ge=0, le=100)]
Replicas = Annotated[PositiveInt, capped("max_endpoint_replicas")]


class EndpointState(StrEnum):
    CREATING = "CREATING"
    READY = "READY"
    UPDATING = "UPDATING"
    FAILED = "FAILED"
    DELETING = "DELETING"


class BatchingSpec(StrictModel):
    """Serve dynamic batching: concurrent requests are predicted in one vectorized call."""

    max_batch_size: Annotated[int, Field(ge=1), capped("max_serve_batch_size")] = 32
    batch_wait_timeout_s: Annotated[float, Field(ge=0, le=1)] = 0.01


class DeployModel(StrictModel):
    model: Annotated[str, Field(min_length=1, description="model, model@version or model@alias")]
    display_name: Name | None = None
    min_replica_count: Replicas = 1
    max_replica_count: Replicas | None = None
    num_cpus: Cpus = 1
    num_gpus: Gpus = 0
    memory: MemoryBytes = None
    batching: BatchingSpec | None = None
    traffic_percentage: Percent | None = Field(
        default=None,
        description="share for this model; others shrink proportionally. Default: 100 for the "
        "first model, else 0",
    )

    @model_validator(mode="after")
    def _bounds(self) -> DeployModel:
        if self.max_replica_count is not None and self.max_replica_count < self.min_replica_count:
            raise ValueError("max_replica_count must be >= min_replica_count")
        return self


class UndeployModel(StrictModel):
    deployed_model_id: Annotated[str, Field(min_length=1)]


class EndpointCreate(StrictModel):
    display_name: Name
    cluster: Name
    description: Annotated[str, Field(max_length=2000)] | None = None
    labels: LabelMap = Field(default_factory=dict)


class EndpointUpdate(StrictModel):
    traffic_split: Annotated[dict[str, Percent], capped("max_endpoint_replicas")] | None = None
    description: Annotated[str, Field(max_length=2000)] | None = None
    labels: LabelMap | None = None


class DeployedModel(LenientModel):
    id: str
    display_name: str
    model: str  # the model's display name
    model_id: str
    model_version_id: str  # global version id (mv-…)
    version_id: str  # per-model version number
    framework: str
    artifact_uri: str
    min_replica_count: int
    max_replica_count: int
    num_cpus: float
    num_gpus: float
    memory: int | None = None
    batching: BatchingSpec | None = None
    created_at: datetime


class Endpoint(LenientModel):
    id: str
    display_name: str
    project: str = "default"
    cluster: str
    description: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    state: EndpointState
    state_reason: str | None = None
    deployed_models: list[DeployedModel] = Field(default_factory=list)
    traffic_split: dict[str, int] = Field(default_factory=dict)
    predict_url: str | None = Field(
        default=None, description="data-plane base URL: POST <predict_url>/predict"
    )
    created_at: datetime
    updated_at: datetime


class PredictRequest(StrictModel):
    instances: Annotated[list[Any], Field(min_length=1), capped("max_predict_instances")]
    parameters: dict[str, Any] | None = None


class Prediction(LenientModel):
    predictions: list[Any] = Field(default_factory=list)
    explanations: list[Any] | None = None
    deployed_model_id: str
    model: str
    model_version_id: str
