"""Register → deploy → predict on real Ray Serve, through a real server process.

sklearn and XGBoost versions of one model behind one endpoint with an 80/20 split; predictions
equal the in-process models'; the split holds over 1,000 requests; tokens are required; bad
payloads get 400s while the endpoint keeps serving; undeploy frees the replicas. LightGBM,
PyTorch and a custom predictor that raises on some input, on a second endpoint of the same
cluster; a deploy by alias follows the alias at deploy time.
"""

from __future__ import annotations

import json
import math
import textwrap
import time
from collections import Counter
from pathlib import Path

import httpx
import joblib
import lightgbm as lgb
import numpy as np
import pytest
import torch
import xgboost as xgb
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from raydeck.client import RaydeckClient
from raydeck.core.errors import FailedPreconditionError, InvalidArgumentError, RaydeckError
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
    """Straight from the cluster's dashboard (the Jobs proxy does not relay Serve's API)."""
    credentials = httpx.get(
        f"{server.url}/api/v1/clusters/{cluster}/credentials",
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    ).json()
    answer = httpx.get(
        f"{credentials['dashboard_url']}/api/serve/applications/",
        headers={"Authorization": f"Bearer {credentials['ray_auth_token']}"},
        timeout=30,
    )
    answer.raise_for_status()
    apps = answer.json()["applications"]
    return {name for app in apps.values() for name in app.get("deployments", {})}


def test_register_deploy_split_predict_undeploy(
    live_server: LiveServer, live_client: RaydeckClient, cluster: str, tmp_path: Path
) -> None:
    linear, boosted, sk_dir, xgb_dir = _models(tmp_path)
    v1 = live_client.models.upload("churn", sk_dir, "sklearn")
    live_client.models.upload("churn", xgb_dir, "xgboost", parent_model="churn")

    live_client.endpoints.create("churn-api", cluster=cluster)
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

    # Those went straight to predict_url, yet the control plane's /metrics counts them: it
    # polls the ingress's stats. churn@1 may also carry the single predict of the app before
    # the split, if a poll saw that replica before it was replaced.
    def served() -> dict[str, float]:
        text = httpx.get(f"{live_server.url}/metrics", headers=live_server_headers).text
        return {
            sample.labels["deployed_model"]: sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "raydeck_endpoint_serve_requests"
            for sample in family.samples
            if sample.labels["endpoint"] == "churn-api" and sample.labels["code"] == "200"
        }

    live_server_headers = {"Authorization": f"Bearer {live_server.token}"}
    deadline = time.monotonic() + 60
    while served().get(ids["2"]) != counts[ids["2"]] and time.monotonic() < deadline:
        time.sleep(1)
    seen = served()
    assert seen.get(ids["2"]) == counts[ids["2"]], (seen, counts)
    assert seen.get(ids["1"], 0) - counts[ids["1"]] in (0, 1), (seen, counts)

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
    assert f"model-{ids['1']}" not in _serve_deployments(live_server, cluster)
    live_client.models.delete_version("churn@1")
    live_client.endpoints.delete("churn-api")


RAISING_PREDICTOR = """
class Picky:
    def predict(self, instances):
        if any(x < 0 for x in instances):
            raise ValueError("negative input is not supported")
        return [x * 10 for x in instances]
"""


def _more_models(root: Path) -> tuple[lgb.Booster, torch.nn.Module]:
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 4}, lgb.Dataset(X, Y), 10
    )
    (root / "lgb").mkdir()
    booster.save_model(root / "lgb" / "model.txt")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    (root / "torch").mkdir()
    torch.jit.script(net).save(str(root / "torch" / "model.pt"))
    (root / "custom").mkdir()
    (root / "custom" / "predictor.py").write_text(textwrap.dedent(RAISING_PREDICTOR))
    (root / "custom" / "raydeck_predictor.json").write_text('{"class": "predictor:Picky"}')
    return booster, net


