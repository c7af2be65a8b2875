"""Static checks of uploaded model artifacts (in-process app): what each framework's layout and
format magic allows, link and size limits, and that nothing is stored when a check fails.
The server never loads a model; these checks are all it does with the files."""

from __future__ import annotations

import ast
import io
import os
import pickle
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import lightgbm as lgb
import numpy as np
import pytest
import torch
import xgboost as xgb
from sklearn.linear_model import LogisticRegression

import raydeck
from raydeck.runtime.predictors import available_frameworks, predictor_class
from raydeck.server.services.model_artifacts import first_global, model_files
from tests.conftest import Api
from tests.model_artifacts import exploit_pickle

X = np.random.default_rng(0).random((40, 3))
Y = (X[:, 0] > 0.5).astype(int)

Writer = Callable[[Path], None]


def _linear() -> LogisticRegression:
    return LogisticRegression().fit(X, Y)


def _torchscript(path: Path) -> None:
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Linear(3, 1))), str(path))


def _booster() -> xgb.Booster:
    return xgb.train({"max_depth": 2}, xgb.DMatrix(X, label=Y), num_boost_round=2)


def _custom(source: str, manifest: str = '{"class": "predictor:Model"}') -> Writer:
    def write(directory: Path) -> None:
        (directory / "raydeck_predictor.json").write_text(manifest)
        if source:
            (directory / "predictor.py").write_text(source)

    return write


def _pickled(name: str, make: Callable[[], Any], **options: Any) -> Writer:
    def write(directory: Path) -> None:
        if name.endswith(".joblib"):
            joblib.dump(make(), directory / name, **options)
        else:
            (directory / name).write_bytes(pickle.dumps(make(), **options))

    return write


def _saved(name: str, make: Callable[[], Any]) -> Writer:
    return lambda directory: make().save_model(directory / name)


def _text(name: str, data: str | bytes) -> Writer:
    def write(directory: Path) -> None:
        if isinstance(data, bytes):
            (directory / name).write_bytes(data)
        else:
            (directory / name).write_text(data)

    return write


def _xgb_classifier() -> xgb.XGBClassifier:
    return xgb.XGBClassifier(n_estimators=2).fit(X, Y)


def _lgb_booster() -> lgb.Booster:
    return lgb.train({"verbose": -1}, lgb.Dataset(X, label=Y), 2)


def _lgb_classifier() -> lgb.LGBMClassifier:
    return lgb.LGBMClassifier(n_estimators=2, verbose=-1).fit(X, Y)


def _torch_saved(name: str) -> Writer:
    return lambda directory: torch.save(torch.nn.Linear(3, 1), directory / name)


PREDICTOR = "class Model:\n    def predict(self, instances):\n        return instances\n"
GOOD: list[tuple[str, Writer]] = [
    ("sklearn", _pickled("model.joblib", _linear)),
    ("sklearn", _pickled("model.joblib", _linear, compress=3)),
    ("sklearn", _pickled("model.pkl", _linear)),
    ("xgboost", _saved("model.json", _booster)),
    ("xgboost", _saved("model.ubj", _booster)),
    ("xgboost", _saved("model.bst", _booster)),
    ("xgboost", _pickled("model.joblib", _xgb_classifier)),
    ("lightgbm", _saved("model.txt", _lgb_booster)),
    ("lightgbm", _pickled("model.pkl", _lgb_classifier)),
    ("pytorch", lambda d: _torchscript(d / "model.pt")),
    ("pytorch", _torch_saved("model.pth")),
    ("custom", _custom(PREDICTOR)),
    ("custom", _custom("from impl import Model\n")),
    ("custom", _custom("try:\n    from impl import Model\nexcept ImportError:\n    Model = 1\n")),
]

