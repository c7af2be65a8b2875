"""``raydeck.report(metric=value, step=n)``: the hypertune file convention.

Each call appends one JSON line to the file named by ``CLOUD_ML_HP_METRIC_FILE`` (the
reference platform's ``hypertune`` helper writes the same shape there:
``{"global_step": "10", "accuracy": "0.93", "timestamp": ..., "trial": "3"}``), so code
written for ``hypertune.HyperTune().report_hyperparameter_tuning_metric`` works unchanged
and the two can be mixed. The replica runner next to the process forwards new lines to
the control plane and stops the process when the tuner prunes the trial.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

__all__ = [
    "DEFAULT_METRIC_FILE",
    "RESERVED_KEYS",
    "parse_metric_line",
    "report",
]

DEFAULT_METRIC_FILE = "/tmp/hypertune/output.metrics"
RESERVED_KEYS = frozenset({"timestamp", "trial", "global_step", "checkpoint_path"})


def report(step: int | None = None, **metrics: float) -> None:
    """Record metric values (e.g. ``report(loss=0.3, accuracy=0.9, step=5)``)."""
    if not metrics:
        raise ValueError("report() needs at least one metric, e.g. report(loss=0.3)")
    line: dict[str, Any] = {name: str(float(value)) for name, value in metrics.items()}
    if step is not None:
        line["global_step"] = str(int(step))
    line["timestamp"] = time.time()
    line["trial"] = os.environ.get("CLOUD_ML_TRIAL_ID", "0")
    path = os.environ.get("CLOUD_ML_HP_METRIC_FILE", DEFAULT_METRIC_FILE)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


def parse_metric_line(text: str) -> list[dict[str, Any]]:
    """Metric points of one line: [{"metric", "value", "step", "time"}]; [] if unreadable."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    step: int | None = None
    try:
        if data.get("global_step") not in (None, ""):
            step = int(float(data["global_step"]))
    except (TypeError, ValueError):
        step = None
    stamp = data.get("timestamp")
    points = []
    for key, raw in data.items():
        if key in RESERVED_KEYS:
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            continue
        points.append({"metric": str(key)[:128], "value": value, "step": step, "timestamp": stamp})
    return points
