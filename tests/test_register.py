"""raydeck.models: register fitted estimators and real Ray Train checkpoints, then predict
through the registered artifact and compare with the trained model."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import joblib
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import torch
import xgboost as xgb
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import raydeck.models
from raydeck.core.errors import InvalidArgumentError
from raydeck.runtime.predictors import load_predictor
from tests.conftest import Api

X, Y = make_classification(
    n_samples=200, n_features=4, n_informative=3, n_redundant=1, random_state=1
)
FRAME = pd.DataFrame(X, columns=["x0", "x1", "x2", "x3"]).assign(y=Y)


def test_import_is_light() -> None:
    code = (
        "import sys, raydeck.models; "
        "print(sorted(m for m in ('ray', 'torch', 'sklearn', 'xgboost') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_register_sklearn_pipeline(static_api: Api) -> None:
    model = make_pipeline(StandardScaler(), GradientBoostingClassifier(n_estimators=5)).fit(X, Y)
    version = raydeck.models.register_model(model, "pipe", client=static_api.sdk())
    assert (version.framework.value, version.version_id) == ("sklearn", "1")
    assert (Path(version.artifact_uri) / "model.joblib").is_file()
    predictor = load_predictor("sklearn", version.artifact_uri)
    assert predictor.predict(X[:20].tolist()) == model.predict(X[:20]).tolist()


def test_register_xgboost_booster_and_classifier(static_api: Api) -> None:
    sdk = static_api.sdk()
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(X, label=Y), 4)
    first = raydeck.models.register_model(booster, "xgb", client=sdk, aliases=["prod"])
    served = load_predictor(first.framework.value, first.artifact_uri).predict(X[:20].tolist())
    assert np.allclose(served, booster.inplace_predict(X[:20]))
    classifier = xgb.XGBClassifier(n_estimators=4).fit(X, Y)
    second = raydeck.models.register_model(classifier, "xgb", parent_model="xgb", client=sdk)
    assert (second.version_id, second.aliases) == ("2", ["default"])
    labels = load_predictor("xgboost", second.artifact_uri).predict(X[:20].tolist())
    assert labels == classifier.predict(X[:20]).tolist()


def test_register_lightgbm_and_torch(static_api: Api) -> None:
    sdk = static_api.sdk()
    classifier = lgb.LGBMClassifier(n_estimators=4, verbose=-1).fit(X, np.array(["a", "b"])[Y])
    version = raydeck.models.register_model(classifier, "lgbm", client=sdk)
    served = load_predictor("lightgbm", version.artifact_uri).predict(X[:10].tolist())
    assert served == classifier.predict(X[:10]).tolist()

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    version = raydeck.models.register_model(net, "net", client=sdk)
    assert (Path(version.artifact_uri) / "model.pt").is_file()
    with torch.no_grad():
        expected = net(torch.tensor(X[:10], dtype=torch.float32)).numpy()
    served = load_predictor("pytorch", version.artifact_uri).predict(X[:10].tolist())
    assert np.allclose(served, expected, atol=1e-6)


def test_register_refuses_what_it_cannot_tell(static_api: Api) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        raydeck.models.register_model(object(), "x", client=static_api.sdk())
    assert raised.value.field == "framework"
    with pytest.raises(InvalidArgumentError):
        raydeck.models.register_model(X, "x", framework="xgboost", client=static_api.sdk())
    assert static_api.sdk().models.list().items == []


# ---- Ray Train checkpoints (real Ray) -------------------------------------------------------


@pytest.fixture
def ray_session(local_ray: None, tmp_path: Path) -> Path:
    """Ray in this process (tests/ray_fixtures.py) and a directory for Ray Train's storage."""
    storage = tmp_path / "ray-train"
    storage.mkdir()
    return storage


def _xgboost_train_fn(config: dict[str, Any]) -> None:
    import ray.train
    from ray.train.xgboost import RayTrainReportCallback

    frame = ray.train.get_dataset_shard("train").materialize().to_pandas()
    matrix = xgb.DMatrix(frame.drop(columns="y"), label=frame["y"])
    xgb.train(
        {"objective": "binary:logistic", "max_depth": 3},
        matrix,
        num_boost_round=6,
        callbacks=[RayTrainReportCallback()],
    )


