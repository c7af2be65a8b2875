"""`raydeck models` against a real server process: upload, alias, versions, delete."""

from __future__ import annotations

from pathlib import Path

import joblib
from sklearn.linear_model import LogisticRegression

from tests.cli.test_cli import assert_one_line_error, raydeck
from tests.ray_fixtures import LiveServer


def _artifact(directory: Path) -> Path:
    directory.mkdir()
    model = LogisticRegression().fit([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]], [0, 1, 1])
    joblib.dump(model, directory / "model.joblib")
    return directory


def test_models_lifecycle(live_server: LiveServer, tmp_path: Path) -> None:
    env = live_server.client_env()
    artifact = str(_artifact(tmp_path / "m"))

    def ok(*args: str) -> str:
        result = raydeck(env, "models", *args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "cli-churn@1" in ok(
        "upload", "cli-churn", "-f", "sklearn", "-a", artifact, "--alias", "prod"
    )
    second = ok("upload", "cli-churn", "-f", "sklearn", "-a", artifact, "--parent", "cli-churn")
    assert "cli-churn@2" in second and "default" in second
    assert "cli-churn" in ok("list")
    assert "cli-churn@1" in ok("get", "cli-churn@prod")
    assert "2 version(s), default @2" in ok("get", "cli-churn")
    listed = ok("versions", "cli-churn")
    assert "default" in listed and "prod" in listed
    ok("alias", "cli-churn@2", "prod")
    assert "cli-churn@2" in ok("get", "cli-churn@prod")
    ok("alias", "cli-churn@1", "default")
    assert "deleted" in ok("delete", "cli-churn@2")
    assert_one_line_error(raydeck(env, "models", "get", "cli-churn@2"), "not_found")
    assert "deleted" in ok("delete", "cli-churn")
    assert_one_line_error(raydeck(env, "models", "get", "cli-churn"), "not_found", "cli-churn")


def test_models_errors_are_one_line(live_server: LiveServer, tmp_path: Path) -> None:
    env = live_server.client_env()
    artifact = str(_artifact(tmp_path / "m"))
    missing = raydeck(env, "models", "upload", "x", "-f", "sklearn", "-a", "/no/such/dir")
    assert_one_line_error(missing, "invalid_argument", "does not exist")
    unknown = raydeck(env, "models", "upload", "x", "-f", "caffe", "-a", artifact)
    assert_one_line_error(unknown, "caffe")
    wrong = raydeck(env, "models", "upload", "x", "-f", "xgboost", "-a", artifact)
    assert_one_line_error(wrong, "invalid_argument", "not an XGBoost model")
    assert_one_line_error(raydeck(env, "models", "delete", "ghost@1"), "not_found")
