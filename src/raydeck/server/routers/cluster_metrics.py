"""Ray's own metrics per cluster: Prometheus HTTP service discovery, and each node's
exposition relayed through the control plane (for operators who cannot reach Ray's ports)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends
from fastapi.responses import Response

from raydeck.backends.base import MetricsSource, MetricsTarget
from raydeck.core.errors import FailedPreconditionError, NotFoundError, UnavailableError
from raydeck.server.auth import Principal, require
from raydeck.server.routers.common import State
from raydeck.server.services import clusters as cluster_service
from raydeck.server.state import ServerState

router = APIRouter(prefix="/api/v1/clusters/{name}/rayMetrics", tags=["operations"])


def _targets(state: ServerState, name: str, project: str) -> tuple[list[MetricsTarget], str]:
    with state.db.session() as session:
        row = cluster_service.get_cluster_row(session, name, project)
        spec, backend_kind = cluster_service.backend_spec(row, state.settings), row.backend
    backend = state.backend(backend_kind)
    if not isinstance(backend, MetricsSource):
        raise FailedPreconditionError(
            f"the {backend_kind!r} backend does not expose Ray metrics", field="cluster"
        )
    return backend.metrics_targets(spec), row.project


@router.get("")
async def metrics_targets(
    name: str, state: State, caller: Annotated[Principal, Depends(require("clusters.get"))]
) -> list[dict[str, Any]]:
    """Prometheus ``http_sd_configs`` document: one target per node of the cluster."""
    targets, project = await asyncio.to_thread(_targets, state, name, caller.project)
    return [
        {
            "targets": [t.address],
            "labels": {"raydeck_cluster": name, "raydeck_project": project, "node": t.node},
        }
        for t in targets
    ]


@router.get("/{node}", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def node_metrics(
    name: str,
    node: str,
    state: State,
    caller: Annotated[Principal, Depends(require("clusters.get"))],
) -> Response:
    """One node's Ray metrics (Prometheus text), relayed."""
    targets, _ = await asyncio.to_thread(_targets, state, name, caller.project)
    target = next((t for t in targets if t.node == node), None)
    if target is None:
        known = ", ".join(t.node for t in targets) or "none"
        raise NotFoundError(f"node {node!r} not in cluster {name!r} ({known})", field="node")
    try:
        async with httpx.AsyncClient(timeout=10.0) as client:
            answer = await client.get(f"http://{target.address}/metrics")
    except httpx.HTTPError as exc:
        raise UnavailableError(f"node {node!r} did not answer: {exc}") from exc
    if answer.status_code != 200:
        raise UnavailableError(f"node {node!r} answered HTTP {answer.status_code}")
    return Response(answer.content, media_type="text/plain; version=0.0.4; charset=utf-8")
