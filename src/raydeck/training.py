"""Helpers for training code run by a CustomJob.

    from raydeck.training import scaling_config
    trainer = XGBoostTrainer(..., scaling_config=scaling_config())

``scaling_config()`` turns the job's codeless worker pools (its Ray Train worker pools) into
a Ray Train ``ScalingConfig``: one worker per replica, each with its pool's resources.
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["scaling_config", "train_workers"]


def train_workers() -> dict[str, Any]:
    """{"num_workers", "resources_per_worker", "use_gpu"} from RAYDECK_TRAIN_WORKERS."""
    data = json.loads(os.environ.get("RAYDECK_TRAIN_WORKERS") or "{}")
    return data if isinstance(data, dict) else {}


def scaling_config(default_workers: int = 1) -> Any:
    from ray.train import ScalingConfig

    workers = train_workers()
    count = int(workers.get("num_workers") or 0)
    if count == 0:
        return ScalingConfig(num_workers=default_workers)
    resources = dict(workers.get("resources_per_worker") or {})
    resources.pop("GPU", None)  # given through use_gpu
    return ScalingConfig(
        num_workers=count,
        use_gpu=bool(workers.get("use_gpu")),
        resources_per_worker=resources or None,
    )
