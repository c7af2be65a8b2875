"""Small fitted models as registry artifacts, for tests that upload and deploy them."""

from __future__ import annotations

from pathlib import Path

import joblib
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

__all__ = ["sklearn_model_dir"]


def sklearn_model_dir(root: Path, seed: int) -> Path:
    """``root/m<seed>/model.joblib``: a LogisticRegression over 4 features, seeded."""
    X, y = make_classification(60, 4, random_state=seed)
    directory = root / f"m{seed}"
    directory.mkdir()
    joblib.dump(LogisticRegression().fit(X, y), directory / "model.joblib")
    return directory
