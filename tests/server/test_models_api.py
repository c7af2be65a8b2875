"""Model registry API: versions, aliases, paging, artifacts, and bad input (in-process app)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import fsspec
import joblib
import numpy as np
import pytest
import xgboost as xgb
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from raydeck.core.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from raydeck.runtime.artifacts import tree_digest
from raydeck.runtime.predictors import load_predictor
from raydeck.server.services import deployments
from raydeck.server.services import models as model_service
from tests.conftest import Api

X, Y = make_classification(n_samples=60, n_features=4, random_state=0)


@pytest.fixture(autouse=True)
def _sources_under_tmp_path_allowed(static_api: Api, tmp_path: Path) -> None:
    """These tests upload from directories under tmp_path (the server's home is in there
    too, and stays refused): an admin's RAYDECK_ALLOWED_ROOTS."""
    static_api.settings.allowed_roots = f"{tmp_path},memory://src"


def _sklearn_dir(root: Path, name: str = "sk", c: float = 1.0) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    joblib.dump(LogisticRegression(C=c).fit(X, Y), directory / "model.joblib")
    return directory


def _xgboost_dir(root: Path, name: str = "xgb") -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(X, label=Y), num_boost_round=3)
    booster.save_model(directory / "model.json")
    return directory


def _upload(api: Api, body: dict[str, Any], role: str = "admin") -> Any:
    return api.http.post("/api/v1/models", json=body, headers=api.headers(role))


def _stored_dirs(api: Api) -> list[Path]:
    root = api.settings.home / "artifacts" / "models"
    return sorted(p for p in root.glob("*/*")) if root.exists() else []


def test_versions_get_ids_and_default_moves_to_newest(static_api: Api, tmp_path: Path) -> None:
    sdk = static_api.sdk()
    first = _sklearn_dir(tmp_path, "a")
    response = _upload(
        static_api,
        {"display_name": "churn", "framework": "sklearn", "artifact_uri": str(first)},
    )
    assert response.status_code == 201, response.text
    v1 = response.json()
    assert (v1["version_id"], v1["aliases"], v1["source_uri"]) == ("1", ["default"], str(first))
    v2 = sdk.models.upload("churn", _sklearn_dir(tmp_path, "b", c=0.1), "sklearn",
                           parent_model="churn")  # fmt: skip
    assert v2.version_id == "2"
    assert v2.aliases == ["default"]
    assert sdk.models.get_version("churn@1").aliases == []
    assert sdk.models.get_version("churn").version_id == "2"
    model = sdk.models.get("churn")
    assert (model.version_count, model.default_version_id, model.latest_version_id) == (2, "2", "2")
    assert sdk.models.get(model.id).display_name == "churn"  # by id as well as by name
    # The registry holds its own copy, named by model id and version, with a content digest.
    stored = Path(v2.artifact_uri)
    assert stored == static_api.settings.home / "artifacts" / "models" / model.id / "2"
    assert (stored / "model.joblib").is_file()
    assert (v2.sha256, v2.size_bytes) == tree_digest(stored)
    predictor = load_predictor("sklearn", stored)
    assert (
        predictor.predict(X[:5].tolist())
        == LogisticRegression(C=0.1).fit(X, Y).predict(X[:5]).tolist()
    )


