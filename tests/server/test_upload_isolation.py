"""Issue 11, finding 1: an account that may only upload models cannot run code in the control
plane. Against a real ``raydeck server`` process: hostile pickles (multipart upload and the
``artifact_uri`` route) and a custom predictor whose import runs a shell command are uploaded
by a custom role holding nothing but ``models.upload``; the marker file their code would
create never appears, whatever the API answered."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from raydeck.client import RaydeckClient
from raydeck.core.errors import RaydeckError
from raydeck.devtools import ServerProcess
from tests.model_artifacts import hostile_custom_predictor_dir, hostile_pickle_dir


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("isolation-home"))
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def uploader(server: ServerProcess) -> str:
    """A token of an account whose only permission is ``models.upload``."""
    with RaydeckClient(server.url, server.token) as admin:
        admin.access.create_role("uploader-only", ["models.upload"])
        admin.access.create_account("mallory")
        admin.access.bind("mallory", "uploader-only")
        return admin.tokens.create("mallory-t", account="mallory").secret


def _never_created(marker: Path, wait: float = 3.0) -> None:
    assert not marker.exists(), "the control plane ran the uploaded code"
    time.sleep(wait)  # anything the server started in the background has had its chance
    assert not marker.exists(), "the control plane ran the uploaded code"


@pytest.mark.parametrize(
    ("framework", "file"),
    [("sklearn", "model.pkl"), ("sklearn", "model.joblib"), ("pytorch", "model.pth")],
)
def test_hostile_pickle_upload_runs_nothing_in_the_server(
    server: ServerProcess, uploader: str, tmp_path: Path, framework: str, file: str
) -> None:
    markers = {route: tmp_path / f"owned-{route}" for route in ("multipart", "uri")}
    source = hostile_pickle_dir(tmp_path, "via-uri", markers["uri"], file)
    answer = httpx.post(
        f"{server.url}/api/v1/models",
        json={
            "display_name": f"uri-{framework}-{file[6:]}",
            "framework": framework,
            "artifact_uri": str(source),
        },
        headers={"Authorization": f"Bearer {uploader}"},
        timeout=60,
    )
    assert answer.status_code in (201, 400), answer.text
    _never_created(markers["uri"], wait=0)
    with RaydeckClient(server.url, uploader) as client:
        # The SDK sends a local directory as a multipart .tar.gz upload.
        source = hostile_pickle_dir(tmp_path, "via-multipart", markers["multipart"], file)
        try:
            version = client.models.upload(f"mp-{framework}-{file[6:]}", source, framework)
            assert version.framework.value == framework  # registered: it loads on a cluster
        except RaydeckError as exc:
            assert exc.code == "invalid_argument", exc  # refused statically is fine too
    for marker in markers.values():
        _never_created(marker)


def test_hostile_custom_predictor_is_never_imported_by_the_server(
    server: ServerProcess, uploader: str, tmp_path: Path
) -> None:
    marker = tmp_path / "owned-custom"
    source = hostile_custom_predictor_dir(tmp_path, "custom", marker)
    answer = httpx.post(
        f"{server.url}/api/v1/models",
        json={"display_name": "custom-owned", "framework": "custom", "artifact_uri": str(source)},
        headers={"Authorization": f"Bearer {uploader}"},
        timeout=60,
    )
    assert answer.status_code == 201, answer.text
    _never_created(marker, wait=0)
    with RaydeckClient(server.url, uploader) as client:  # again, as a multipart upload
        version = client.models.upload(None, source, "custom", parent_model="custom-owned")
        assert (version.framework.value, version.version_id) == ("custom", "2")
    _never_created(marker)


def test_the_uploader_role_can_do_nothing_else(server: ServerProcess, uploader: str) -> None:
    with RaydeckClient(server.url, uploader) as client:
        with pytest.raises(RaydeckError) as raised:
            client.models.list()
        assert raised.value.code == "permission_denied"
