"""A CustomJob's training code: ``python -m trainer.task --epochs=N``.

Every replica runs it with the reference platform's environment (``CLUSTER_SPEC``,
``AIP_MODEL_DIR``, ...); the chief (workerpool0) reports a loss per epoch and saves the
model to ``AIP_MODEL_DIR``, which a training pipeline then registers.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import joblib
from sklearn.datasets import make_classification
from sklearn.linear_model import SGDClassifier

import raydeck


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    spec = json.loads(os.environ.get("CLUSTER_SPEC", "{}"))
    task = spec.get("task", {})
    print(f"replica {task.get('type')}-{task.get('index')} of {sorted(spec.get('cluster', {}))}")
    if task.get("type", "workerpool0") != "workerpool0":
        return  # the other replicas would train their shard here
    x, y = make_classification(n_samples=500, n_features=4, random_state=0)
    model = SGDClassifier(loss="log_loss", random_state=0)
    for epoch in range(args.epochs):
        model.partial_fit(x, y, classes=[0, 1])
        raydeck.report(loss=1.0 - model.score(x, y), step=epoch)
    out = Path(os.environ.get("AIP_MODEL_DIR", "model"))
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out / "model.joblib")
    print(f"saved the model to {out}")


if __name__ == "__main__":
    main()
