"""Serve application builder: ``import_path: raydeck.runtime.serving.app:build_app``.

``args`` (written by the control plane): endpoint_id, authorize_url, project (absent for
"default"), stats_token_sha256 (optional), traffic_split and deployed_models [{id, model,
model_version_id, framework, artifact_uri, min_replica_count, max_replica_count, num_cpus,
num_gpus, memory, batching}].
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from raydeck.runtime.serving.model_server import ModelServer
from raydeck.runtime.serving.router import EndpointRouter

__all__ = ["build_app"]

# Replicas scale out when each has more than this many requests in flight.
TARGET_ONGOING_REQUESTS = 4
# Ingresses mostly await (model handles, or the model thread); a low cap (Serve's default is
# 5) would queue requests in the proxy and starve dynamic batching of requests to merge.
ROUTER_MAX_ONGOING_REQUESTS = 256


def _model_deployment(model: dict[str, Any], ingress: dict[str, Any] | None = None) -> Application:
    actor_options: dict[str, Any] = {"num_cpus": model["num_cpus"], "num_gpus": model["num_gpus"]}
    if model.get("memory"):
        actor_options["memory"] = model["memory"]
    low, high = model["min_replica_count"], model["max_replica_count"]
    scaling: dict[str, Any] = (
        {"num_replicas": low}
        if low == high
        else {
            "autoscaling_config": {
                "min_replicas": low,
                "max_replicas": high,
                "target_ongoing_requests": TARGET_ONGOING_REQUESTS,
            }
        }
    )
    server: Any = ModelServer  # serve.deployment wraps the class; mypy sees the class
    return server.options(  # type: ignore[no-any-return]
        name=f"model-{model['id']}",
        ray_actor_options=actor_options,
        max_ongoing_requests=ROUTER_MAX_ONGOING_REQUESTS if ingress else 64,
        **scaling,
    ).bind(model["framework"], model["artifact_uri"], model.get("batching"), ingress)


def build_app(args: dict[str, Any]) -> Application:
    models = list(args["deployed_models"])
    metadata = [
        {"id": m["id"], "model": m["model"], "model_version_id": m["model_version_id"]}
        for m in models
    ]
    if len(models) == 1 and args["traffic_split"].get(models[0]["id"], 0) == 100:
        # One model takes all traffic: it is the ingress itself, one hop shorter.
        ingress = {
            "endpoint_id": args["endpoint_id"],
            "authorize_url": args["authorize_url"],
            "project": args.get("project", "default"),
            "stats_token_sha256": args.get("stats_token_sha256"),
            "model": metadata[0],
        }
        return _model_deployment(models[0], ingress)
    handles = [_model_deployment(model) for model in models]
    router: Any = EndpointRouter  # serve.deployment wraps the class; mypy sees the class
    return router.options(  # type: ignore[no-any-return]
        name="router", max_ongoing_requests=ROUTER_MAX_ONGOING_REQUESTS
    ).bind(
        args["endpoint_id"],
        metadata,
        handles,
        args["traffic_split"],
        args["authorize_url"],
        args.get("project", "default"),
        args.get("stats_token_sha256"),
    )
