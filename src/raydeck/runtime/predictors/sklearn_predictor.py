"""scikit-learn: ``model.joblib`` or ``model.pkl`` (Vertex AI's prebuilt-container convention)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from raydeck.core.errors import FailedPreconditionError, InvalidArgumentError
from raydeck.runtime.predictors.base import BASELINE_KEY, Explanation, Predictor, load_pickled

__all__ = ["SklearnPredictor", "linear_explanations"]


def linear_explanations(
    coef: Any, intercept: Any, x: npt.NDArray[Any], names: list[str]
) -> list[Explanation]:
    """coef * x per feature plus the intercept; for several classes, the top-scoring one."""
    weights = np.atleast_2d(np.asarray(coef, dtype=np.float64))
    offsets = np.broadcast_to(
        np.atleast_1d(np.asarray(intercept, dtype=np.float64)), (len(weights),)
    )
    scores = x @ weights.T + offsets
    rows = np.zeros(len(x), dtype=int) if len(weights) == 1 else np.argmax(scores, axis=1)
    contributions = weights[rows] * x
    return [
        {**dict(zip(names, values.tolist(), strict=True)), BASELINE_KEY: float(offsets[r])}
        for values, r in zip(contributions, rows, strict=True)
    ]


class SklearnPredictor(Predictor):
    framework = "sklearn"
    artifact_files = ("model.joblib", "model.pkl")
    parameter_names = frozenset({"probabilities"})

    def __init__(self) -> None:
        super().__init__()
        self.model: Any = None

    def load(self, artifact_dir: Path) -> None:
        path = self.artifact_file(artifact_dir)
        model = load_pickled(path)
        if not callable(getattr(model, "predict", None)):
            raise InvalidArgumentError(
                f"{path.name} holds a {type(model).__name__}, not an estimator with predict()",
                field="artifact_uri",
            )
        try:
            check_is_fitted(model)
        except NotFittedError as exc:
            raise InvalidArgumentError(
                f"{path.name} holds an unfitted {type(model).__name__}; fit it before upload",
                field="artifact_uri",
            ) from exc
        except TypeError:  # not a scikit-learn estimator: duck-typed predict() is enough
            pass
        n_features = getattr(model, "n_features_in_", None)
        self.input_shape = (int(n_features),) if n_features is not None else None
        names = getattr(model, "feature_names_in_", None)
        self.feature_names = [str(n) for n in names] if names is not None else None
        self.model = model

    def _inputs(self, instances: Sequence[Any]) -> Any:
        x = self.to_array(instances)
        if self.feature_names:  # fitted on a DataFrame: keep names so sklearn does not warn
            import pandas as pd

            return pd.DataFrame(x, columns=self.feature_names)
        return x

    def predict(
        self, instances: Sequence[Any], parameters: dict[str, Any] | None = None
    ) -> list[Any]:
        params = self.check_parameters(parameters)
        x = self._inputs(instances)
        if self.flag(params, "probabilities"):
            if not hasattr(self.model, "predict_proba"):
                raise InvalidArgumentError(
                    f"a {type(self.model).__name__} has no class probabilities",
                    field="parameters.probabilities",
                )
            return list(np.asarray(self.model.predict_proba(x)).tolist())
        return list(np.asarray(self.model.predict(x)).tolist())

    def explain(
        self, instances: Sequence[Any], parameters: dict[str, Any] | None = None
    ) -> list[Explanation]:
        self.check_parameters(parameters)
        coef = getattr(self.model, "coef_", None)
        if coef is None:
            raise FailedPreconditionError(
                f"explain supports linear scikit-learn models; this is a "
                f"{type(self.model).__name__}",
                field="model",
            )
        x = self.to_array(instances)
        intercept = getattr(self.model, "intercept_", 0.0)
        return linear_explanations(coef, intercept, x, self.names(x.shape[1]))
