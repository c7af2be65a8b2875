"""Training and serving spread over namespace hosts: a CustomJob pool of 2 replicas and an
endpoint of 2 Serve replicas, each landing on 2 different hosts."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from raydeck.core.models import ClusterCreate, WorkerPoolSpec
from raydeck.core.models.training import CustomJobCreate, TrainingState
from tests.hosts.conftest import HostsEnv
from tests.model_artifacts import sklearn_model_dir

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# Each worker host offers 2 CPUs: a 2-CPU replica takes a whole worker node, so two of them
# can only run on two hosts.
WHERE = (
    "import json, os; spec = json.loads(os.environ['CLUSTER_SPEC']); "
    "task = spec['task']; "
    "print('replica-ip', spec['cluster'][task['type']][task['index']].rpartition(':')[0])"
)


@pytest.fixture(scope="module")
def work_cluster(hosts_env: HostsEnv) -> str:
    with hosts_env.client() as client:
        client.clusters.create(
            ClusterCreate(
                name="work",
                backend="hosts",
                worker_pools=[WorkerPoolSpec(name="w", replica_count=2, num_cpus=2)],
            )
        )
        client.clusters.wait("work", timeout=300)
    yield "work"
    with hosts_env.client() as client:
        client.clusters.delete("work")
        client.clusters.wait_deleted("work", timeout=120)


def test_custom_job_replicas_run_on_two_hosts(hosts_env: HostsEnv, work_cluster: str) -> None:
    with hosts_env.client() as client:
        job = client.custom_jobs.create(
            CustomJobCreate.model_validate(
                {
                    "cluster": work_cluster,
                    "worker_pool_specs": [
                        {
                            "command": ["python", "-c", "print('chief')"],
                            "machine_spec": {"cpus": 0},
                        },
                        {
                            "command": ["python", "-c", WHERE],
                            "replica_count": 2,
                            "machine_spec": {"cpus": 2},
                        },
                    ],
                }
            )
        )
        done = client.custom_jobs.wait(job.id, timeout=300)
        assert done.state is TrainingState.SUCCEEDED, done.state_reason
        ips = {
            re.search(
                r"replica-ip (\S+)", client.custom_jobs.logs(job.id, f"workerpool1-{i}")
            ).group(1)  # type: ignore[union-attr]
            for i in range(2)
        }
    assert len(ips) == 2 and all(ip.startswith("10.231.") for ip in ips), ips


def test_endpoint_replicas_on_two_hosts_serve_predictions(
    hosts_env: HostsEnv, work_cluster: str, tmp_path: Path
) -> None:
    with hosts_env.client() as client:
        client.models.upload("spread-model", sklearn_model_dir(tmp_path, 3), "sklearn")
        client.endpoints.create("spread-api", cluster=work_cluster)
        try:
            client.endpoints.deploy("spread-api", "spread-model@1", num_cpus=2, min_replica_count=2)
            ready = client.endpoints.wait("spread-api", timeout=300)
            assert ready.predict_url and ready.predict_url.startswith("http://10.231.")
            endpoint = client.endpoint("spread-api")
            for _ in range(20):
                assert len(endpoint.predict([[0.1, 0.2, 0.3, 0.4]]).predictions) == 1
            credentials = client._api.request("GET", f"/api/v1/clusters/{work_cluster}/credentials")
            apps = httpx.get(
                f"{credentials['dashboard_url']}/api/serve/applications/",
                headers={"Authorization": f"Bearer {credentials['ray_auth_token']}"},
                timeout=30,
            ).json()["applications"]
            replica_ips = {
                replica["node_ip"]
                for app in apps.values()
                for deployment in app["deployments"].values()
                for replica in deployment.get("replicas", [])
                if deployment["deployment_config"]["ray_actor_options"].get("num_cpus") == 2
            }
            assert len(replica_ips) == 2, apps
        finally:
            client.endpoints.delete("spread-api")