SKLEARN_CLASS = "sklearn.linear_model._logistic.LogisticRegression"
BAD: list[tuple[str, Writer, str]] = [
    ("sklearn", _text("model.pkl", pickle.dumps(_linear())[:-40]), "model.pkl is not a complete"),
    ("sklearn", _pickled("model.pkl", _linear, protocol=0), "model.pkl is not a complete pickle"),
    ("sklearn", _text("weights.bin", "x"), "needs one of model.joblib"),
    ("xgboost", _text("model.json", "{not json"), "model.json is not valid JSON"),
    ("xgboost", _text("model.json", '{"trees": []}'), "no 'learner' object"),
    ("xgboost", _text("model.ubj", b"\x00garbage"), "model.ubj is not an XGBoost"),
    ("xgboost", _pickled("model.joblib", _linear), f"holds a {SKLEARN_CLASS}, not an XGBoost"),
    ("lightgbm", _pickled("model.pkl", _booster), "holds a xgboost.core.Booster, not a LightGBM"),
    ("lightgbm", _text("model.txt", "hello\n"), "model.txt is not a LightGBM"),
    ("pytorch", _torch_saved("model.pt"), "model.pt is not TorchScript"),
    ("pytorch", _text("model.pt", b"PK\x03\x04broken"), "model.pt is not a"),
    ("custom", _custom("", manifest="{"), "raydeck_predictor.json: not valid JSON"),
    ("custom", _custom("", manifest='{"class": "os.system"}'), '{"class": "module:ClassName"}'),
    ("custom", _custom(""), "module 'predictor' needs predictor.py in the artifact"),
    ("custom", _custom("class Model(:\n"), "predictor.py, line 1"),
    ("custom", _custom("class Other:\n    pass\n"), "predictor.py defines no class 'Model'"),
    ("custom", _custom("x = '\x00'"), "predictor.py"),
]


def _post(api: Api, framework: str, directory: Path) -> Any:
    body = {"display_name": "m", "framework": framework, "artifact_uri": str(directory)}
    return api.http.post("/api/v1/models", json=body, headers=api.headers())


def _nothing_stored(api: Api) -> None:
    assert api.sdk().models.list().items == []
    root = api.settings.home / "artifacts"
    assert not (root / "models").exists() or not list((root / "models").iterdir())
    assert not (root / ".staging").exists() or not list((root / ".staging").iterdir())


@pytest.mark.parametrize(("framework", "write"), GOOD)
def test_each_framework_layout_is_accepted(
    static_api: Api, tmp_path: Path, framework: str, write: Writer
) -> None:
    directory = tmp_path / "artifact"
    directory.mkdir()
    write(directory)
    response = _post(static_api, framework, directory)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(("framework", "write", "problem"), BAD)
def test_bad_layout_or_magic_names_the_file_and_stores_nothing(
    static_api: Api, tmp_path: Path, framework: str, write: Writer, problem: str
) -> None:
    directory = tmp_path / "artifact"
    directory.mkdir()
    write(directory)
    response = _post(static_api, framework, directory)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_argument", "artifact_uri")
    assert problem in error["message"]
    assert str(tmp_path) not in error["message"]
    _nothing_stored(static_api)


def test_links_leaving_the_artifact_are_refused(static_api: Api, tmp_path: Path) -> None:
    secret = tmp_path / "secret.key"
    secret.write_text("s3cr3t")
    directory = tmp_path / "artifact"
    directory.mkdir()
    joblib.dump(_linear(), directory / "model.joblib")
    os.symlink(secret, directory / "notes.txt")
    response = _post(static_api, "sklearn", directory)
    assert response.status_code == 400, response.text
    assert "notes.txt is a link to something outside the artifact" in response.text
    # A link to a file inside the artifact is kept.
    (directory / "notes.txt").unlink()
    (directory / "real.txt").write_text("notes")
    os.symlink("real.txt", directory / "notes.txt")
    assert _post(static_api, "sklearn", directory).status_code == 201


