"""Serve application builder: ``import_path: raydeck.runtime.serving.app:build_app``.

``args`` (written by the control plane): endpoint_id, authorize_url, traffic_split and
deployed_models [{id, model, model_version_id, framework, artifact_uri, min_replica_count,
max_replica_count, num_cpus, num_gpus, memory, batching}].
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from raydeck.runtime.serving.model_server import ModelServer
from raydeck.runtime.serving.router import EndpointRouter

__all__ = ["build_app"]

# Replicas scale out when each has more than this many requests in flight.
TARGET_ONGOING_REQUESTS = 4


def _model_deployment(model: dict[str, Any]) -> Application:
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
    return ModelServer.options(  # type: ignore[attr-defined,no-any-return]  # serve.deployment wraps it
        name=f"model-{model['id']}",
        ray_actor_options=actor_options,
        max_ongoing_requests=64,
        **scaling,
    ).bind(model["framework"], model["artifact_uri"], model.get("batching"))


def build_app(args: dict[str, Any]) -> Application:
    models = list(args["deployed_models"])
    handles = [_model_deployment(model) for model in models]
    metadata = [
        {"id": m["id"], "model": m["model"], "model_version_id": m["model_version_id"]}
        for m in models
    ]
    return EndpointRouter.options(name="router").bind(  # type: ignore[attr-defined,no-any-return]  # serve.deployment wraps it
        args["endpoint_id"], metadata, handles, args["traffic_split"], args["authorize_url"]
    )
