"""A model is loaded only on the cluster (the control plane never unpickles an upload), so a
model that does not load fails where it is used, on real Ray, with the loader's reason:

- deployed beside a serving model: rolled back, the endpoint FAILED with the load error in
  ``state_reason`` and its logs, the other model still serving at the same URL;
- as an endpoint's only model: FAILED, nothing serving;
- in batch prediction: the job FAILED with the reason.

And a training pipeline whose job leaves a hostile pickle registers it without loading it.
"""

from __future__ import annotations

import time
from pathlib import Path

import joblib
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from raydeck.client import RaydeckClient
from raydeck.core.models import Endpoint, EndpointState
from raydeck.core.models.batch_predictions import BatchPredictionState
from raydeck.core.models.pipelines import TrainingPipelineCreate
from raydeck.core.models.training import TrainingState
from tests.model_artifacts import exploit_pickle

pytestmark = [pytest.mark.ray, pytest.mark.slow]

X, Y = make_classification(60, 4, random_state=3)
LOAD_ERROR = "model.joblib holds an unfitted LogisticRegression; fit it before upload"


@pytest.fixture(scope="module")
def models(live_client: RaydeckClient, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``loadfail@1`` serves; ``loadfail@2`` (an unfitted estimator: a well-formed pickle the
    server accepts without loading it) fails to load wherever it is used."""
    good = tmp_path_factory.mktemp("good")
    joblib.dump(LogisticRegression().fit(X, Y), good / "model.joblib")
    bad = tmp_path_factory.mktemp("bad")
    joblib.dump(LogisticRegression(), bad / "model.joblib")
    live_client.models.upload("loadfail", good, "sklearn")
    live_client.models.upload(None, bad, "sklearn", parent_model="loadfail")
    return "loadfail"


def _settled(client: RaydeckClient, endpoint: str, timeout: float = 300) -> Endpoint:
    deadline = time.monotonic() + timeout
    while True:
        found = client.endpoints.get(endpoint)
        if found.state in (EndpointState.READY, EndpointState.FAILED):
            return found
        assert time.monotonic() < deadline, f"{endpoint} still {found.state}"
        time.sleep(0.5)


def test_a_model_that_does_not_load_is_rolled_back_and_the_rest_keeps_serving(
    live_client: RaydeckClient, cluster: str, models: str
) -> None:
    live_client.endpoints.create("loadfail-api", cluster=cluster)
    try:
        live_client.endpoints.deploy("loadfail-api", f"{models}@1", num_cpus=0.25)
        ready = live_client.endpoints.wait("loadfail-api", timeout=300)
        (serving,) = ready.deployed_models
        expected = LogisticRegression().fit(X, Y).predict(X[:5]).tolist()

        live_client.endpoints.deploy(
            "loadfail-api", f"{models}@2", num_cpus=0.25, traffic_percentage=50
        )
        failed = _settled(live_client, "loadfail-api")
        assert failed.state is EndpointState.FAILED, failed
        assert failed.state_reason is not None
        assert f"({models}@2) failed to load on the cluster" in failed.state_reason
        assert LOAD_ERROR in failed.state_reason, failed.state_reason
        assert [m.id for m in failed.deployed_models] == [serving.id]
        assert failed.traffic_split == {serving.id: 100}
        assert failed.predict_url == ready.predict_url
        answer = live_client.endpoint("loadfail-api").predict(X[:5].tolist())
        assert (answer.deployed_model_id, answer.predictions) == (serving.id, expected)
        logs = live_client.logs.query("endpoint/loadfail-api", severity="ERROR").items
        assert any(LOAD_ERROR in entry.text for entry in logs), [e.text for e in logs]

        # The next change clears the failure: the endpoint is READY again.
        live_client.endpoints.set_traffic("loadfail-api", {serving.id: 100})
        assert _settled(live_client, "loadfail-api").state is EndpointState.READY
    finally:
        live_client.endpoints.delete("loadfail-api")


def test_an_only_model_that_does_not_load_leaves_nothing_serving(
    live_client: RaydeckClient, cluster: str, models: str
) -> None:
    live_client.endpoints.create("loadfail-solo", cluster=cluster)
    try:
        live_client.endpoints.deploy("loadfail-solo", f"{models}@2", num_cpus=0.25)
        failed = _settled(live_client, "loadfail-solo")
        assert failed.state is EndpointState.FAILED, failed
        assert LOAD_ERROR in (failed.state_reason or ""), failed.state_reason
        assert (failed.deployed_models, failed.predict_url) == ([], None)
    finally:
        live_client.endpoints.delete("loadfail-solo")


def test_batch_prediction_with_a_model_that_does_not_load_fails_with_the_reason(
    live_client: RaydeckClient, cluster: str, models: str, cluster_tmp: Path
) -> None:
    source = cluster_tmp / "in.csv"
    source.write_text("f0,f1,f2,f3\n" + "\n".join(",".join(map(str, r)) for r in X.tolist()))
    job = live_client.batch_predictions.create(
        model=f"{models}@2", cluster=cluster, input=str(source), output=str(cluster_tmp / "out")
    )
    done = live_client.batch_predictions.wait(job.id, timeout=300, poll=0.5)
    assert done.state is BatchPredictionState.FAILED, done
    assert LOAD_ERROR in (done.state_reason or ""), done.state_reason


def test_pipeline_registers_a_hostile_model_without_loading_it(
    live_client: RaydeckClient, cluster: str, cluster_tmp: Path
) -> None:
    marker = cluster_tmp / "owned-by-pipeline"
    payload = exploit_pickle(marker).hex()
    script = (
        "import os; d = os.environ['AIP_MODEL_DIR']; os.makedirs(d, exist_ok=True); "
        f"open(os.path.join(d, 'model.pkl'), 'wb').write(bytes.fromhex('{payload}'))"
    )
    request = TrainingPipelineCreate.model_validate(
        {
            "training_task": {
                "custom_job": {
                    "cluster": cluster,
                    "base_output_dir": str(cluster_tmp / "out"),
                    "worker_pool_specs": [{"command": ["python", "-c", script]}],
                }
            },
            "model_to_upload": {"display_name": "pipeline-owned", "framework": "sklearn"},
        }
    )
    pipeline = live_client.training_pipelines.create(request)
    done = live_client.training_pipelines.wait(pipeline.id, timeout=300)
    assert done.state is TrainingState.SUCCEEDED, done.state_reason
    assert done.model_version == "pipeline-owned@1"
    time.sleep(3)
    assert not marker.exists(), "the control plane ran the pipeline's model"
