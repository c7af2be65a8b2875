"""Register → deploy → predict on real Ray Serve, through a real server process.

sklearn and XGBoost versions of one model behind one endpoint with an 80/20 split; predictions
equal the in-process models'; the split holds over 1,000 requests; tokens are required; bad
payloads get 400s while the endpoint keeps serving; undeploy frees the replicas.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import httpx
import joblib
import pytest
import xgboost as xgb
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from raydeck.client import RaydeckClient
from raydeck.core.errors import FailedPreconditionError, InvalidArgumentError
from raydeck.core.models import ClusterCreate
from tests.ray_fixtures import LiveServer

pytestmark = [pytest.mark.ray, pytest.mark.slow]

X, Y = make_classification(300, 4, random_state=7)


def _models(root: Path) -> tuple[LogisticRegression, xgb.XGBClassifier, Path, Path]:
    linear = LogisticRegression().fit(X, Y)
    boosted = xgb.XGBClassifier(n_estimators=8, max_depth=3).fit(X, Y)
    (root / "sk").mkdir()
    joblib.dump(linear, root / "sk" / "model.joblib")
    (root / "xgb").mkdir()
    boosted.save_model(root / "xgb" / "model.json")
    return linear, boosted, root / "sk", root / "xgb"


def _serve_deployments(server: LiveServer, cluster: str) -> set[str]:
    answer = httpx.get(
        f"{server.url}/api/v1/clusters/{cluster}/ray/api/serve/applications/",
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    )
    answer.raise_for_status()
    apps = answer.json()["applications"]
    return {name for app in apps.values() for name in app.get("deployments", {})}


def test_register_deploy_split_predict_undeploy(
    live_server: LiveServer, live_client: RaydeckClient, tmp_path: Path
) -> None:
    linear, boosted, sk_dir, xgb_dir = _models(tmp_path)
    live_client.clusters.create(
        ClusterCreate.model_validate({"name": "srv", "head": {"num_cpus": 2}})
    )
    v1 = live_client.models.upload("churn", sk_dir, "sklearn")
    live_client.models.upload("churn", xgb_dir, "xgboost", parent_model="churn")
    live_client.clusters.wait("srv", timeout=120)

    live_client.endpoints.create("churn-api", cluster="srv")
    live_client.endpoints.deploy("churn-api", "churn@1", num_cpus=0.5)
    ready = live_client.endpoints.wait("churn-api", timeout=300)
    assert ready.predict_url and ready.predict_url.startswith("http://127.0.0.1:")
    endpoint = live_client.endpoint("churn-api")
    first = endpoint.predict(X[:20].tolist())
    assert first.predictions == linear.predict(X[:20]).tolist()
    assert (first.model, first.model_version_id) == ("churn", v1.id)

    live_client.endpoints.deploy(
        "churn-api", "churn@2", num_cpus=0.5, traffic_percentage=20, batching={"max_batch_size": 8}
    )
    split = live_client.endpoints.wait("churn-api", timeout=300)
    ids = {m.version_id: m.id for m in split.deployed_models}
    assert split.traffic_split == {ids["1"]: 80, ids["2"]: 20}

    counts: Counter[str] = Counter()
    expected = {ids["1"]: linear.predict(X[:1]).tolist(), ids["2"]: boosted.predict(X[:1]).tolist()}
    for _ in range(1000):
        answer = endpoint.predict(X[:1].tolist())
        counts[answer.deployed_model_id] += 1
        assert answer.predictions == expected[answer.deployed_model_id]
    sd = math.sqrt(1000 * 0.2 * 0.8)  # binomial: 200 ± 5 sd
    assert abs(counts[ids["2"]] - 200) < 5 * sd, counts

    # Token required on the data plane; viewers may not predict.
    url = f"{split.predict_url}/predict"
    body = {"instances": X[:1].tolist()}
    assert httpx.post(url, json=body).status_code == 401
    viewer = live_client.tokens.create("predict-viewer", role="viewer").secret
    assert (
        httpx.post(url, json=body, headers={"Authorization": f"Bearer {viewer}"}).status_code == 403
    )

    # Bad payloads: 400 naming the problem, and the endpoint keeps serving.
    with pytest.raises(InvalidArgumentError, match="features"):
        endpoint.predict([[1.0, 2.0]])
    with pytest.raises(InvalidArgumentError, match="non-empty"):
        endpoint.predict([])
    with pytest.raises(InvalidArgumentError):
        endpoint.predict([["a", "b", "c", "d"]])
    big = {"instances": [[0.0] * 4] * 400_000}
    headers = {"Authorization": f"Bearer {live_server.token}"}
    assert httpx.post(url, content=json.dumps(big), headers=headers, timeout=60).status_code == 400
    assert endpoint.predict(X[:2].tolist()).predictions

    # Explain answers one attribution map per instance (values checked in predictor tests).
    explained = live_client.endpoint("churn-api").explain(X[:3].tolist())
    assert explained.explanations and len(explained.explanations) == 3

    # The control plane relays predict for callers that only know its URL.
    relay = httpx.post(
        f"{live_server.url}/api/v1/endpoints/churn-api:predict", json=body, headers=headers
    )
    assert relay.status_code == 200 and relay.json()["deployed_model_id"] in ids.values()

    with pytest.raises(FailedPreconditionError):
        live_client.models.delete_version("churn@1")

    # Undeploy the sklearn model: all traffic goes to XGBoost and its replicas are gone.
    live_client.endpoints.undeploy("churn-api", ids["1"])
    after = live_client.endpoints.wait("churn-api", timeout=300)
    assert after.traffic_split == {ids["2"]: 100}
    assert {endpoint.predict(X[:1].tolist()).deployed_model_id for _ in range(20)} == {ids["2"]}
    assert f"model-{ids['1']}" not in _serve_deployments(live_server, "srv")
    live_client.models.delete_version("churn@1")

    live_client.endpoints.delete("churn-api")
    live_client.clusters.delete("srv")
    live_client.clusters.wait_deleted("srv", timeout=120)