@pytest.mark.ray
def test_register_from_xgboost_trainer_checkpoint(static_api: Api, ray_session: Path) -> None:
    import ray.data
    from ray.train import RunConfig, ScalingConfig
    from ray.train.xgboost import RayTrainReportCallback, XGBoostTrainer

    trainer = XGBoostTrainer(
        _xgboost_train_fn,
        scaling_config=ScalingConfig(num_workers=1),
        datasets={"train": ray.data.from_pandas(FRAME)},
        run_config=RunConfig(storage_path=str(ray_session), name="xgb"),
    )
    result = trainer.fit()
    assert result.checkpoint is not None
    version = raydeck.models.register_from_checkpoint(
        result.checkpoint, "xgboost", "ray-xgb", client=static_api.sdk()
    )
    trained = RayTrainReportCallback.get_model(result.checkpoint)
    predictor = load_predictor("xgboost", version.artifact_uri)
    assert predictor.feature_names == ["x0", "x1", "x2", "x3"]
    expected = trained.inplace_predict(FRAME.drop(columns="y").iloc[:25])
    assert np.allclose(predictor.predict(X[:25].tolist()), expected)
    contributions = predictor.explain(X[:5].tolist())
    margins = trained.predict(xgb.DMatrix(FRAME.drop(columns="y").iloc[:5]), output_margin=True)
    assert np.allclose([sum(c.values()) for c in contributions if isinstance(c, dict)], margins)


class TinyNet(torch.nn.Module):
    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.body = torch.nn.Linear(4, hidden)
        self.head = torch.nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(torch.relu(self.body(x))))


def _torch_train_fn(config: dict[str, Any]) -> None:
    import os

    import ray.train
    import ray.train.torch

    torch.manual_seed(0)
    model = ray.train.torch.prepare_model(TinyNet(hidden=config["hidden"]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs = torch.tensor(X, dtype=torch.float32)
    targets = torch.tensor(Y, dtype=torch.float32).unsqueeze(1)
    for _ in range(20):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()
    with tempfile.TemporaryDirectory() as directory:
        state = {"epoch": 20, "model_state_dict": model.state_dict()}
        torch.save(state, os.path.join(directory, "model.pt"))
        checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report({"loss": float(loss)}, checkpoint=checkpoint)


@pytest.mark.ray
def test_register_from_torch_trainer_checkpoint(static_api: Api, ray_session: Path) -> None:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        _torch_train_fn,
        train_loop_config={"hidden": 6},
        scaling_config=ScalingConfig(num_workers=1),
        run_config=RunConfig(storage_path=str(ray_session), name="torch"),
    )
    result = trainer.fit()
    assert result.checkpoint is not None
    with pytest.raises(InvalidArgumentError) as missing:
        raydeck.models.register_from_checkpoint(
            result.checkpoint, "pytorch", "ray-torch", client=static_api.sdk()
        )
    assert missing.value.field == "model_class"
    version = raydeck.models.register_from_checkpoint(
        result.checkpoint,
        "pytorch",
        "ray-torch",
        model_class=TinyNet,
        model_kwargs={"hidden": 6},
        client=static_api.sdk(),
    )
    assert (Path(version.artifact_uri) / "model.pt").is_file()
    with result.checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / "model.pt", weights_only=True)["model_state_dict"]
    trained = TinyNet(hidden=6)
    trained.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    with torch.no_grad():
        expected = trained.eval()(torch.tensor(X[:25], dtype=torch.float32)).numpy()
    served = load_predictor("pytorch", version.artifact_uri).predict(X[:25].tolist())
    assert np.allclose(served, expected, atol=1e-6)


def test_register_from_lightgbm_style_checkpoint(static_api: Api, tmp_path: Path) -> None:
    """The file Ray Train's LightGBM callback writes (model.txt), read through its own API."""
    from ray.train import Checkpoint

    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, Y), 5)
    booster.save_model(str(tmp_path / "model.txt"))
    version = raydeck.models.register_from_checkpoint(
        Checkpoint.from_directory(tmp_path), "lightgbm", "ray-lgbm", client=static_api.sdk()
    )
    served = load_predictor("lightgbm", version.artifact_uri).predict(X[:10].tolist())
    assert np.allclose(served, booster.predict(X[:10]))
    joblib.dump(booster, tmp_path / "unused.joblib")  # extra files in a checkpoint are ignored
    with pytest.raises(InvalidArgumentError) as raised:
        raydeck.models.register_from_checkpoint(
            Checkpoint.from_directory(tmp_path), "xgboost", "wrong", client=static_api.sdk()
        )
    assert raised.value.field == "checkpoint"
