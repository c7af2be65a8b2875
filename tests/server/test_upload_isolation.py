"""Issue 11, finding 1: an account that may only upload models cannot run code in the control
plane. Against a real ``raydeck server`` process (the pipeline case in-process): hostile
pickles (multipart upload and the ``artifact_uri`` route) and a custom predictor whose import
runs a shell command are uploaded by a custom role holding nothing but ``models.upload``; the
marker file their code would create never appears, whatever the API answered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from raydeck.client import RaydeckClient
from raydeck.core.errors import RaydeckError
from raydeck.core.models.training import TrainingState
from raydeck.db.models import ClusterRow, TrainingJobRow
from raydeck.devtools import ServerProcess
from raydeck.server.reconcilers.training_pipelines import PipelineReconciler
from tests.conftest import Api
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


def test_pipeline_registering_a_hostile_model_runs_nothing(static_api: Api, tmp_path: Path) -> None:
    """A training pipeline's job leaves a hostile ``model.pkl`` in AIP_MODEL_DIR: the pipeline
    reconciler registers it (in-process server: a real run needs a Ray cluster, see
    tests/e2e/test_training.py) without loading it."""
    http, state = static_api.http, static_api.app.state.raydeck
    assert http.post("/api/v1/clusters", json={"name": "dev"}, headers=static_api.headers())
    with state.db.session() as session:
        for row in session.query(ClusterRow):
            row.state, row.dashboard_url = "RUNNING", "http://127.0.0.1:9"
    body = {
        "training_task": {
            "custom_job": {
                "cluster": "dev",
                "worker_pool_specs": [{"python_module": {"module_name": "trainer.task"}}],
            }
        },
        "model_to_upload": {"display_name": "owned", "framework": "sklearn"},
    }
    created = http.post("/api/v1/trainingPipelines", json=body, headers=static_api.headers())
    assert created.status_code == 201, created.text
    pipeline = created.json()
    child = http.get(
        f"/api/v1/customJobs/{pipeline['custom_job_id']}", headers=static_api.headers()
    ).json()
    marker = tmp_path / "owned-pipeline"
    model_dir = Path(child["base_output_dir"])
    model_dir.mkdir(parents=True, exist_ok=True)
    hostile_pickle_dir(model_dir, "model", marker)
    with state.db.session() as session:
        job = session.get(TrainingJobRow, child["id"])
        assert job is not None
        job.state = TrainingState.SUCCEEDED.value

    async def one_pass() -> None:
        reconciler = PipelineReconciler(state)
        state.wake_callbacks.remove(reconciler.loop.wake)
        for pipeline_id, directory in reconciler._follow():
            await reconciler._upload(pipeline_id, directory)

    asyncio.run(one_pass())
    done = http.get(
        f"/api/v1/trainingPipelines/{pipeline['id']}", headers=static_api.headers()
    ).json()
    assert (done["state"], done["model_version"]) == ("SUCCEEDED", "owned@1"), done
    _never_created(marker)
