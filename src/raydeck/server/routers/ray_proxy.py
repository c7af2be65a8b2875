"""Ray Jobs REST API of each cluster, behind Raydeck's auth.

``JobSubmissionClient("<server>/api/v1/clusters/<name>/ray", headers={"Authorization":
"Bearer <raydeck token>"})`` and ``ray job submit --address ...`` work unchanged: the proxy
swaps Raydeck's token for the cluster's Ray token and records submissions as Raydeck jobs.
Answers never carry job tokens: Ray shows each job's env vars (``RAYDECK_TOKEN`` of the jobs
Raydeck submits) to whoever may read jobs, so they are redacted on the way out.
"""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import websockets
from fastapi import APIRouter, Request, Response, WebSocket
from websockets.asyncio.client import connect as ws_connect

from raydeck.core.errors import RaydeckError, UnavailableError
from raydeck.server.auth import authorize
from raydeck.server.routers.common import State
from raydeck.server.services import job_tokens
from raydeck.server.services import jobs as job_service
from raydeck.server.state import ServerState

router = APIRouter(prefix="/api/v1/clusters/{cluster}/ray", tags=["ray"])
log = logging.getLogger(__name__)

# Hop-by-hop and credential headers never cross the proxy.
_DROP_REQUEST = {
    "authorization",
    "x-ray-authorization",
    "cookie",
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
}
_DROP_RESPONSE = {"content-length", "content-encoding", "transfer-encoding", "connection"}
_READ_METHODS = {"GET", "HEAD", "OPTIONS"}


async def ray_api_proxy(cluster: str, path: str, request: Request, state: State) -> Response:
    permission = "jobs.get" if request.method in _READ_METHODS else "jobs.submit"
    caller = await asyncio.to_thread(authorize, request, state, permission)
    if request.method == "POST" and path.rstrip("/") == "api/jobs":
        await asyncio.to_thread(job_service.check_budget, state, caller.project)
    target = await asyncio.to_thread(job_service.cluster_target, state, cluster, caller.project)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
    headers["authorization"] = f"Bearer {target.ray_auth_token}"
    body = await request.body()
    url = f"{target.dashboard_url.rstrip('/')}/{path}"
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(300.0, connect=5.0)) as client:
            upstream = await client.request(
                request.method, url, params=request.query_params, content=body, headers=headers
            )
    except httpx.HTTPError as exc:
        raise UnavailableError(f"cluster {cluster!r} did not answer: {exc}") from exc
    if request.method == "POST" and path.rstrip("/") == "api/jobs" and upstream.is_success:
        await _record(state, target, body, upstream)
    response_headers = {
        k: v for k, v in upstream.headers.items() if k.lower() not in _DROP_RESPONSE
    }
    return Response(_redacted(upstream), upstream.status_code, headers=response_headers)


def _redacted(upstream: httpx.Response) -> bytes:
    """Ray's answer with job tokens replaced (JSON and text; other bodies pass as they are)."""
    kind = upstream.headers.get("content-type", "").lower()
    if "json" in kind or kind.startswith("text/") or not kind:
        return job_tokens.redact_json_body(upstream.content)
    return upstream.content


async def _record(
    state: State, target: job_service.ClusterTarget, body: bytes, upstream: httpx.Response
) -> None:
    try:
        submission_id = str(upstream.json()["submission_id"])
        request = job_service.parse_proxy_submission(json.loads(body))
        await asyncio.to_thread(
            job_service.record_submission, state, target, submission_id, request
        )
    except (ValueError, KeyError, RaydeckError) as exc:  # Ray accepted it; keep its answer
        log.warning("could not record job submitted through the Ray proxy: %s", exc)


@router.websocket("/api/jobs/{submission_id}/logs/tail")
async def tail_job_logs(websocket: WebSocket, cluster: str, submission_id: str) -> None:
    """Ray's log tail is a websocket (used by `ray job submit`/`ray job logs -f`): relay it."""
    state: ServerState = websocket.app.state.raydeck
    try:
        caller = await asyncio.to_thread(authorize, websocket, state, "jobs.get")
        target = await asyncio.to_thread(job_service.cluster_target, state, cluster, caller.project)
    except RaydeckError as exc:
        await websocket.close(code=1008, reason=exc.message[:120])
        return
    url = target.dashboard_url.replace("http", "ws", 1).rstrip("/")
    headers = {"Authorization": f"Bearer {target.ray_auth_token}"}
    await websocket.accept()
    try:
        async with ws_connect(
            f"{url}/api/jobs/{submission_id}/logs/tail", additional_headers=headers
        ) as upstream:
            async for message in upstream:
                if isinstance(message, bytes):
                    await websocket.send_bytes(job_tokens.redact_json_body(message))
                else:
                    await websocket.send_text(job_tokens.redact_text(message))
    except (OSError, websockets.WebSocketException) as exc:
        log.info("log tail of %s on %s ended: %s", submission_id, cluster, exc)
    await websocket.close()


for _method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
    router.add_api_route(
        "/{path:path}",
        ray_api_proxy,
        methods=[_method],
        name=f"ray_api_{_method.lower()}",
        operation_id=f"ray_api_{_method.lower()}",
        include_in_schema=True,
    )
