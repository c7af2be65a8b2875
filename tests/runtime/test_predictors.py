"""Framework predictors on real, tiny models: same predictions as in-process, explain sums,
and bad input rejected with messages that name the instance and feature."""

from __future__ import annotations

import json
import pickle
import textwrap
from pathlib import Path
from typing import Any

import joblib
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import torch
import xgboost as xgb
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression

from raydeck.core.errors import FailedPreconditionError, InvalidArgumentError
from raydeck.runtime.predictors import BASELINE_KEY, load_predictor

X, Y = make_classification(
    n_samples=120, n_features=4, n_informative=3, n_redundant=1, random_state=0
)
X3 = X[:, :3]
Y3 = np.arange(len(X)) % 3
ROWS = X[:10].tolist()


def _dir(tmp_path: Path, name: str = "model") -> Path:
    directory = tmp_path / name
    directory.mkdir()
    return directory


# ---- scikit-learn ---------------------------------------------------------------------------


def test_sklearn_joblib_predict_and_probabilities(tmp_path: Path) -> None:
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, Y)
    joblib.dump(model, _dir(tmp_path) / "model.joblib")
    predictor = load_predictor("sklearn", tmp_path / "model")
    assert predictor.n_features == 4
    assert predictor.predict(ROWS) == model.predict(X[:10]).tolist()
    probabilities = predictor.predict(ROWS, {"probabilities": True})
    assert np.allclose(probabilities, model.predict_proba(X[:10]))
    with pytest.raises(FailedPreconditionError):
        predictor.explain(ROWS)  # a forest is not linear


def test_sklearn_pickle_with_string_labels(tmp_path: Path) -> None:
    labels = np.array(["no", "yes"])[Y]
    model = LogisticRegression().fit(X, labels)
    with (_dir(tmp_path) / "model.pkl").open("wb") as handle:
        pickle.dump(model, handle)
    predictor = load_predictor("sklearn", tmp_path / "model")
    assert predictor.predict(ROWS) == model.predict(X[:10]).tolist()
    assert set(predictor.predict(ROWS)) <= {"no", "yes"}


def test_sklearn_linear_explain_is_coef_times_x(tmp_path: Path) -> None:
    model = LogisticRegression().fit(X, Y)
    joblib.dump(model, _dir(tmp_path) / "model.joblib")
    explanations = load_predictor("sklearn", tmp_path / "model").explain(ROWS)
    assert isinstance(explanations[0], dict)
    assert set(explanations[0]) == {"f0", "f1", "f2", "f3", BASELINE_KEY}
    assert np.allclose(
        [[e[f"f{i}"] for i in range(4)] for e in explanations if isinstance(e, dict)],
        model.coef_[0] * X[:10],
    )
    sums = [sum(e.values()) for e in explanations if isinstance(e, dict)]
    assert np.allclose(sums, model.decision_function(X[:10]))


def test_sklearn_multiclass_explain_uses_the_top_class(tmp_path: Path) -> None:
    model = LogisticRegression(max_iter=500).fit(X3, Y3)
    joblib.dump(model, _dir(tmp_path) / "model.joblib")
    explanations = load_predictor("sklearn", tmp_path / "model").explain(X3[:6].tolist())
    scores = model.decision_function(X3[:6])
    sums = [sum(e.values()) for e in explanations if isinstance(e, dict)]
    assert np.allclose(sums, scores.max(axis=1))


def test_sklearn_feature_names_and_object_instances(tmp_path: Path) -> None:
    frame = pd.DataFrame(X, columns=["age", "tenure", "spend", "visits"])
    target = make_regression(n_samples=120, n_features=4, random_state=0)[1]
    model = LinearRegression().fit(frame, target)
    joblib.dump(model, _dir(tmp_path) / "model.joblib")
    predictor = load_predictor("sklearn", tmp_path / "model")
    assert predictor.feature_names == ["age", "tenure", "spend", "visits"]
    expected = model.predict(frame.iloc[:3])
    assert np.allclose(predictor.predict(X[:3].tolist()), expected)
    objects = frame.iloc[:3].to_dict(orient="records")
    assert np.allclose(predictor.predict(objects), expected)
    explanation = predictor.explain(X[:1].tolist())[0]
    assert isinstance(explanation, dict)
    assert list(explanation)[:4] == ["age", "tenure", "spend", "visits"]
    assert np.isclose(sum(explanation.values()), expected[0])
    with pytest.raises(InvalidArgumentError, match="lacks feature 'visits'"):
        predictor.predict([{"age": 1, "tenure": 2, "spend": 3}])


