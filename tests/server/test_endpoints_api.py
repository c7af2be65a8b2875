"""Endpoint API rules in-process: deploy, traffic split, undeploy, delete guards."""

from __future__ import annotations

from pathlib import Path

import pytest

from raydeck.client import RaydeckClient
from raydeck.core.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from raydeck.core.models import ClusterCreate
from raydeck.server.reconcilers.endpoints import _EndpointPlan, failed_models, load_error
from raydeck.server.services.endpoints import rebalance
from tests.conftest import Api
from tests.model_artifacts import sklearn_model_dir


@pytest.fixture
def sdk(static_api: Api, tmp_path: Path) -> RaydeckClient:
    client = static_api.sdk()
    client.clusters.create(ClusterCreate(name="serve"))
    client.models.upload("churn", sklearn_model_dir(tmp_path, 1), "sklearn")
    client.models.upload("churn", sklearn_model_dir(tmp_path, 2), "sklearn", parent_model="churn")
    client.endpoints.create("churn-api", cluster="serve")
    return client


def test_first_model_takes_all_traffic_then_split(sdk: RaydeckClient) -> None:
    first = sdk.endpoints.deploy("churn-api", "churn@1")
    (only,) = first.deployed_models
    assert first.traffic_split == {only.id: 100}
    assert (only.model, only.version_id, only.framework) == ("churn", "1", "sklearn")
    second = sdk.endpoints.deploy("churn-api", "churn@default", traffic_percentage=20)
    new = next(m for m in second.deployed_models if m.id != only.id)
    assert new.version_id == "2"
    assert second.traffic_split == {only.id: 80, new.id: 20}
    assert second.state.value == "CREATING"  # nothing applied yet (no reconcilers here)


def test_explicit_split_must_sum_to_100_and_name_deployed_models(sdk: RaydeckClient) -> None:
    a = sdk.endpoints.deploy("churn-api", "churn@1").deployed_models[0].id
    b = sdk.endpoints.deploy("churn-api", "churn@2").deployed_models[1].id
    with pytest.raises(InvalidArgumentError, match="sum to 100") as raised:
        sdk.endpoints.set_traffic("churn-api", {a: 50, b: 40})
    assert raised.value.field == "traffic_split"
    with pytest.raises(InvalidArgumentError, match="not deployed"):
        sdk.endpoints.set_traffic("churn-api", {a: 50, "dm-ghost": 50})
    assert sdk.endpoints.get("churn-api").traffic_split == {a: 100, b: 0}  # unchanged
    assert sdk.endpoints.set_traffic("churn-api", {a: 30, b: 70}).traffic_split == {a: 30, b: 70}


def test_undeploy_hands_traffic_to_the_rest(sdk: RaydeckClient) -> None:
    a = sdk.endpoints.deploy("churn-api", "churn@1").deployed_models[0].id
    b = sdk.endpoints.deploy("churn-api", "churn@2", traffic_percentage=40).deployed_models[1].id
    left = sdk.endpoints.undeploy("churn-api", a)
    assert left.traffic_split == {b: 100}
    assert sdk.endpoints.undeploy("churn-api", b).traffic_split == {}
    with pytest.raises(NotFoundError) as raised:
        sdk.endpoints.undeploy("churn-api", b)
    assert raised.value.field == "deployed_model_id"