def test_aliases_move_and_default_is_never_dropped(static_api: Api, tmp_path: Path) -> None:
    sdk = static_api.sdk()
    sdk.models.upload("m", _sklearn_dir(tmp_path, "a"), "sklearn", aliases=["prod"])
    sdk.models.upload("m", _sklearn_dir(tmp_path, "b"), "sklearn", parent_model="m")
    assert sdk.models.get_version("m@prod").version_id == "1"
    moved = sdk.models.add_alias("m@2", "prod")
    assert moved.aliases == ["default", "prod"]
    assert sdk.models.get_version("m@1").aliases == []
    response = static_api.http.get("/api/v1/models/m/versions/prod", headers=static_api.headers())
    assert response.json()["version_id"] == "2"

    with pytest.raises(InvalidArgumentError) as raised:
        sdk.models.set_aliases("m@2", ["prod"])  # would drop default
    assert raised.value.field == "aliases"
    with pytest.raises(InvalidArgumentError):
        sdk.models.remove_alias("m@2", "default")
    assert sdk.models.get_version("m@2").aliases == ["default", "prod"]

    sdk.models.set_aliases("m@1", ["default", "canary"])  # default moves; canary is new
    assert sdk.models.get_version("m@2").aliases == ["prod"]
    assert sdk.models.get("m").default_version_id == "1"
    # A later upload takes default unless it says otherwise.
    v3 = sdk.models.upload(
        "m", _sklearn_dir(tmp_path, "c"), "sklearn", parent_model="m", is_default_version=False
    )
    assert v3.aliases == []
    assert sdk.models.get_version("m").version_id == "1"
    sdk.models.upload("m", _sklearn_dir(tmp_path, "d"), "sklearn", parent_model="m")
    assert sdk.models.get_version("m").version_id == "4"
    assert sdk.models.remove_alias("m@prod", "prod").aliases == []
    with pytest.raises(NotFoundError):
        sdk.models.get_version("m@prod")
    updated = sdk.models.update_version("m@1", labels={"stage": "old"}, description="first")
    assert (updated.labels, updated.description) == ({"stage": "old"}, "first")
    assert [v.version_id for v in sdk.models.versions("m", label="stage=old").items] == ["1"]


def test_list_pages_and_filters(static_api: Api, tmp_path: Path) -> None:
    sdk = static_api.sdk()
    for i in range(5):
        source = _xgboost_dir(tmp_path, f"x{i}") if i % 2 else _sklearn_dir(tmp_path, f"s{i}")
        sdk.models.upload(
            f"m{i}",
            source,
            "xgboost" if i % 2 else "sklearn",
            labels={"team": "a" if i < 3 else "b"},
        )
    names: list[str] = []
    token = None
    while True:
        page = sdk.models.list(page_size=2, page_token=token)
        names += [m.display_name for m in page.items]
        token = page.next_page_token
        if token is None:
            break
    assert names == ["m0", "m1", "m2", "m3", "m4"]
    assert [m.display_name for m in sdk.models.list(label="team=b").items] == ["m3", "m4"]
    assert [m.display_name for m in sdk.models.list(framework="xgboost").items] == ["m1", "m3"]
    assert [m.display_name for m in sdk.models.list(display_name="m2").items] == ["m2"]
    assert sdk.models.list(label="team=c").items == []
    m1 = sdk.models.list(display_name="m1").items[0]
    assert m1.frameworks == ["xgboost"]
    sdk.models.upload("m1", _sklearn_dir(tmp_path, "m1b"), "sklearn", parent_model="m1")
    assert [m.display_name for m in sdk.models.list(framework="sklearn").items] == [
        "m0",
        "m1",
        "m2",
        "m4",
    ]
    versions = sdk.models.versions("m1", page_size=1)
    assert [v.version_id for v in versions.items] == ["1"]
    assert versions.next_page_token is not None
    rest = sdk.models.versions("m1", page_token=versions.next_page_token)
    assert [(v.version_id, v.framework.value) for v in rest.items] == [("2", "sklearn")]
    with pytest.raises(InvalidArgumentError) as raised:
        sdk.models.list(label="team")
    assert raised.value.field == "label"


BAD_UPLOADS: list[tuple[dict[str, Any], str]] = [
    ({"framework": "caffe"}, "framework"),
    ({"artifact_uri": "/no/such/dir"}, "artifact_uri"),
    ({"artifact_uri": "relative/dir"}, "artifact_uri"),
    ({"artifact_uri": "memory://nowhere/at-all"}, "artifact_uri"),
    ({"artifact_uri": "nosuchscheme://x/y"}, "artifact_uri"),
    ({"artifact_uri": None}, "artifact_uri"),
    ({"framework": "xgboost"}, "artifact_uri"),  # no model.json/.ubj/.bst in the directory
    ({"display_name": "Bad_Name"}, "display_name"),
    ({"display_name": None}, "display_name"),
    ({"version_aliases": ["prod", "prod"]}, "version_aliases"),
    ({"version_aliases": ["1st"]}, "version_aliases[0]"),
    ({"version_aliases": ["default"], "is_default_version": False}, "version_aliases"),
    ({"labels": {"k": "v" * 100}}, "labels.k"),
    ({"colour": "red"}, "colour"),
]