BAD_INSTANCES: list[tuple[Any, str, str]] = [
    ([], "instances must not be empty", "instances"),
    ("x", "instances must be a list", "instances"),
    ([[1, 2, 3]], "instance 0 has 3 features, the model expects 4", "instances[0]"),
    (
        [[1, 2, 3, 4]] * 3 + [[1, 2, 3, 4, 5]],
        "instance 3 has 5 features, the model expects 4",
        "instances[3]",
    ),
    ([[1, 2, 3, 4], [1, "a", 3, 4]], "instance 1, feature 1 is not a number: 'a'", "instances[1]"),
    ([[1, 2, 3, "4"]], "instance 0, feature 3 is not a number: '4'", "instances[0]"),
    ([[1, None, 3, 4]], "instance 0, feature 1 is null", "instances[0]"),
    ([[1, 2, 3, 4], 7], "instance 1 must be a list of numbers, got 7", "instances[1]"),
    ([1, 2, 3, 4], "instance 0 must be a list of numbers, got 1", "instances[0]"),
    ([{"a": 1}], "instance 0 is an object, but this model has no feature names", "instances[0]"),
    ([[float("nan"), 1, 2, 3]], "instance 0, feature 0 is missing (NaN)", "instances[0]"),
]


@pytest.mark.parametrize(("instances", "message", "field"), BAD_INSTANCES)
def test_bad_instances_are_named(tmp_path: Path, instances: Any, message: str, field: str) -> None:
    joblib.dump(LogisticRegression().fit(X, Y), _dir(tmp_path) / "model.joblib")
    predictor = load_predictor("sklearn", tmp_path / "model")
    with pytest.raises(InvalidArgumentError) as raised:
        predictor.predict(instances)
    assert message in raised.value.message
    assert raised.value.field == field


def test_bad_parameters_are_named(tmp_path: Path) -> None:
    joblib.dump(LinearRegression().fit(X, X[:, 0]), _dir(tmp_path) / "model.joblib")
    predictor = load_predictor("sklearn", tmp_path / "model")
    with pytest.raises(InvalidArgumentError) as unknown:
        predictor.predict(ROWS, {"temperature": 1})
    assert unknown.value.field == "parameters.temperature"
    with pytest.raises(InvalidArgumentError) as no_proba:
        predictor.predict(ROWS, {"probabilities": True})
    assert no_proba.value.field == "parameters.probabilities"
    with pytest.raises(InvalidArgumentError, match="true or false"):
        predictor.predict(ROWS, {"probabilities": "yes"})


def test_numpy_batches_take_the_fast_path(tmp_path: Path) -> None:
    model = LogisticRegression().fit(X, Y)
    joblib.dump(model, _dir(tmp_path) / "model.joblib")
    predictor = load_predictor("sklearn", tmp_path / "model")
    assert predictor.predict(X) == model.predict(X).tolist()
    with pytest.raises(InvalidArgumentError, match="non-numeric"):
        predictor.predict(np.array([["a", "b", "c", "d"]]))


# ---- XGBoost ------------------------------------------------------------------------------


@pytest.mark.parametrize("filename", ["model.json", "model.ubj", "model.bst"])
def test_xgboost_booster_files(tmp_path: Path, filename: str) -> None:
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(X, label=Y), 8
    )
    booster.save_model(_dir(tmp_path) / filename)
    predictor = load_predictor("xgboost", tmp_path / "model")
    assert np.allclose(predictor.predict(ROWS), booster.predict(xgb.DMatrix(X[:10])))
    margins = booster.predict(xgb.DMatrix(X[:10]), output_margin=True)
    assert np.allclose(predictor.predict(ROWS, {"output_margin": True}), margins)
    explanations = predictor.explain(ROWS)
    sums = [sum(e.values()) for e in explanations if isinstance(e, dict)]
    assert np.allclose(sums, margins, atol=1e-5)  # contributions + bias = margin
    with pytest.raises(InvalidArgumentError) as raised:
        predictor.predict(ROWS, {"probabilities": True})
    assert raised.value.field == "parameters.probabilities"


