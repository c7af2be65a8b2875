"""Ray Jobs REST API of each cluster, behind Raydeck's auth.

``JobSubmissionClient("<server>/api/v1/clusters/<name>/ray", headers={"Authorization":
"Bearer <raydeck token>"})`` and ``ray job submit --address ...`` work unchanged: the proxy
swaps Raydeck's token for the cluster's Ray token and records submissions as Raydeck jobs.
Only the Jobs API's own routes pass (``RAY_JOBS_ROUTES``, each behind the permission of the
matching Raydeck call, plus the log-tail websocket); every other dashboard path is a 404.
Answers never carry job tokens: Ray shows each job's env vars (``RAYDECK_TOKEN`` of the jobs
Raydeck submits) to whoever may read jobs, so they are redacted on the way out.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re

import httpx
import websockets
from fastapi import APIRouter, Depends, Request, Response, WebSocket
from websockets.asyncio.client import connect as ws_connect

from raydeck.core.errors import RaydeckError, UnavailableError
from raydeck.server.auth import Principal, authorize, require
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
_PREFIX = re.compile(r"^/api/v1/clusters/[^/]+/ray")

# Exactly what Ray 2.60's Jobs SDK and CLI call (ray/dashboard/modules/job/sdk.py and
# dashboard_sdk.py), each behind the permission of the matching Raydeck job call. Nothing
# else of the dashboard (Serve's REST API, the state API, log files...) is reachable.
RAY_JOBS_ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", "/api/version", "jobs.get"),  # every JobSubmissionClient asks it first
    ("GET", "/api/packages/{protocol}/{package_name}", "jobs.submit"),  # working_dir known?
    ("PUT", "/api/packages/{protocol}/{package_name}", "jobs.submit"),  # working_dir upload
    ("POST", "/api/jobs/", "jobs.submit"),
    ("GET", "/api/jobs/", "jobs.list"),
    ("GET", "/api/jobs/{job_id}", "jobs.get"),
    ("DELETE", "/api/jobs/{job_id}", "jobs.delete"),
    ("POST", "/api/jobs/{job_id}/stop", "jobs.stop"),
    ("GET", "/api/jobs/{job_id}/logs", "jobs.logs"),
)


async def ray_api_proxy(
    cluster: str, request: Request, state: ServerState, caller: Principal
) -> Response:
    """Relay one allowed call to the cluster's dashboard with the cluster's Ray token."""
    path = _PREFIX.sub("", request.url.path, count=1)
    submit = request.method == "POST" and path.rstrip("/") == "/api/jobs"
    if submit:
        await asyncio.to_thread(job_service.check_budget, state, caller.project)
    target = await asyncio.to_thread(job_service.cluster_target, state, cluster, caller.project)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
    headers["authorization"] = f"Bearer {target.ray_auth_token}"
    # Package uploads (up to RAYDECK_MAX_UPLOAD_BYTES) stream through; other bodies are small.
    upload = request.method == "PUT"
    body = b"" if upload else await request.body()
    if upload and "content-length" in request.headers:
        headers["content-length"] = request.headers["content-length"]
    url = f"{target.dashboard_url.rstrip('/')}{path}"
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(300.0, connect=5.0)) as client:
            upstream = await client.request(
                request.method,
                url,
                params=request.query_params,
                content=request.stream() if upload else body,
                headers=headers,
            )
    except httpx.HTTPError as exc:
        raise UnavailableError(f"cluster {cluster!r} did not answer: {exc}") from exc
    if submit and upstream.is_success:
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
        caller = await asyncio.to_thread(authorize, websocket, state, "jobs.logs")
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


def _register(method: str, path: str, permission: str) -> None:
    async def relay(
        cluster: str,
        request: Request,
        state: State,
        caller: Principal = Depends(require(permission)),
        **_path: str,  # the route's own path parameters, declared below for OpenAPI
    ) -> Response:
        return await ray_api_proxy(cluster, request, state, caller)

    signature = inspect.signature(relay)
    declared = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    declared += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=str)
        for name in re.findall(r"\{(\w+)\}", path)
    ]
    relay.__signature__ = signature.replace(parameters=declared)  # type: ignore[attr-defined]
    name = "ray_" + re.sub(r"[^a-z]+", "_", f"{method} {path}".lower()).strip("_")
    router.add_api_route(path, relay, methods=[method], name=name, operation_id=name)


for _method, _path, _permission in RAY_JOBS_ROUTES:
    _register(_method, _path, _permission)
