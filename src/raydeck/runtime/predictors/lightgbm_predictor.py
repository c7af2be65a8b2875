"""LightGBM: a Booster in ``model.txt`` (what Ray Train's LightGBM callback writes), or a
pickled ``LGBMModel`` in ``model.joblib`` / ``model.pkl`` (keeps scikit-learn semantics)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from raydeck.core.errors import InvalidArgumentError
from raydeck.runtime.predictors.base import (
    Explanation,
    Predictor,
    contribution_explanations,
    load_pickled,
)

__all__ = ["LightGBMPredictor"]


class LightGBMPredictor(Predictor):
    framework = "lightgbm"
    artifact_files = ("model.txt", "model.joblib", "model.pkl")
    parameter_names = frozenset({"probabilities", "raw_score"})
    accepts_missing = True

    def __init__(self) -> None:
        super().__init__()
        self.booster: lgb.Booster | None = None
        self.estimator: lgb.LGBMModel | None = None

    def load(self, artifact_dir: Path) -> None:
        path = self.artifact_file(artifact_dir)
        if path.suffix == ".txt":
            booster = lgb.Booster(model_file=str(path))
        else:
            model = load_pickled(path)
            if isinstance(model, lgb.LGBMModel):
                self.estimator, booster = model, model.booster_
            elif isinstance(model, lgb.Booster):
                booster = model
            else:
                raise InvalidArgumentError(
                    f"{path.name} holds a {type(model).__name__}, not a LightGBM model",
                    field="artifact_uri",
                )
        self.booster = booster
        self.input_shape = (booster.num_feature(),)
        self.feature_names = list(booster.feature_name())

    def predict(
        self, instances: Sequence[Any], parameters: dict[str, Any] | None = None
    ) -> list[Any]:
        assert self.booster is not None, "load() first"
        params = self.check_parameters(parameters)
        x = self.to_array(instances)
        probabilities = self.flag(params, "probabilities")
        if self.flag(params, "raw_score"):
            out = self.booster.predict(x, raw_score=True)
        elif isinstance(self.estimator, lgb.LGBMClassifier):
            out = self.estimator.predict_proba(x) if probabilities else self.estimator.predict(x)
        elif probabilities:
            raise InvalidArgumentError(
                "only a pickled LGBMClassifier has class probabilities; a Booster already "
                "returns what its objective outputs",
                field="parameters.probabilities",
            )
        else:
            out = self.booster.predict(x)
        return list(np.asarray(out).tolist())

    def explain(
        self, instances: Sequence[Any], parameters: dict[str, Any] | None = None
    ) -> list[Explanation]:
        assert self.booster is not None, "load() first"
        self.check_parameters(parameters)
        x = self.to_array(instances)
        width = x.shape[1] + 1
        contributions = np.asarray(self.booster.predict(x, pred_contrib=True))
        if contributions.shape[1] > width:  # multiclass: (n, classes * (features + 1))
            contributions = contributions.reshape(len(x), -1, width)
        return contribution_explanations(contributions, self.names(x.shape[1]))