def test_lightgbm_pytorch_custom_and_alias(
    live_client: RaydeckClient, cluster: str, tmp_path: Path
) -> None:
    booster, net = _more_models(tmp_path)
    live_client.models.upload("risk", tmp_path / "lgb", "lightgbm", aliases=["prod"])
    live_client.models.upload("risk", tmp_path / "torch", "pytorch", parent_model="risk")
    live_client.models.upload("picky", tmp_path / "custom", "custom")

    live_client.endpoints.create("more-api", cluster=cluster)
    live_client.endpoints.deploy("more-api", "risk@prod", num_cpus=0.25)
    live_client.endpoints.deploy("more-api", "risk@2", num_cpus=0.25, traffic_percentage=50)
    ready = live_client.endpoints.wait("more-api", timeout=300)
    by_version = {m.version_id: m.id for m in ready.deployed_models}
    endpoint = live_client.endpoint("more-api")
    with torch.no_grad():
        torch_expected = net(torch.tensor(X[:5], dtype=torch.float32)).numpy()
    lgb_expected = booster.predict(X[:5])
    seen = set()
    for _ in range(40):
        answer = endpoint.predict(X[:5].tolist())
        got = np.asarray(answer.predictions, dtype=np.float64).reshape(len(X[:5]), -1)
        if answer.deployed_model_id == by_version["1"]:
            np.testing.assert_allclose(got.ravel(), lgb_expected, rtol=1e-6)
        else:
            np.testing.assert_allclose(got, torch_expected, rtol=1e-5, atol=1e-6)
        seen.add(answer.model_version_id)
    assert len(seen) == 2  # both halves of the 50/50 split answered

    # The alias resolved when deploying; moving it later does not touch the running endpoint.
    live_client.models.add_alias("risk@2", "prod")
    assert live_client.models.get_version("risk@prod").version_id == "2"
    assert live_client.endpoints.get("more-api").deployed_models[0].version_id == "1"

    # A model that raises fails only that request, with a clear message; the rest is served.
    live_client.endpoints.deploy("more-api", "picky", num_cpus=0.25, traffic_percentage=100)
    live_client.endpoints.wait("more-api", timeout=300)
    assert endpoint.predict([1, 2]).predictions == [10, 20]
    with pytest.raises(RaydeckError, match="negative input is not supported") as raised:
        endpoint.predict([-1])
    assert "Traceback" not in str(raised.value)
    assert endpoint.predict([3]).predictions == [30]
    live_client.endpoints.delete("more-api")


def test_endpoint_of_another_project(
    live_server: LiveServer, live_client: RaydeckClient, cluster: str, tmp_path: Path
) -> None:
    """A project's endpoint on its own cluster (both named like the default project's): its
    Serve ingress asks the control plane about tokens in that project, not in 'default'."""
    live_client.access.create_project("serve-team")
    secret = live_client.tokens.create("serve-team-user", role="user", project="serve-team").secret
    team = RaydeckClient(live_server.url, secret, project="serve-team", timeout=120)
    spec = ClusterCreate.model_validate({"name": cluster, "head": {"num_cpus": 1}})
    team.clusters.create(spec)
    try:
        team.clusters.wait(cluster, timeout=180)
        linear, _, sk_dir, _ = _models(tmp_path)
        team.models.upload("churn", sk_dir, "sklearn")
        team.endpoints.create("churn-api", cluster=cluster)
        team.endpoints.deploy("churn-api", "churn@1", num_cpus=0.5)
        ready = team.endpoints.wait("churn-api", timeout=300)
        assert ready.project == "serve-team" and ready.predict_url
        url, body = f"{ready.predict_url}/predict", {"instances": X[:2].tolist()}

        def predict_with(token: str) -> httpx.Response:
            headers = {"Authorization": f"Bearer {token}"}
            return httpx.post(url, json=body, headers=headers, timeout=60)

        answer = predict_with(secret)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == linear.predict(X[:2]).tolist()
        outsider = live_client.tokens.create("default-user", role="user", project="default")
        assert predict_with(outsider.secret).status_code == 403
        team.endpoints.delete("churn-api")
    finally:
        team.clusters.delete(cluster)
        team.clusters.wait_deleted(cluster, timeout=180)
        team.close()