def _tarball(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _upload_tarball(api: Api, archive: bytes, framework: str = "sklearn") -> Any:
    return api.http.post(
        "/api/v1/models:upload",
        data={"metadata": f'{{"display_name": "m", "framework": "{framework}"}}'},
        files={"artifact": ("a.tar.gz", io.BytesIO(archive), "application/gzip")},
        headers=api.headers(),
    )


def test_archive_members_are_checked_before_extraction(static_api: Api, tmp_path: Path) -> None:
    model = pickle.dumps(_linear())
    link = tarfile.TarInfo("model.pkl")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/hostname"
    device = tarfile.TarInfo("null")
    device.type = tarfile.CHRTYPE
    hard = tarfile.TarInfo("model.pkl")
    hard.type, hard.linkname = tarfile.LNKTYPE, "../../outside"
    for members, problem in [
        ([(link, None)], "is a link to something outside the archive"),
        ([(hard, None)], "is a link to something outside the archive"),
        ([_file("model.pkl", model), (device, None)], "is not a regular file, directory or link"),
        ([_file("/abs/model.pkl", model)], "is not a relative path"),
        ([_file("a/../../model.pkl", model)], "is not a relative path"),
    ]:
        response = _upload_tarball(static_api, _tarball(members))
        assert response.status_code == 400, response.text
        assert response.json()["error"]["field"] == "artifact"
        assert problem in response.json()["error"]["message"]
    _nothing_stored(static_api)
    good = _upload_tarball(static_api, _tarball([_file("m/model.pkl", model)]))
    assert good.status_code == 201, good.text


@pytest.fixture
def capped_api(tmp_path: Path) -> Iterator[Api]:
    server = Api(
        tmp_path / "capped",
        run_reconcilers=False,
        model_artifact_max_files=3,
        model_artifact_max_bytes=64 * 1024,
        model_source_max_bytes=2048,
    )
    yield server
    server.close()


def test_file_count_and_size_caps(capped_api: Api, tmp_path: Path) -> None:
    many = tmp_path / "many"
    many.mkdir()
    joblib.dump(_linear(), many / "model.joblib")
    for i in range(3):
        (many / f"extra{i}.txt").write_text("x")
    response = _post(capped_api, "sklearn", many)
    assert response.status_code == 400
    assert "more than 3 files" in response.json()["error"]["message"]
    large = tmp_path / "large"
    large.mkdir()
    joblib.dump(_linear(), large / "model.joblib")
    (large / "weights.bin").write_bytes(b"\0" * 100_000)
    response = _post(capped_api, "sklearn", large)
    assert response.status_code == 400
    assert "larger than 65536 bytes" in response.json()["error"]["message"]
    # An archive bomb: refused from its headers, before a byte of it is written.
    bomb = _tarball([_file("model.pkl", b"\0" * 10_000_000)])
    assert len(bomb) < 100_000
    response = _upload_tarball(capped_api, bomb)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "artifact"
    assert "RAYDECK_MODEL_ARTIFACT_MAX_BYTES" in response.json()["error"]["message"]
    custom = tmp_path / "custom"
    custom.mkdir()
    _custom("class Model:\n    pass\n" + "#" * 4096)(custom)
    response = _post(capped_api, "custom", custom)
    assert response.status_code == 400
    assert "RAYDECK_MODEL_SOURCE_MAX_BYTES" in response.json()["error"]["message"]
    _nothing_stored(capped_api)


def test_first_global_reads_a_pickle_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "owned"
    assert first_global(exploit_pickle(marker)) == "posix.system"
    assert first_global(pickle.dumps(_linear(), protocol=2)).endswith("LogisticRegression")
    assert first_global(b"\x80\x04garbage") is None
    assert first_global(pickle.dumps([1, 2, 3])) is None
    assert not marker.exists()


def test_layouts_match_what_the_predictors_read() -> None:
    for framework in available_frameworks():
        assert model_files(framework) == predictor_class(framework).artifact_files, framework


# What would let the control plane run an uploaded artifact's code, were it called on one.
_LOADERS = {"pickle", "joblib", "torch", "cloudpickle", "dill", "runpy", "marshal", "shelve"}
_LOADER_CALLS = {"load_predictor", "load_pickled", "import_module", "exec_module", "exec", "eval"}


def test_the_server_has_no_way_to_load_an_artifact() -> None:
    """No module of the control plane (server, core, db) imports a deserializer or calls a
    loader: a later change that validates by loading fails here, not in a security review."""
    package = Path(raydeck.__file__).parent
    found: list[str] = []
    for directory in ("server", "core", "db"):
        for path in sorted((package / directory).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name.split(".")[0] for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module.split(".")[0]]
                    names += [a.name for a in node.names if a.name in _LOADER_CALLS]
                elif isinstance(node, ast.Name | ast.Attribute):
                    name = node.id if isinstance(node, ast.Name) else node.attr
                    names = [name] if name in _LOADER_CALLS else []
                found += [
                    f"{path.relative_to(package)}:{node.lineno} {name}"  # type: ignore[attr-defined]
                    for name in names
                    if name in _LOADERS | _LOADER_CALLS
                ]
    assert found == []
