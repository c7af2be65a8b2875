"""The ingress of an endpoint with several deployed models: routes each request by weight."""

from __future__ import annotations

import random
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import Response

from raydeck.runtime.serving.ingress import IngressGuard, error_response

__all__ = ["EndpointRouter"]


@serve.deployment(ray_actor_options={"num_cpus": 0})
class EndpointRouter:
    def __init__(
        self,
        endpoint_id: str,
        deployed_models: list[dict[str, Any]],
        handles: list[DeploymentHandle[Any]],
        traffic_split: dict[str, int],
        authorize_url: str,
        project: str = "default",
        stats_token_sha256: str | None = None,
    ) -> None:
        self.guard = IngressGuard(
            endpoint_id, authorize_url, deployed_models, project, stats_token_sha256
        )
        self.handles = {m["id"]: h for m, h in zip(deployed_models, handles, strict=True)}
        weighted = [(i, w) for i, w in traffic_split.items() if w > 0 and i in self.handles]
        self.choices = [i for i, _ in weighted]
        self.weights = [w for _, w in weighted]

    async def __call__(self, request: Request) -> Response:
        admitted = await self.guard.admit(request)
        if isinstance(admitted, Response):
            return admitted
        if not self.choices:
            return error_response(412, "failed_precondition", "no model receives traffic")
        chosen = random.choices(self.choices, self.weights)[0]
        handle = getattr(self.handles[chosen], admitted.method)
        outcome: dict[str, Any] = await handle.remote(admitted.instances, admitted.parameters)
        return self.guard.answer(admitted, chosen, outcome)
