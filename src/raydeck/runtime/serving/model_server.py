"""One Serve deployment per deployed model: loads the predictor once per replica.

When it is its endpoint's only deployed model it is also the application's ingress (``ingress``
args given): it checks tokens and answers HTTP itself, sparing every request the router hop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from raydeck.core.errors import RaydeckError
from raydeck.runtime.artifacts import get_tree, is_local, local_path
from raydeck.runtime.predictors import load_predictor
from raydeck.runtime.predictors.base import first_line
from raydeck.runtime.serving.ingress import IngressGuard, error_response

__all__ = ["ModelServer", "Outcome"]

# What a replica answers: {"predictions": [...]} or {"error": {code, message, status}}.
# Errors travel as data, so a model that raises fails its request, never the replica.
Outcome = dict[str, Any]

# Serve writes this logger to the replica's log file (logs/serve/replica_<endpoint id>_...),
# which the control plane collects as the endpoint's logs: predict errors are found there.
log = logging.getLogger("ray.serve")

# Models whose calls average less than this run on the replica's event loop, others on the
# model thread; the average moves with every call (weight of the newest call below).
INLINE_BELOW_SECONDS = 0.002
TYPICAL_WEIGHT = 0.2


def _error(exc: BaseException) -> Outcome:
    if isinstance(exc, RaydeckError):
        return {"error": {**exc.to_payload(), "status": exc.http_status}}
    return {
        "error": {
            "code": "internal",
            "message": f"the model raised {type(exc).__name__}: {first_line(exc)}",
            "status": 500,
        }
    }


@serve.deployment
class ModelServer:
    def __init__(
        self,
        framework: str,
        artifact_uri: str,
        batching: dict[str, Any] | None,
        ingress: dict[str, Any] | None = None,
    ) -> None:
        if is_local(artifact_uri):
            directory = local_path(artifact_uri)
        else:  # object-store artifacts are fetched once per replica
            directory = Path(tempfile.mkdtemp(prefix="raydeck-model-"))
            get_tree(artifact_uri, directory)
        self.predictor = load_predictor(framework, directory)
        # A slow model runs on one thread of its own: the replica's event loop (where Serve's
        # throughput mode runs request handling) stays free for health checks and queue-length
        # probes while it computes. A fast one runs on the loop itself, as a hand-written Serve
        # app would: the hand-off to a thread costs more than its predict. Either way one call
        # at a time: predictors never see concurrent calls.
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.calls_in_thread = 0
        self.typical_seconds = math.inf  # moving average of the model's own time per call
        self.batching = batching is not None
        self.guard: IngressGuard | None = None
        if ingress is not None:  # {endpoint_id, authorize_url, project, model: {id, ...}}
            self.deployed_model_id = ingress["model"]["id"]
            self.guard = IngressGuard(
                ingress["endpoint_id"],
                ingress["authorize_url"],
                [ingress["model"]],
                ingress.get("project", "default"),
                ingress.get("stats_token_sha256"),
            )
        if batching is not None:
            batched: Any = self.predict_batched  # serve.batch adds the setters at runtime
            batched.set_max_batch_size(int(batching["max_batch_size"]))
            batched.set_batch_wait_timeout_s(float(batching["batch_wait_timeout_s"]))

    def _run(self, method: str, instances: list[Any], parameters: dict[str, Any] | None) -> Outcome:
        try:
            if method == "explain":
                return {"explanations": self.predictor.explain(instances, parameters)}
            return {"predictions": self.predictor.predict(instances, parameters)}
        except RaydeckError as exc:  # the request's fault (bad instances): no traceback
            log.warning("%s refused: %s", method, exc.message)
            return _error(exc)
        except Exception as exc:  # reported to this request's caller, traceback logged here
            # Formatted here, not with exc_info: Serve replaces print() in replicas with one
            # that writes print_exception's lines as tuple reprs on a single line (Ray 2.60).
            trace = "".join(traceback.format_exception(exc)).rstrip()
            log.error("%s failed: the model raised %s\n%s", method, type(exc).__name__, trace)
            return _error(exc)

    async def __call__(self, request: Request) -> Response:
        if self.guard is None:  # behind a router, HTTP never reaches this deployment
            return error_response(404, "not_found", "not an ingress")
        admitted = await self.guard.admit(request)
        if isinstance(admitted, Response):
            return admitted
        run = self.explain if admitted.method == "explain" else self.predict
        outcome = await run(admitted.instances, admitted.parameters)
        return self.guard.answer(admitted, self.deployed_model_id, outcome)

    def _timed_run(
        self, method: str, instances: list[Any], parameters: dict[str, Any] | None
    ) -> Outcome:
        begin = time.perf_counter()
        try:
            return self._run(method, instances, parameters)
        finally:
            elapsed = time.perf_counter() - begin
            if math.isinf(self.typical_seconds):
                self.typical_seconds = elapsed
            else:
                self.typical_seconds += (elapsed - self.typical_seconds) * TYPICAL_WEIGHT

    async def _call_model(
        self, method: str, instances: list[Any], parameters: dict[str, Any] | None
    ) -> Outcome:
        if self.calls_in_thread == 0 and self.typical_seconds < INLINE_BELOW_SECONDS:
            return self._timed_run(method, instances, parameters)
        self.calls_in_thread += 1  # later calls queue behind it on the thread
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self.model_thread, self._timed_run, method, instances, parameters
            )
        finally:
            self.calls_in_thread -= 1

    async def predict(
        self, instances: list[Any], parameters: dict[str, Any] | None = None
    ) -> Outcome:
        if self.batching and not parameters:
            return await self.predict_batched(instances)
        return await self._call_model("predict", instances, parameters)

    async def explain(
        self, instances: list[Any], parameters: dict[str, Any] | None = None
    ) -> Outcome:
        return await self._call_model("explain", instances, parameters)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def predict_batched(self, requests: list[list[Any]]) -> list[Outcome]:
        """Concatenate the instances of concurrent requests into one vectorized call."""
        flat = [instance for request in requests for instance in request]
        outcome = await self._call_model("predict", flat, None)
        if "error" in outcome:  # one bad request must not fail its batch-mates
            return [await self._call_model("predict", r, None) for r in requests]
        results, start = [], 0
        for request in requests:
            results.append({"predictions": outcome["predictions"][start : start + len(request)]})
            start += len(request)
        return results