def test_deployed_versions_cannot_be_deleted(sdk: RaydeckClient) -> None:
    deployed = sdk.endpoints.deploy("churn-api", "churn@1").deployed_models[0]
    with pytest.raises(FailedPreconditionError):
        sdk.models.delete_version("churn@1")
    sdk.endpoints.undeploy("churn-api", deployed.id)
    sdk.models.delete_version("churn@1")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "ghost@1"}, "model"),
        ({"model": "churn@9"}, "version"),
        ({"model": "churn@1", "min_replica_count": 0}, "min_replica_count"),
        ({"model": "churn@1", "min_replica_count": 3, "max_replica_count": 2}, "body"),
        ({"model": "churn@1", "traffic_percentage": 101}, "traffic_percentage"),
        ({"model": "churn@1", "batching": {"max_batch_size": 0}}, "batching.max_batch_size"),
        ({"model": "churn@1", "gpus": 1}, "gpus"),
    ],
)
def test_bad_deploy_names_the_field(
    static_api: Api, sdk: RaydeckClient, body: dict[str, object], field: str
) -> None:
    response = static_api.http.post(
        "/api/v1/endpoints/churn-api:deployModel", json=body, headers=static_api.headers()
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["field"] == field
    assert sdk.endpoints.get("churn-api").deployed_models == []


def test_create_rules(sdk: RaydeckClient) -> None:
    with pytest.raises(AlreadyExistsError):
        sdk.endpoints.create("churn-api", cluster="serve")
    with pytest.raises(NotFoundError) as raised:
        sdk.endpoints.create("other", cluster="ghost")
    assert raised.value.field == "cluster"
    assert [e.display_name for e in sdk.endpoints.list(cluster="serve").items] == ["churn-api"]


def test_predict_needs_a_serving_model_and_a_user_token(
    static_api: Api, sdk: RaydeckClient
) -> None:
    url = "/api/v1/endpoints/churn-api:predict"
    body = {"instances": [[1, 2, 3, 4]]}
    assert static_api.http.post(url, json=body).status_code == 401
    assert (
        static_api.http.post(url, json=body, headers=static_api.headers("viewer")).status_code
        == 403
    )
    answer = static_api.http.post(url, json=body, headers=static_api.headers("user"))
    assert answer.status_code == 412  # nothing deployed yet
    authorize = "/api/v1/endpoints/churn-api/authorize"
    assert static_api.http.get(authorize, headers=static_api.headers("user")).status_code == 204
    assert static_api.http.get(authorize, headers=static_api.headers("viewer")).status_code == 403


def test_rebalance_keeps_the_sum() -> None:
    assert rebalance({}, "a", None) == {"a": 100}
    assert rebalance({"a": 100}, "b", 20) == {"a": 80, "b": 20}
    assert rebalance({"a": 50, "b": 50}, "c", 33) == {"a": 34, "b": 33, "c": 33}
    assert rebalance({"a": 0, "b": 0}, None, None) == {"a": 100, "b": 0}
    assert sum(rebalance({"a": 1, "b": 2, "c": 4}, "d", 1).values()) == 100


SERVE_FAILURE = (
    "The deployment failed to start 3 times in a row. This may be due to a problem with its "
    "constructor or initial health check failing. See controller logs for details. Error:\n"
    "ray::ServeReplica:ep-1:model-dm-b.initialize_and_get_metadata() (pid=1, ip=127.0.0.1)\n"
    '  File "/x/model_server.py", line 71, in __init__\n'
    "    self.predictor = load_predictor(framework, directory)\n"
    "sklearn.exceptions.NotFittedError: This LogisticRegression instance is not fitted yet.\n"
    "\n"
    "The above exception was the direct cause of the following exception:\n"
    "\n"
    "raydeck.core.errors.InvalidArgumentError: model.joblib holds an unfitted "
    "LogisticRegression; fit it before upload\n"
)


def test_models_that_failed_to_load_are_found_in_serve_status() -> None:
    """The rollback's input: which deployed models of a pending endpoint Serve could not
    start, with the loader's error (the e2e run is tests/e2e/test_model_load_failures.py)."""
    assert load_error(SERVE_FAILURE) == (
        "model.joblib holds an unfitted LogisticRegression; fit it before upload"
    )
    assert load_error("boom\nmodule.sub.ValueError: bad bytes") == "ValueError: bad bytes"
    assert load_error("") == "its replicas did not start"
    spec = {"deployed_models": [{"id": "dm-a"}, {"id": "dm-b"}], "traffic_split": {}}
    plans = (
        _EndpointPlan("ep-1", 2, "UPDATING", spec),
        _EndpointPlan("ep-2", 1, "READY", spec),  # not being changed: left alone
    )
    broken = {
        "status": "DEPLOY_FAILED",
        "deployments": {
            "router": {"status": "HEALTHY"},
            "model-dm-a": {"status": "HEALTHY"},
            "model-dm-b": {"status": "DEPLOY_FAILED", "message": SERVE_FAILURE},
        },
    }
    found = failed_models(plans, {"ep-1": broken, "ep-2": broken})
    assert list(found) == ["ep-1"]
    assert found["ep-1"] == {"dm-b": load_error(SERVE_FAILURE)}
    assert failed_models(plans, {"ep-1": {"status": "RUNNING"}}) == {}
