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

__all__ = [
    "Cluster",
    "ClusterCreate",
    "ClusterState",
    "ClusterUpdate",
    "HeadNodeSpec",
    "Job",
    "JobState",
    "JobSubmit",
    "NodeStatus",
    "Page",
    "PoolReplicaUpdate",
    "Role",
    "Token",
    "TokenCreate",
    "TokenCreated",
    "WorkerPoolSpec",
    "WorkerPoolStatus",
]
