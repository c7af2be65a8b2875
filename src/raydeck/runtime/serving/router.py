"""The endpoint's ingress: bearer-token check, weighted routing, per-model counters."""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.util import metrics
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = ["AUTH_CACHE_SECONDS", "MAX_BODY_BYTES", "EndpointRouter"]

MAX_BODY_BYTES = 8 * 1024 * 1024
AUTH_CACHE_SECONDS = 10.0
_LATENCY_BOUNDARIES = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0]


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


@dataclass
class _Stats:
    requests: int = 0
    errors: int = 0
    latency_ms_total: float = 0.0
    by_code: dict[int, int] = field(default_factory=dict)


@serve.deployment(ray_actor_options={"num_cpus": 0})
class EndpointRouter:
    def __init__(
        self,
        endpoint_id: str,
        deployed_models: list[dict[str, Any]],
        handles: list[DeploymentHandle[Any]],
        traffic_split: dict[str, int],
        authorize_url: str,
    ) -> None:
        self.endpoint_id = endpoint_id
        self.models = {m["id"]: m for m in deployed_models}
        self.handles = {m["id"]: h for m, h in zip(deployed_models, handles, strict=True)}
        weighted = [(i, w) for i, w in traffic_split.items() if w > 0 and i in self.handles]
        self.choices = [i for i, _ in weighted]
        self.weights = [w for _, w in weighted]
        self.authorize_url = authorize_url
        self.http = httpx.AsyncClient(timeout=10.0)
        self.allowed: dict[str, float] = {}  # sha256(token) → allowed until (monotonic)
        self.stats = {i: _Stats() for i in self.models}
        tags = ("endpoint", "deployed_model", "code")
        self.request_counter = metrics.Counter(
            "raydeck_endpoint_requests", "Predict requests per deployed model.", tags
        )
        self.latency = metrics.Histogram(
            "raydeck_endpoint_latency_ms",
            "Predict latency per deployed model (ms).",
            boundaries=_LATENCY_BOUNDARIES,
            tag_keys=("endpoint", "deployed_model"),
        )

    async def _authorized(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return _error(401, "unauthenticated", "missing bearer token")
        key = hashlib.sha256(header.encode()).hexdigest()
        if self.allowed.get(key, 0.0) > time.monotonic():
            return None
        try:
            answer = await self.http.get(self.authorize_url, headers={"Authorization": header})
        except httpx.HTTPError:
            return _error(503, "unavailable", "cannot verify the token with the control plane")
        if answer.status_code in (401, 403):
            body = answer.json().get("error", {})
            code = "unauthenticated" if answer.status_code == 401 else "permission_denied"
            return _error(answer.status_code, code, body.get("message", code))
        if not answer.is_success:
            return _error(503, "unavailable", f"authorization failed: HTTP {answer.status_code}")
        self.allowed[key] = time.monotonic() + AUTH_CACHE_SECONDS
        return None

    async def __call__(self, request: Request) -> Response:
        action = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        denied = await self._authorized(request)
        if denied is not None:
            return denied
        if request.method == "GET" and action == "stats":
            return JSONResponse({i: vars(s) for i, s in self.stats.items()})
        if request.method != "POST" or action not in ("predict", "rawPredict", "explain"):
            return _error(404, "not_found", f"no route {request.method} {request.url.path}")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _error(400, "invalid_argument", f"body over {MAX_BODY_BYTES} bytes")
        if not self.choices:
            return _error(412, "failed_precondition", "no model receives traffic on this endpoint")
        try:
            payload = json.loads(body)
        except ValueError:
            return _error(400, "invalid_argument", "request body is not valid JSON")
        if action == "rawPredict":
            payload = {"instances": payload if isinstance(payload, list) else [payload]}
        if not isinstance(payload, dict):
            return _error(400, "invalid_argument", 'body must be {"instances": [...]}')
        instances, parameters = payload.get("instances"), payload.get("parameters")
        if not isinstance(instances, list) or not instances:
            return _error(400, "invalid_argument", "instances must be a non-empty list")
        if parameters is not None and not isinstance(parameters, dict):
            return _error(400, "invalid_argument", "parameters must be an object")
        return await self._dispatch(action, instances, parameters)

    async def _dispatch(
        self, action: str, instances: list[Any], parameters: dict[str, Any] | None
    ) -> Response:
        chosen = random.choices(self.choices, self.weights)[0]
        model = self.models[chosen]
        handle = self.handles[chosen]
        start = time.perf_counter()
        method = handle.explain if action == "explain" else handle.predict
        outcome: dict[str, Any] = await method.remote(instances, parameters)
        elapsed_ms = (time.perf_counter() - start) * 1000
        status = int(outcome["error"].pop("status", 500)) if "error" in outcome else 200
        self._count(chosen, status, elapsed_ms)
        if status != 200:
            return JSONResponse({"error": outcome["error"]}, status_code=status)
        if action == "rawPredict":
            return JSONResponse(outcome["predictions"])
        return JSONResponse(
            {
                **outcome,
                "deployed_model_id": chosen,
                "model": model["model"],
                "model_version_id": model["model_version_id"],
            }
        )

    def _count(self, deployed_model_id: str, status: int, elapsed_ms: float) -> None:
        stats = self.stats[deployed_model_id]
        stats.requests += 1
        stats.errors += status >= 400
        stats.latency_ms_total += elapsed_ms
        stats.by_code[status] = stats.by_code.get(status, 0) + 1
        tags = {"endpoint": self.endpoint_id, "deployed_model": deployed_model_id}
        self.request_counter.inc(tags={**tags, "code": str(status)})
        self.latency.observe(elapsed_ms, tags=tags)
