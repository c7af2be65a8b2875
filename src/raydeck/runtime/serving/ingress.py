"""What every endpoint ingress does before and after a model runs: check the bearer token
(with the control plane, cached), parse ``{"instances", "parameters"}``, count requests,
latency and errors per deployed model, and shape the Vertex-style answer.

``GET <predict_url>/stats`` answers this replica's counters (``stats_payload``) to callers
allowed to predict, or to the control plane's collector, which sends its cluster's Ray auth
token: the ingress only knows that token's sha256, so it checks it without a round trip.

Used by ``EndpointRouter`` (several deployed models, traffic split) and by a ``ModelServer``
that is its endpoint's only deployed model and so serves HTTP itself, one hop shorter.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from ray.util import metrics
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = [
    "AUTH_CACHE_SECONDS",
    "LATENCY_BOUNDARIES_MS",
    "MAX_BODY_BYTES",
    "Admitted",
    "IngressGuard",
    "error_response",
]

MAX_BODY_BYTES = 8 * 1024 * 1024
AUTH_CACHE_SECONDS = 10.0
LATENCY_BOUNDARIES_MS = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0]
_ACTIONS = ("predict", "rawPredict", "explain")


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


@dataclass(frozen=True)
class Admitted:
    """A request that passed the token check and parsed: what to run, on what."""

    action: str  # predict | rawPredict | explain
    instances: list[Any]
    parameters: dict[str, Any] | None
    started: float = field(default_factory=time.perf_counter)

    @property
    def method(self) -> str:
        return "explain" if self.action == "explain" else "predict"


@dataclass
class _Stats:
    model: str = ""
    requests: int = 0
    errors: int = 0
    latency_ms_total: float = 0.0
    by_code: dict[int, int] = field(default_factory=dict)
    # Requests per latency bucket: [i] ≤ LATENCY_BOUNDARIES_MS[i], the last one above them all.
    latency_buckets: list[int] = field(
        default_factory=lambda: [0] * (len(LATENCY_BOUNDARIES_MS) + 1)
    )


class IngressGuard:
    def __init__(
        self,
        endpoint_id: str,
        authorize_url: str,
        models: list[dict[str, Any]],
        project: str = "default",
        stats_token_sha256: str | None = None,
    ):
        self.endpoint_id = endpoint_id
        self.replica = uuid.uuid4().hex  # counters restart with the process: tell them apart
        self.stats_token_sha256 = stats_token_sha256
        self.authorize_url = authorize_url
        # The control plane checks the caller's permission in the endpoint's own project.
        self.authorize_headers = {"X-Raydeck-Project": project}
        self.models = {m["id"]: m for m in models}
        self.http = httpx.AsyncClient(timeout=10.0)
        self.allowed: dict[str, float] = {}  # sha256(header) → allowed until (monotonic)
        self.stats = {i: _Stats(model=str(m.get("model", ""))) for i, m in self.models.items()}
        tags = ("endpoint", "deployed_model", "code")
        self.request_counter = metrics.Counter(
            "raydeck_endpoint_requests", "Predict requests per deployed model.", tags
        )
        self.latency = metrics.Histogram(
            "raydeck_endpoint_latency_ms",
            "Predict latency per deployed model (ms).",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=("endpoint", "deployed_model"),
        )

    async def admit(self, request: Request) -> Admitted | Response:
        """The parsed request, or the response that ends it here (401/403/404/400, stats)."""
        action = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        collector = self.stats_allowed(request.headers.get("authorization", ""))
        if request.method == "GET" and action == "stats" and collector:
            return JSONResponse(self.stats_payload())
        denied = await self._authorized(request)
        if denied is not None:
            return denied
        if request.method == "GET" and action == "stats":
            return JSONResponse(self.stats_payload())
        if request.method != "POST" or action not in _ACTIONS:
            return error_response(404, "not_found", f"no route {request.method} {request.url.path}")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return error_response(400, "invalid_argument", f"body over {MAX_BODY_BYTES} bytes")
        try:
            payload = json.loads(body)
        except ValueError:
            return error_response(400, "invalid_argument", "request body is not valid JSON")
        if action == "rawPredict":
            payload = {"instances": payload if isinstance(payload, list) else [payload]}
        if not isinstance(payload, dict):
            return error_response(400, "invalid_argument", 'body must be {"instances": [...]}')
        instances, parameters = payload.get("instances"), payload.get("parameters")
        if not isinstance(instances, list) or not instances:
            return error_response(400, "invalid_argument", "instances must be a non-empty list")
        if parameters is not None and not isinstance(parameters, dict):
            return error_response(400, "invalid_argument", "parameters must be an object")
        return Admitted(action, instances, parameters)

    def answer(
        self, admitted: Admitted, deployed_model_id: str, outcome: dict[str, Any]
    ) -> Response:
        """Count the model's outcome and shape the response."""
        elapsed_ms = (time.perf_counter() - admitted.started) * 1000
        status = int(outcome["error"].pop("status", 500)) if "error" in outcome else 200
        self._count(deployed_model_id, status, elapsed_ms)
        if status != 200:
            return JSONResponse({"error": outcome["error"]}, status_code=status)
        if admitted.action == "rawPredict":
            return JSONResponse(outcome["predictions"])
        model = self.models[deployed_model_id]
        return JSONResponse(
            {
                **outcome,
                "deployed_model_id": deployed_model_id,
                "model": model["model"],
                "model_version_id": model["model_version_id"],
            }
        )

    def stats_allowed(self, authorization: str) -> bool:
        """True for the control plane's collector (its cluster's token, checked locally)."""
        scheme, _, secret = authorization.partition(" ")
        if not self.stats_token_sha256 or scheme.lower() != "bearer" or not secret:
            return False
        digest = hashlib.sha256(secret.strip().encode()).hexdigest()
        return hmac.compare_digest(digest, self.stats_token_sha256)

    def stats_payload(self) -> dict[str, Any]:
        """This replica's counters since it started, per deployed model."""
        return {
            "endpoint_id": self.endpoint_id,
            "replica": self.replica,
            "boundaries_ms": LATENCY_BOUNDARIES_MS,
            "models": {i: vars(s) for i, s in self.stats.items()},
        }

    async def _authorized(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return error_response(401, "unauthenticated", "missing bearer token")
        key = hashlib.sha256(header.encode()).hexdigest()
        if self.allowed.get(key, 0.0) > time.monotonic():
            return None
        try:
            answer = await self.http.get(
                self.authorize_url, headers={**self.authorize_headers, "Authorization": header}
            )
        except httpx.HTTPError:
            return error_response(
                503, "unavailable", "cannot verify the token with the control plane"
            )
        if answer.status_code in (401, 403):
            body = answer.json().get("error", {})
            code = "unauthenticated" if answer.status_code == 401 else "permission_denied"
            return error_response(answer.status_code, code, body.get("message", code))
        if not answer.is_success:
            return error_response(
                503, "unavailable", f"authorization failed: HTTP {answer.status_code}"
            )
        self.allowed[key] = time.monotonic() + AUTH_CACHE_SECONDS
        return None

    def _count(self, deployed_model_id: str, status: int, elapsed_ms: float) -> None:
        stats = self.stats[deployed_model_id]
        stats.requests += 1
        stats.errors += status >= 400
        stats.latency_ms_total += elapsed_ms
        stats.by_code[status] = stats.by_code.get(status, 0) + 1
        bucket = next(
            (i for i, bound in enumerate(LATENCY_BOUNDARIES_MS) if elapsed_ms <= bound),
            len(LATENCY_BOUNDARIES_MS),
        )
        stats.latency_buckets[bucket] += 1
        tags = {"endpoint": self.endpoint_id, "deployed_model": deployed_model_id}
        self.request_counter.inc(tags={**tags, "code": str(status)})
        self.latency.observe(elapsed_ms, tags=tags)
