"""XGBoost: a Booster in ``model.json`` / ``model.ubj`` / ``model.bst``, or a pickled model.

A model saved with the scikit-learn API (``XGBClassifier.save_model``) records its estimator
type in the file; it is loaded back as that estimator so ``predict`` returns class labels.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from raydeck.core.errors import InvalidArgumentError
from raydeck.runtime.predictors.base import (
    Explanation,
    Predictor,
    contribution_explanations,
    load_pickled,
)

__all__ = ["XGBoostPredictor"]

_ESTIMATORS: dict[str, type[xgb.XGBModel]] = {
    "classifier": xgb.XGBClassifier,
    "regressor": xgb.XGBRegressor,
    "ranker": xgb.XGBRanker,
}


class XGBoostPredictor(Predictor):
    framework = "xgboost"
    artifact_files = ("model.json", "model.ubj", "model.bst", "model.joblib", "model.pkl")
    parameter_names = frozenset({"probabilities", "output_margin"})
    accepts_missing = True

    def __init__(self) -> None:
        super().__init__()
        self.booster: xgb.Booster | None = None
        self.estimator: xgb.XGBModel | None = None

    def load(self, artifact_dir: Path) -> None:
        path = self.artifact_file(artifact_dir)
        if path.suffix in (".joblib", ".pkl"):
            model = load_pickled(path)
            if isinstance(model, xgb.XGBModel):
                self.estimator, booster = model, model.get_booster()
            elif isinstance(model, xgb.Booster):
                booster = model
            else:
                raise InvalidArgumentError(
                    f"{path.name} holds a {type(model).__name__}, not an XGBoost model",
                    field="artifact_uri",
                )
        else:
            booster = xgb.Booster()
            # From bytes, XGBoost detects JSON/UBJSON itself (".bst" names no format).
            booster.load_model(bytearray(path.read_bytes()) if path.suffix == ".bst" else str(path))
            estimator_cls = _ESTIMATORS.get(_estimator_type(booster) or "")
            if estimator_cls is not None:
                self.estimator = estimator_cls()
                self.estimator.load_model(bytearray(booster.save_raw("json")))
                booster = self.estimator.get_booster()
        self.booster = booster
        self.input_shape = (booster.num_features(),)
        self.feature_names = list(booster.feature_names) if booster.feature_names else None

    def predict(
        self, instances: Sequence[Any], parameters: dict[str, Any] | None = None
    ) -> list[Any]:
        assert self.booster is not None, "load() first"
        params = self.check_parameters(parameters)
        x = self.to_array(instances, np.float32)
        probabilities = self.flag(params, "probabilities")
        if self.flag(params, "output_margin"):
            out = self.booster.inplace_predict(x, predict_type="margin")
        elif isinstance(self.estimator, xgb.XGBClassifier):
            out = self.estimator.predict_proba(x) if probabilities else self.estimator.predict(x)
        elif probabilities:
            raise InvalidArgumentError(
                "only a model saved from XGBClassifier has class probabilities; a Booster "
                "already returns what its objective outputs",
                field="parameters.probabilities",
            )
        else:
            # inplace_predict: thread-safe and skips building a DMatrix.
            out = self.booster.inplace_predict(x)
        return list(np.asarray(out).tolist())

    def explain(
        self, instances: Sequence[Any], parameters: dict[str, Any] | None = None
    ) -> list[Explanation]:
        assert self.booster is not None, "load() first"
        self.check_parameters(parameters)
        x = self.to_array(instances, np.float32)
        matrix = xgb.DMatrix(x, feature_names=self.booster.feature_names, missing=np.nan)
        contributions = np.asarray(self.booster.predict(matrix, pred_contribs=True))
        return contribution_explanations(contributions, self.names(x.shape[1]))


def _estimator_type(booster: xgb.Booster) -> str | None:
    raw = booster.attr("scikit_learn")
    if not raw:
        return None
    try:
        info = json.loads(raw)
    except ValueError:
        return None
    kind = info.get("_estimator_type") if isinstance(info, dict) else None
    return kind if isinstance(kind, str) else None
