"""One pydantic model per resource, used verbatim by server, SDK and CLI."""

from raydeck.core.models.auth import Role, Token, TokenCreate, TokenCreated
from raydeck.core.models.clusters import (
    Cluster,
    ClusterCreate,
    ClusterState,
    ClusterUpdate,
    HeadNodeSpec,
    NodeStatus,
    PoolReplicaUpdate,
    WorkerPoolSpec,
    WorkerPoolStatus,
)
from raydeck.core.models.common import Page
from raydeck.core.models.jobs import Job, JobState, JobSubmit
from raydeck.core.models.registry import (
    AliasChanges,
    Framework,
    Model,
    ModelUpdate,
    ModelUpload,
    ModelVersion,
    ModelVersionUpdate,
    PredictSchema,
)

__all__ = [
    "AliasChanges",
    "Cluster",
    "ClusterCreate",
    "ClusterState",
    "ClusterUpdate",
    "Framework",
    "HeadNodeSpec",
    "Job",
    "JobState",
    "JobSubmit",
    "Model",
    "ModelUpdate",
    "ModelUpload",
    "ModelVersion",
    "ModelVersionUpdate",
    "NodeStatus",
    "Page",
    "PoolReplicaUpdate",
    "PredictSchema",
    "Role",
    "Token",
    "TokenCreate",
    "TokenCreated",
    "WorkerPoolSpec",
    "WorkerPoolStatus",
]
