"""One Serve deployment per deployed model: loads the predictor once per replica."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ray import serve

from raydeck.core.errors import RaydeckError
from raydeck.runtime.artifacts import get_tree, is_local, local_path
from raydeck.runtime.predictors import load_predictor
from raydeck.runtime.predictors.base import first_line

__all__ = ["ModelServer", "Outcome"]

# What a replica answers: {"predictions": [...]} or {"error": {code, message, status}}.
# Errors travel as data, so a model that raises fails its request, never the replica.
Outcome = dict[str, Any]


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
    def __init__(self, framework: str, artifact_uri: str, batching: dict[str, Any] | None) -> None:
        if is_local(artifact_uri):
            directory = local_path(artifact_uri)
        else:  # object-store artifacts are fetched once per replica
            directory = Path(tempfile.mkdtemp(prefix="raydeck-model-"))
            get_tree(artifact_uri, directory)
        self.predictor = load_predictor(framework, directory)
        self.batching = batching is not None
        if batching is not None:
            batched: Any = self.predict_batched  # serve.batch adds the setters at runtime
            batched.set_max_batch_size(int(batching["max_batch_size"]))
            batched.set_batch_wait_timeout_s(float(batching["batch_wait_timeout_s"]))

    def _run(self, method: str, instances: list[Any], parameters: dict[str, Any] | None) -> Outcome:
        try:
            if method == "explain":
                return {"explanations": self.predictor.explain(instances, parameters)}
            return {"predictions": self.predictor.predict(instances, parameters)}
        except Exception as exc:  # reported to this request's caller only
            return _error(exc)

    async def predict(
        self, instances: list[Any], parameters: dict[str, Any] | None = None
    ) -> Outcome:
        if self.batching and not parameters:
            return await self.predict_batched(instances)
        return self._run("predict", instances, parameters)

    async def explain(
        self, instances: list[Any], parameters: dict[str, Any] | None = None
    ) -> Outcome:
        return self._run("explain", instances, parameters)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def predict_batched(self, requests: list[list[Any]]) -> list[Outcome]:
        """Concatenate the instances of concurrent requests into one vectorized call."""
        flat = [instance for request in requests for instance in request]
        outcome = self._run("predict", flat, None)
        if "error" in outcome:  # one bad request must not fail its batch-mates
            return [self._run("predict", request, None) for request in requests]
        results, start = [], 0
        for request in requests:
            results.append({"predictions": outcome["predictions"][start : start + len(request)]})
            start += len(request)
        return results