def test_xgboost_sklearn_api_keeps_labels_and_names(tmp_path: Path) -> None:
    frame = pd.DataFrame(X3, columns=["a", "b", "c"])
    model = xgb.XGBClassifier(n_estimators=6, max_depth=2).fit(frame, Y3)
    model.save_model(_dir(tmp_path) / "model.json")
    predictor = load_predictor("xgboost", tmp_path / "model")
    assert predictor.feature_names == ["a", "b", "c"]
    assert predictor.predict(X3[:8].tolist()) == model.predict(frame.iloc[:8]).tolist()
    proba = predictor.predict(X3[:8].tolist(), {"probabilities": True})
    assert np.allclose(proba, model.predict_proba(frame.iloc[:8]))
    explanation = predictor.explain(X3[:8].tolist())
    margins = model.get_booster().predict(xgb.DMatrix(frame.iloc[:8]), output_margin=True)
    sums = [sum(e.values()) for e in explanation if isinstance(e, dict)]
    assert np.allclose(sums, margins.max(axis=1), atol=1e-5)  # the top class's margin
    assert set(explanation[0]) == {"a", "b", "c", BASELINE_KEY}


def test_xgboost_pickled_model_and_missing_values(tmp_path: Path) -> None:
    model = xgb.XGBRegressor(n_estimators=5).fit(X, X[:, 0] * 2)
    joblib.dump(model, _dir(tmp_path) / "model.joblib")
    predictor = load_predictor("xgboost", tmp_path / "model")
    rows = [[None, 1.0, 2.0, 3.0], [0.5, 1.0, 2.0, 3.0]]
    expected = model.predict(np.array([[np.nan, 1, 2, 3], [0.5, 1, 2, 3]], dtype=np.float32))
    assert np.allclose(predictor.predict(rows), expected)
    with pytest.raises(
        InvalidArgumentError, match="instance 0 has 3 features, the model expects 4"
    ):
        predictor.predict([[1, 2, 3]])


# ---- LightGBM -----------------------------------------------------------------------------


def test_lightgbm_booster_predict_and_contributions(tmp_path: Path) -> None:
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 4}, lgb.Dataset(X, Y), 10
    )
    booster.save_model(str(_dir(tmp_path) / "model.txt"))
    predictor = load_predictor("lightgbm", tmp_path / "model")
    assert np.allclose(predictor.predict(ROWS), booster.predict(X[:10]))
    raw = booster.predict(X[:10], raw_score=True)
    assert np.allclose(predictor.predict(ROWS, {"raw_score": True}), raw)
    sums = [sum(e.values()) for e in predictor.explain(ROWS) if isinstance(e, dict)]
    assert np.allclose(sums, raw)
    with pytest.raises(InvalidArgumentError, match="instance 1, feature 2 is not a number"):
        predictor.predict([[1, 2, 3, 4], [1, 2, "x", 4]])


def test_lightgbm_multiclass_and_pickled_classifier(tmp_path: Path) -> None:
    model = lgb.LGBMClassifier(n_estimators=5, verbose=-1).fit(X3, np.array(["a", "b", "c"])[Y3])
    joblib.dump(model, _dir(tmp_path) / "model.joblib")
    predictor = load_predictor("lightgbm", tmp_path / "model")
    assert predictor.predict(X3[:9].tolist()) == model.predict(X3[:9]).tolist()
    proba = predictor.predict(X3[:9].tolist(), {"probabilities": True})
    assert np.allclose(proba, model.predict_proba(X3[:9]))
    raw = model.booster_.predict(X3[:9], raw_score=True)
    sums = [sum(e.values()) for e in predictor.explain(X3[:9].tolist()) if isinstance(e, dict)]
    assert np.allclose(sums, raw.max(axis=1))


# ---- PyTorch ------------------------------------------------------------------------------


def _torch_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def test_pytorch_torchscript(tmp_path: Path) -> None:
    model = _torch_model().eval()
    torch.jit.save(torch.jit.script(model), str(_dir(tmp_path) / "model.pt"))
    predictor = load_predictor("pytorch", tmp_path / "model")
    assert predictor.input_shape == (4,)
    with torch.no_grad():
        expected = model(torch.tensor(X[:10], dtype=torch.float32)).numpy()
    assert np.allclose(predictor.predict(ROWS), expected, atol=1e-6)
    with pytest.raises(
        InvalidArgumentError, match="instance 0 has 3 features, the model expects 4"
    ):
        predictor.predict([[1, 2, 3]])


