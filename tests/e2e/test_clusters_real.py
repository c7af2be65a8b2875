"""Several clusters side by side, autoscaling, and a server killed with -9 — on real Ray."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from raydeck.backends.local import find_cluster_processes
from raydeck.client import RaydeckClient
from raydeck.core.models import Cluster, ClusterCreate, ClusterState, JobState
from tests.ray_fixtures import LiveServer

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TASK_ON_POOL = """
    import json, os, ray
    ray.init("raydeck://{name}", logging_level="ERROR")
    f = ray.remote(resources={{"{resource}": 1}})(lambda: os.environ.get("RAYDECK_NODE"))
    print(json.dumps(ray.get(f.remote())))
    ray.shutdown()
"""


def _pool_cluster(name: str, resource: str, **pool: object) -> ClusterCreate:
    return ClusterCreate.model_validate(
        {
            "name": name,
            "worker_pools": [
                {"name": "pool", "replica_count": 1, "resources": {resource: 1}, **pool}
            ],
        }
    )


def _until(check: Callable[[], Cluster | None], timeout: float, what: str) -> Cluster:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_clusters_side_by_side(live_server: LiveServer, live_client: RaydeckClient) -> None:
    live_client.clusters.create(_pool_cluster("left", "lefty"))
    live_client.clusters.create(_pool_cluster("right", "righty"))
    left = live_client.clusters.wait("left", timeout=120)
    right = live_client.clusters.wait("right", timeout=120)
    assert left.gcs_address != right.gcs_address
    assert left.dashboard_url != right.dashboard_url

    assert json.loads(live_server.run_python(TASK_ON_POOL.format(name="left", resource="lefty")))
    assert json.loads(live_server.run_python(TASK_ON_POOL.format(name="right", resource="righty")))

    right_processes = {p.pid for p in find_cluster_processes(right.id)}
    live_client.clusters.delete("left")
    live_client.clusters.wait_deleted("left", timeout=120)
    assert find_cluster_processes(left.id) == []
    # Deleting one cluster leaves every process of the other alone, and it keeps working.
    assert right_processes <= {p.pid for p in find_cluster_processes(right.id)}
    assert live_client.clusters.get("right").state is ClusterState.RUNNING
    assert json.loads(live_server.run_python(TASK_ON_POOL.format(name="right", resource="righty")))
    live_client.clusters.delete("right")
    live_client.clusters.wait_deleted("right", timeout=120)


BURST_SCRIPT = """
import os, time, ray
ray.init()

@ray.remote(resources={"burst": 1})
def hold():
    time.sleep(30)  # long enough for a new node to start on a loaded 2-core machine
    return os.environ["RAYDECK_NODE"]

print("nodes", sorted(set(ray.get([hold.remote() for _ in range(2)]))))
"""


def test_autoscale_up_on_demand_and_down_when_idle(
    live_client: RaydeckClient, tmp_path: Path
) -> None:
    spec = _pool_cluster("auto", "burst", min_replica_count=1, max_replica_count=2)
    live_client.clusters.create(spec)
    live_client.clusters.wait("auto", timeout=120)

    # Two tasks each need a whole 'burst' node: the second one waits, so the pool grows.
    (tmp_path / "burst.py").write_text(BURST_SCRIPT)
    job = live_client.jobs.submit("auto", "python burst.py", working_dir=tmp_path)

    def grown() -> Cluster | None:
        cluster = live_client.clusters.get("auto")
        pool = cluster.worker_pools[0]
        return cluster if pool.replica_count == 2 and pool.current_replica_count == 2 else None

    _until(grown, 90, "the pool to grow to 2")
    done = live_client.jobs.wait(job.id, timeout=180)
    assert done.state is JobState.SUCCEEDED, done.message
    assert "'pool-0', 'pool-1'" in live_client.jobs.logs(job.id)

    # Idle for RAYDECK_AUTOSCALE_IDLE_SECONDS (4 s in tests): back to the minimum.
    def shrunk() -> Cluster | None:
        cluster = live_client.clusters.get("auto")
        pool = cluster.worker_pools[0]
        running = cluster.state is ClusterState.RUNNING
        return (
            cluster if running and pool.replica_count == pool.current_replica_count == 1 else None
        )

    _until(shrunk, 90, "the pool to shrink back to 1")
    live_client.clusters.delete("auto")
    live_client.clusters.wait_deleted("auto", timeout=120)


def test_server_kill9_restart_reattaches_and_dead_head_is_error(
    live_server: LiveServer, live_client: RaydeckClient
) -> None:
    live_client.clusters.create(_pool_cluster("phoenix", "phx"))
    cluster = live_client.clusters.wait("phoenix", timeout=120)
    pids_before = {p.pid for p in find_cluster_processes(cluster.id)}
    job = live_client.jobs.submit("phoenix", "sleep 6 && echo survived")

    live_server.kill9()
    live_server.start()

    # The same processes are still there and the cluster is still RUNNING and usable.
    assert live_client.clusters.get("phoenix").state is ClusterState.RUNNING
    assert pids_before <= {p.pid for p in find_cluster_processes(cluster.id)}
    out = live_server.run_python(TASK_ON_POOL.format(name="phoenix", resource="phx"))
    assert json.loads(out) == "pool-0"
    finished = live_client.jobs.wait(job.id, timeout=120)
    assert finished.state is JobState.SUCCEEDED
    assert "survived" in live_client.jobs.logs(job.id)

    # A head whose GCS died is reported ERROR with a reason, and deletes cleanly.
    for proc in find_cluster_processes(cluster.id, "head"):
        if "gcs_server" in proc.name():
            proc.send_signal(signal.SIGKILL)

    def errored() -> Cluster | None:
        current = live_client.clusters.get("phoenix")
        return current if current.state is ClusterState.ERROR else None

    assert "head" in (_until(errored, 60, "ERROR state").state_reason or "")
    live_client.clusters.delete("phoenix")
    live_client.clusters.wait_deleted("phoenix", timeout=120)
    assert find_cluster_processes(cluster.id) == []
