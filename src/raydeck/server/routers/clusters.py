"""/api/v1/clusters"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from raydeck.core.models import Cluster, ClusterCreate, ClusterState, ClusterUpdate, Page
from raydeck.server.auth import Principal, require
from raydeck.server.routers.common import DbSession, PageSize, PageToken, State
from raydeck.server.services import clusters as service
from raydeck.server.state import RAY_VERSION

router = APIRouter(prefix="/api/v1/clusters", tags=["clusters"])


@router.post("", status_code=201)
def create_cluster(
    body: ClusterCreate,
    session: DbSession,
    state: State,
    caller: Annotated[Principal, Depends(require("clusters.create"))],
) -> Cluster:
    backend = body.backend or state.settings.default_backend
    return service.create_cluster(
        session,
        body,
        backend=backend,
        ray_version=RAY_VERSION,
        capacity=state.backend(backend),  # 400 for an unknown backend before anything is stored
        settings=state.settings,
        project=caller.project,
    )


@router.get("")
def list_clusters(
    session: DbSession,
    caller: Annotated[Principal, Depends(require("clusters.list"))],
    page_size: PageSize = 100,
    page_token: PageToken = None,
    state: Annotated[ClusterState | None, Query()] = None,
    label: Annotated[str | None, Query(description="key=value")] = None,
) -> Page[Cluster]:
    return service.list_clusters(
        session,
        page_size=page_size,
        page_token=page_token,
        state=state,
        label=label,
        project=caller.project,
    )


@router.get("/{name}")
def get_cluster(
    name: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("clusters.get"))],
) -> Cluster:
    return service.get_cluster(session, name, caller.project)


@router.patch("/{name}")
def update_cluster(
    name: str,
    body: ClusterUpdate,
    session: DbSession,
    state: State,
    caller: Annotated[Principal, Depends(require("clusters.update"))],
) -> Cluster:
    return service.update_cluster(session, name, body, state.backend, caller.project)


@router.delete("/{name}", status_code=202)
def delete_cluster(
    name: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("clusters.delete"))],
) -> Cluster:
    return service.delete_cluster(session, name, caller.project)


@router.post("/{name}/repair")
def repair_cluster(
    name: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("clusters.update"))],
) -> Cluster:
    return service.repair_cluster(session, name, caller.project)


@router.get("/{name}/credentials")
def cluster_credentials(
    name: str,
    session: DbSession,
    state: State,
    caller: Annotated[Principal, Depends(require("clusters.connect"))],
) -> dict[str, str | None]:
    """What a Ray client needs to connect: address plus the cluster's Ray auth token."""
    return service.cluster_credentials(session, state.settings, name, caller.project)
