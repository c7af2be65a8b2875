"""/api/v1/endpoints"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Query, Request, Response

from raydeck.core.errors import FailedPreconditionError, RaydeckError, UnavailableError
from raydeck.core.models import (
    DeployModel,
    Endpoint,
    EndpointCreate,
    EndpointState,
    EndpointUpdate,
    Page,
    UndeployModel,
)
from raydeck.server.auth import Principal, require
from raydeck.server.routers.common import DbSession, PageSize, PageToken, State
from raydeck.server.services import endpoints as service
from raydeck.server.services.endpoint_events import record_prediction
from raydeck.server.state import ServerState

router = APIRouter(prefix="/api/v1/endpoints", tags=["endpoints"])


@router.post("", status_code=201)
def create_endpoint(
    body: EndpointCreate,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("endpoints.create"))],
) -> Endpoint:
    return service.create_endpoint(session, body, caller.project)


@router.get("")
def list_endpoints(
    session: DbSession,
    caller: Annotated[Principal, Depends(require("endpoints.list"))],
    page_size: PageSize = 100,
    page_token: PageToken = None,
    cluster: Annotated[str | None, Query()] = None,
    state: Annotated[EndpointState | None, Query()] = None,
) -> Page[Endpoint]:
    return service.list_endpoints(
        session,
        page_size=page_size,
        page_token=page_token,
        cluster=cluster,
        state=state,
        project=caller.project,
    )


@router.get("/{endpoint}")
def get_endpoint(
    endpoint: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("endpoints.get"))],
) -> Endpoint:
    return service.get_endpoint(session, endpoint, caller.project)


@router.patch("/{endpoint}")
def update_endpoint(
    endpoint: str,
    body: EndpointUpdate,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("endpoints.update"))],
) -> Endpoint:
    return service.update_endpoint(session, endpoint, body, caller.project)


@router.delete("/{endpoint}", status_code=202)
def delete_endpoint(
    endpoint: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("endpoints.delete"))],
) -> Endpoint:
    return service.delete_endpoint(session, endpoint, caller.project)


@router.post("/{endpoint}:deployModel")
def deploy_model(
    endpoint: str,
    body: DeployModel,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("endpoints.deploy"))],
) -> Endpoint:
    return service.deploy_model(session, endpoint, body, caller.project)


@router.post("/{endpoint}:undeployModel")
def undeploy_model(
    endpoint: str,
    body: UndeployModel,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("endpoints.deploy"))],
) -> Endpoint:
    return service.undeploy_model(session, endpoint, body.deployed_model_id, caller.project)


@router.get("/{endpoint}/authorize", status_code=204)
def authorize_predict(
    endpoint: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("endpoints.predict"))],
) -> Response:
    """Asked by the endpoint's Serve router (cached briefly) before it serves a request."""
    service.get_endpoint_row(session, endpoint, caller.project)
    return Response(status_code=204)


async def _data_plane(
    state: ServerState, endpoint: str, project: str, action: str, request: Request
) -> Response:
    """Relay to the Serve data plane, for callers that only know the control plane's URL.
    Clients that can reach the cluster should POST to ``predict_url`` directly."""

    def locate() -> str:
        with state.db.session() as session:
            found = service.get_endpoint(session, endpoint, project)
        if not found.predict_url:
            raise FailedPreconditionError(
                f"endpoint {found.display_name!r} is {found.state} with no model serving",
                field="endpoint",
            )
        return found.predict_url

    start = time.perf_counter()
    try:
        url = await asyncio.to_thread(locate)
        headers = {"authorization": request.headers.get("authorization", "")}
        headers["content-type"] = request.headers.get("content-type", "application/json")
        try:
            async with httpx.AsyncClient(timeout=60.0) as client:
                answer = await client.post(
                    f"{url}/{action}", content=await request.body(), headers=headers
                )
        except httpx.HTTPError as exc:
            raise UnavailableError(f"endpoint {endpoint!r} did not answer: {exc}") from exc
    except RaydeckError as exc:
        elapsed = time.perf_counter() - start
        await asyncio.to_thread(
            record_prediction,
            state,
            endpoint,
            project,
            action,
            exc.http_status,
            elapsed,
            None,
            str(exc),
        )
        raise
    await asyncio.to_thread(
        record_prediction,
        state,
        endpoint,
        project,
        action,
        answer.status_code,
        time.perf_counter() - start,
        answer.content,
    )
    return Response(answer.content, answer.status_code, media_type="application/json")


def _register_data_plane_route(action: str) -> None:
    async def relay(
        endpoint: str,
        request: Request,
        state: State,
        caller: Annotated[Principal, Depends(require("endpoints.predict"))],
        body: dict[str, Any] | list[Any] | None = None,
    ) -> Response:
        service.check_relay_body(action, body)
        return await _data_plane(state, endpoint, caller.project, action, request)

    router.add_api_route(
        f"/{{endpoint}}:{action}",
        relay,
        methods=["POST"],
        name=f"endpoint_{action}",
        operation_id=f"endpoint_{action}",
        response_class=Response,
    )


for _action in ("predict", "rawPredict", "explain"):
    _register_data_plane_route(_action)