class TwoHeads(torch.nn.Module):
    """Registers its output layer first: no input shape can be guessed from the layers."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(8, 1)
        self.body = torch.nn.Linear(4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


def test_pytorch_pickled_module_and_shape_errors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TwoHeads().eval()
    torch.save(model, _dir(tmp_path) / "model.pth")
    predictor = load_predictor("pytorch", tmp_path / "model")
    assert predictor.input_shape is None
    with torch.no_grad():
        expected = model(torch.tensor(X[:5], dtype=torch.float32)).numpy()
    assert np.allclose(predictor.predict(X[:5].tolist()), expected, atol=1e-6)
    with pytest.raises(InvalidArgumentError, match="the model rejected the input"):
        predictor.predict([[1.0, 2.0, 3.0]])


def test_pytorch_state_dict_is_not_a_model(tmp_path: Path) -> None:
    torch.save(_torch_model().state_dict(), _dir(tmp_path) / "model.pth")
    with pytest.raises(InvalidArgumentError, match="state dict") as raised:
        load_predictor("pytorch", tmp_path / "model")
    assert raised.value.field == "artifact_uri"


# ---- custom -------------------------------------------------------------------------------


def _custom_artifact(directory: Path, body: str, config: Any = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "predictor.py").write_text(textwrap.dedent(body))
    (directory / "raydeck_predictor.json").write_text(
        json.dumps(config or {"class": "predictor:Doubler"})
    )


def test_custom_predictor(tmp_path: Path) -> None:
    _custom_artifact(
        tmp_path / "a",
        """
        import json
        from helpers import factor

        class Doubler:
            def load(self, artifact_dir):
                self.offset = json.loads((artifact_dir / "offset.json").read_text())

            def predict(self, instances, parameters):
                scale = parameters.get("scale", 1)
                return [factor() * scale * x + self.offset for x in instances]
        """,
    )
    (tmp_path / "a" / "helpers.py").write_text("def factor():\n    return 2\n")
    (tmp_path / "a" / "offset.json").write_text("1")
    predictor = load_predictor("custom", tmp_path / "a")
    assert predictor.predict([1, 2, 3]) == [3, 5, 7]
    assert predictor.predict([1], {"scale": 10}) == [21]
    with pytest.raises(InvalidArgumentError, match="non-empty"):
        predictor.predict([])
    with pytest.raises(FailedPreconditionError):
        predictor.explain([1])
    # A second artifact with its own predictor.py does not collide with the first.
    _custom_artifact(
        tmp_path / "b",
        "class Doubler:\n    def predict(self, instances):\n        return [0] * len(instances)\n",
    )
    assert load_predictor("custom", tmp_path / "b").predict([5]) == [0]
    assert predictor.predict([1]) == [3]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"class": "predictor"}, "module:ClassName"),
        ({"class": "missing:Doubler"}, "missing.py"),
        ({"class": "predictor:Nope"}, "no class 'Nope'"),
    ],
)
def test_custom_predictor_bad_config(tmp_path: Path, config: Any, message: str) -> None:
    _custom_artifact(tmp_path / "a", "class Doubler:\n    pass\n", config)
    with pytest.raises(InvalidArgumentError, match=message) as raised:
        load_predictor("custom", tmp_path / "a")
    assert raised.value.field == "artifact_uri"


# ---- loading ------------------------------------------------------------------------------


def test_load_errors_name_artifact_uri_or_framework(tmp_path: Path) -> None:
    (_dir(tmp_path) / "model.txt").write_text("garbage")
    with pytest.raises(InvalidArgumentError, match="cannot load the lightgbm model") as corrupt:
        load_predictor("lightgbm", tmp_path / "model")
    assert corrupt.value.field == "artifact_uri"
    assert str(tmp_path) not in corrupt.value.message
    with pytest.raises(InvalidArgumentError, match=r"needs one of model\.joblib, model\.pkl"):
        load_predictor("sklearn", tmp_path / "model")
    with pytest.raises(InvalidArgumentError) as unknown:
        load_predictor("caffe", tmp_path / "model")
    assert unknown.value.field == "framework"
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        load_predictor("sklearn", tmp_path / "absent")