@pytest.mark.parametrize(("change", "field"), BAD_UPLOADS)
def test_bad_upload_names_the_field_and_stores_nothing(
    static_api: Api, tmp_path: Path, change: dict[str, Any], field: str
) -> None:
    body = {
        "display_name": "m",
        "framework": "sklearn",
        "artifact_uri": str(_sklearn_dir(tmp_path)),
    }
    body = {k: v for k, v in {**body, **change}.items() if v is not None}
    response = _upload(static_api, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_argument", field)
    assert "Traceback" not in response.text
    assert static_api.sdk().models.list().items == []
    assert _stored_dirs(static_api) == []


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"not a pickle", "model.joblib is not a joblib file"), (b"", "model.joblib is empty")],
    ids=["garbage", "empty"],
)
def test_corrupt_model_file_is_refused(
    static_api: Api, tmp_path: Path, content: bytes, problem: str
) -> None:
    directory = tmp_path / "corrupt"
    directory.mkdir()
    (directory / "model.joblib").write_bytes(content)
    body = {"display_name": "m", "framework": "sklearn", "artifact_uri": str(directory)}
    response = _upload(static_api, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == "artifact_uri"
    assert problem in response.json()["error"]["message"]
    assert str(static_api.settings.home) not in response.text  # no server paths leak
    assert static_api.sdk().models.list().items == []
    staging = static_api.settings.home / "artifacts" / ".staging"
    assert not staging.exists() or list(staging.iterdir()) == []


def test_unfitted_estimator_is_registered_and_fails_where_it_is_loaded(
    static_api: Api, tmp_path: Path
) -> None:
    """A well-formed pickle is not loaded by the server (that would run the uploader's code
    there): it is registered, and refused by the predictor where it runs (a Serve replica or
    batch worker, see tests/e2e/test_endpoints.py for the endpoint's FAILED state)."""
    directory = tmp_path / "unfitted"
    directory.mkdir()
    joblib.dump(LogisticRegression(), directory / "model.joblib")
    body = {"display_name": "m", "framework": "sklearn", "artifact_uri": str(directory)}
    response = _upload(static_api, body)
    assert response.status_code == 201, response.text
    with pytest.raises(InvalidArgumentError) as raised:
        load_predictor("sklearn", response.json()["artifact_uri"])
    assert "unfitted" in raised.value.message


def test_bad_new_versions_keep_the_model_as_it_was(static_api: Api, tmp_path: Path) -> None:
    sdk = static_api.sdk()
    sdk.models.upload("m", _sklearn_dir(tmp_path, "a"), "sklearn", aliases=["prod"])
    source = str(_sklearn_dir(tmp_path, "b"))
    with pytest.raises(AlreadyExistsError) as exists:
        sdk.models.upload("m", source, "sklearn")  # same name, no parent_model
    assert exists.value.field == "display_name"
    with pytest.raises(AlreadyExistsError) as taken:
        sdk.models.upload(None, source, "sklearn", parent_model="m", aliases=["prod"])
    assert taken.value.field == "version_aliases"
    with pytest.raises(InvalidArgumentError) as mismatch:
        sdk.models.upload("other", source, "sklearn", parent_model="m")
    assert mismatch.value.field == "display_name"
    with pytest.raises(NotFoundError) as missing:
        sdk.models.upload(None, source, "sklearn", parent_model="ghost")
    assert missing.value.field == "parent_model"
    with pytest.raises(InvalidArgumentError):
        sdk.models.upload(None, str(tmp_path / "nope"), "sklearn", parent_model="m")
    model = sdk.models.get("m")
    assert (model.version_count, model.default_version_id) == (1, "1")
    assert sdk.models.get_version("m@prod").version_id == "1"
    assert len(_stored_dirs(static_api)) == 1
    # Version numbers are not consumed by failed uploads.
    assert sdk.models.upload(None, source, "sklearn", parent_model="m").version_id == "2"


def test_delete_version_and_model_remove_artifacts(static_api: Api, tmp_path: Path) -> None:
    sdk = static_api.sdk()
    v1 = sdk.models.upload("m", _sklearn_dir(tmp_path, "a"), "sklearn")
    v2 = sdk.models.upload("m", _xgboost_dir(tmp_path, "b"), "xgboost", parent_model="m")
    with pytest.raises(FailedPreconditionError):
        sdk.models.delete_version("m@2")  # holds default
    sdk.models.add_alias("m@1", "default")
    deleted = sdk.models.delete_version("m@2")
    assert deleted.id == v2.id
    assert not Path(v2.artifact_uri).exists()
    assert Path(v1.artifact_uri).exists()
    with pytest.raises(NotFoundError):
        sdk.models.get_version("m@2")
    with pytest.raises(FailedPreconditionError):
        sdk.models.delete_version("m@1")  # the only version: delete the model instead
    # Numbers are never reused: m@2 keeps meaning the deleted artifact.
    v3 = sdk.models.upload(None, _sklearn_dir(tmp_path, "c"), "sklearn", parent_model="m")
    assert v3.version_id == "3"
    sdk.models.delete("m")
    with pytest.raises(NotFoundError):
        sdk.models.get("m")
    assert _stored_dirs(static_api) == []
    assert not (static_api.settings.home / "artifacts" / "models" / v1.model_id).exists()


def test_delete_refused_while_deployed(
    static_api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sdk = static_api.sdk()
    sdk.models.upload("m", _sklearn_dir(tmp_path, "a"), "sklearn")
    v2 = sdk.models.upload("m", _sklearn_dir(tmp_path, "b"), "sklearn", parent_model="m")
    sdk.models.add_alias("m@1", "default")
    monkeypatch.setattr(deployments, "deployed_version_ids", lambda _session: {v2.id})
    with pytest.raises(FailedPreconditionError) as raised:
        sdk.models.delete_version("m@2")
    assert "deployed" in raised.value.message
    with pytest.raises(FailedPreconditionError):
        sdk.models.delete("m")
    assert Path(v2.artifact_uri).is_dir()
    assert sdk.models.get("m").version_count == 2
    monkeypatch.setattr(deployments, "deployed_version_ids", lambda _session: set())
    sdk.models.delete_version("m@2")
    assert not Path(v2.artifact_uri).exists()


def test_sdk_uploads_a_local_directory_as_multipart(static_api: Api, tmp_path: Path) -> None:
    sdk = static_api.sdk()
    source = _xgboost_dir(tmp_path, "remote")
    version = sdk.models.upload("remote", source, "xgboost", labels={"team": "a"})
    assert (version.source_uri, version.labels) == ("upload", {"team": "a"})
    assert (version.sha256, version.size_bytes) == tree_digest(source)
    expected = xgb.Booster(model_file=str(source / "model.json")).inplace_predict(X[:4])
    served = load_predictor("xgboost", version.artifact_uri).predict(X[:4].tolist())
    assert np.allclose(served, expected)
    # A .tar.gz of a directory (one top-level folder) works too.
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname="mymodel")
    assert sdk.models.upload(None, archive, "xgboost", parent_model="remote").version_id == "2"


def test_multipart_bad_input(static_api: Api, tmp_path: Path) -> None:
    def post(metadata: str, content: bytes) -> Any:
        return static_api.http.post(
            "/api/v1/models:upload",
            data={"metadata": metadata},
            files={"artifact": ("a.tar.gz", io.BytesIO(content), "application/gzip")},
            headers=static_api.headers(),
        )

    good = io.BytesIO()
    with tarfile.open(fileobj=good, mode="w:gz") as tar:
        tar.add(_sklearn_dir(tmp_path) / "model.joblib", arcname="model.joblib")
    meta = '{"display_name": "m", "framework": "sklearn"}'
    cases = [
        (post(meta, b"not a tarball"), "artifact"),
        (post("{not json", good.getvalue()), "metadata"),
        (post('{"display_name": "Bad!", "framework": "sklearn"}', good.getvalue()), "display_name"),
        (post('{"display_name": "m", "framework": "sklearn", "artifact_uri": "/x"}', b""),
         "artifact_uri"),
    ]  # fmt: skip
    for response, field in cases:
        assert response.status_code == 400, response.text
        assert response.json()["error"]["field"] == field
    missing = static_api.http.post(
        "/api/v1/models:upload", data={"metadata": meta}, headers=static_api.headers()
    )
    assert missing.status_code == 400
    assert missing.json()["error"]["field"] == "artifact"
    assert static_api.sdk().models.list().items == []
    assert post(meta, good.getvalue()).status_code == 201


def test_tarball_cannot_escape_the_staging_directory(static_api: Api, tmp_path: Path) -> None:
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    response = static_api.http.post(
        "/api/v1/models:upload",
        data={"metadata": '{"display_name": "m", "framework": "sklearn"}'},
        files={"artifact": ("a.tar.gz", io.BytesIO(evil.getvalue()), "application/gzip")},
        headers=static_api.headers(),
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "artifact"
    assert not list(static_api.settings.home.rglob("escaped.txt"))


def test_fsspec_source_and_store(static_api: Api, tmp_path: Path) -> None:
    memory = fsspec.filesystem("memory")
    source = _sklearn_dir(tmp_path)
    memory.put_file(str(source / "model.joblib"), "/src/churn/model.joblib")
    static_api.app.state.raydeck.settings.artifact_store = "memory://store/"
    try:
        version = static_api.sdk().models.upload("churn", "memory://src/churn", "sklearn")
        assert version.artifact_uri == f"memory://store/models/{version.model_id}/1"
        assert memory.exists(f"/store/models/{version.model_id}/1/model.joblib")
        assert version.sha256 == tree_digest(source)[0]
        static_api.sdk().models.delete("churn")
        assert not memory.exists(f"/store/models/{version.model_id}/1")
    finally:
        memory.rm("/src", recursive=True)
        if memory.exists("/store"):
            memory.rm("/store", recursive=True)


def test_resolve_version_for_endpoints(static_api: Api, tmp_path: Path) -> None:
    sdk = static_api.sdk()
    v1 = sdk.models.upload("m", _sklearn_dir(tmp_path, "a"), "sklearn", aliases=["prod"])
    v2 = sdk.models.upload("m", _sklearn_dir(tmp_path, "b"), "sklearn", parent_model="m")
    with static_api.app.state.raydeck.db.session() as session:
        assert model_service.resolve_version(session, "m@prod").id == v1.id
        assert model_service.resolve_version(session, "m@1").id == v1.id
        assert model_service.resolve_version(session, "m").id == v2.id
        assert model_service.resolve_version(session, v1.id).version_id == "1"
        with pytest.raises(NotFoundError):
            model_service.resolve_version(session, "m@staging")


def test_update_model_metadata(static_api: Api, tmp_path: Path) -> None:
    sdk = static_api.sdk()
    sdk.models.upload("m", _sklearn_dir(tmp_path), "sklearn", labels={"team": "a"})
    updated = sdk.models.update("m", description="churn model", labels={"team": "b"})
    assert (updated.description, updated.labels) == ("churn model", {"team": "b"})
    response = static_api.http.patch("/api/v1/models/m", json={}, headers=static_api.headers())
    assert response.status_code == 400
    response = static_api.http.patch(
        "/api/v1/models/m/versions/1", json={"aliases": ["Prod"]}, headers=static_api.headers()
    )
    assert response.json()["error"]["field"] == "aliases[0]"


def test_upload_needs_permission_and_token(static_api: Api, tmp_path: Path) -> None:
    body = {
        "display_name": "m",
        "framework": "sklearn",
        "artifact_uri": str(_sklearn_dir(tmp_path)),
    }
    assert _upload(static_api, body, role="viewer").status_code == 403
    assert static_api.http.post("/api/v1/models", json=body).status_code == 401
    with pytest.raises(Exception) as raised:
        static_api.sdk("viewer").models.upload("m", _sklearn_dir(tmp_path, "x"), "sklearn")
    assert type(raised.value).__name__ == "PermissionDeniedError"
    assert static_api.sdk("viewer").models.list().items == []
    assert _upload(static_api, body, role="user").status_code == 201
