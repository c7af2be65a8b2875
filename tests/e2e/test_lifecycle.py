"""The issue's end-to-end path on real Ray, through a real server process.

create (head + pool of 2 with a custom resource) → ray.init("raydeck://…") runs tasks that need
the resource → Ray's own JobSubmissionClient submits through the proxy → logs → scale to 1 →
delete → no process of the cluster is left.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from raydeck.backends.local import find_cluster_processes
from raydeck.client import RaydeckClient
from raydeck.core.models import ClusterCreate, ClusterState, JobState
from tests.ray_fixtures import LiveServer

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY_CLIENT_SCRIPT = """
    import json, ray
    ray.init("raydeck://{name}", logging_level="ERROR")

    @ray.remote(resources={{"accel": 1}})
    def where(i):
        import os, time
        time.sleep(0.5)
        return ray.get_runtime_context().get_node_id(), os.environ.get("RAYDECK_NODE")

    results = ray.get([where.remote(i) for i in range(4)])
    print(json.dumps(sorted({{r[1] for r in results}})))
    ray.shutdown()
"""


def _accel_cluster(name: str, replicas: int = 2) -> ClusterCreate:
    return ClusterCreate.model_validate(
        {
            "name": name,
            "head": {"num_cpus": 1},
            "worker_pools": [
                {"name": "accel", "replica_count": replicas, "resources": {"accel": 1}}
            ],
        }
    )


def test_cluster_connect_jobs_scale_delete(
    live_server: LiveServer, live_client: RaydeckClient, tmp_path: Path
) -> None:
    created = live_client.clusters.create(_accel_cluster("e2e"))
    assert created.state is ClusterState.PROVISIONING
    cluster = live_client.clusters.wait("e2e", timeout=120)
    assert cluster.dashboard_url and cluster.dashboard_url.startswith("http://127.0.0.1:")
    assert cluster.worker_pools[0].current_replica_count == 2
    assert {n.name for n in cluster.nodes if n.alive} == {"head", "accel-0", "accel-1"}

    # Ray Client through the raydeck:// scheme; tasks need the pool's custom resource,
    # so they can only run on the two workers.
    ran_on = json.loads(live_server.run_python(RAY_CLIENT_SCRIPT.format(name="e2e")).strip())
    assert set(ran_on) <= {"accel-0", "accel-1"} and ran_on

    # Ray's own Jobs SDK, pointed at Raydeck's proxy, with a working_dir upload.
    (tmp_path / "job.py").write_text("import ray\nray.init()\nprint('hello from', 'the job')\n")
    jobs = JobSubmissionClient(
        f"{live_server.url}/api/v1/clusters/e2e/ray",
        headers={"Authorization": f"Bearer {live_server.token}"},
    )
    submission_id = jobs.submit_job(
        entrypoint="python job.py", runtime_env={"working_dir": str(tmp_path)}
    )
    job = next(
        j for j in live_client.jobs.list(cluster="e2e").items if j.entrypoint == "python job.py"
    )
    assert job.submission_id == submission_id
    finished = live_client.jobs.wait(job.id, timeout=120)
    assert finished.state is JobState.SUCCEEDED, finished.message
    assert jobs.get_job_status(submission_id) == JobStatus.SUCCEEDED
    assert "hello from the job" in jobs.get_job_logs(submission_id)
    assert "hello from the job" in live_client.jobs.logs(job.id)

    # Ray's own CLI too, including its websocket log tail.
    cli = subprocess.run(
        [
            str(Path(sys.executable).with_name("ray")),
            "job",
            "submit",
            "--address",
            f"{live_server.url}/api/v1/clusters/e2e/ray",
            "--headers",
            json.dumps({"Authorization": f"Bearer {live_server.token}"}),
            "--",
            "echo",
            "tailed-through-raydeck",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "succeeded" in cli.stdout
    assert "close code 1000" in cli.stderr  # the websocket tail was relayed and closed cleanly
    submitted = next(
        j for j in live_client.jobs.list(cluster="e2e").items if j.entrypoint.startswith("echo")
    )
    assert "tailed-through-raydeck" in live_client.jobs.logs(submitted.id)

    # The proxy refuses Ray calls without a Raydeck token, and Ray itself refuses no token.
    assert httpx.get(f"{live_server.url}/api/v1/clusters/e2e/ray/api/jobs/").status_code == 401
    assert httpx.get(f"{cluster.dashboard_url}/api/jobs/").status_code == 401

    # Scale the pool down; exactly one worker's processes go away.
    live_client.clusters.scale("e2e", "accel", 1)
    scaled = live_client.clusters.wait("e2e", timeout=120)
    assert scaled.worker_pools[0].current_replica_count == 1
    assert find_cluster_processes(cluster.id, "accel-1") == []
    assert find_cluster_processes(cluster.id, "accel-0") != []

    live_client.clusters.delete("e2e")
    live_client.clusters.wait_deleted("e2e", timeout=120)
    assert find_cluster_processes(cluster.id) == []


def test_sdk_job_with_working_dir_env_and_follow(
    live_client: RaydeckClient, tmp_path: Path
) -> None:
    live_client.clusters.create(
        ClusterCreate.model_validate({"name": "jobs", "head": {"num_cpus": 2}})
    )
    live_client.clusters.wait("jobs", timeout=120)
    (tmp_path / "main.py").write_text(
        "import os, time\n"
        "for i in range(3):\n"
        "    print('step', i, os.environ['GREETING'], flush=True)\n"
        "    time.sleep(0.3)\n"
    )
    job = live_client.jobs.submit(
        "jobs",
        "python main.py",
        working_dir=tmp_path,
        runtime_env={"env_vars": {"GREETING": "hi"}},
        metadata={"owner": "tests"},
    )
    streamed = "".join(live_client.jobs.follow_logs(job.id))
    assert [line for line in streamed.splitlines() if line.startswith("step")] == [
        "step 0 hi",
        "step 1 hi",
        "step 2 hi",
    ]
    done = live_client.jobs.wait(job.id)
    assert done.state is JobState.SUCCEEDED
    assert done.metadata == {"owner": "tests"}

    # stop, then delete; a failing entrypoint ends FAILED with Ray's reason.
    sleeper = live_client.jobs.submit("jobs", "sleep 60")
    stopped = live_client.jobs.stop(sleeper.id)
    assert live_client.jobs.wait(stopped.id, timeout=60).state is JobState.STOPPED
    live_client.jobs.delete(sleeper.id)
    assert all(j.id != sleeper.id for j in live_client.jobs.list(cluster="jobs").items)
    failing = live_client.jobs.submit("jobs", "python -c 'raise SystemExit(3)'")
    failed = live_client.jobs.wait(failing.id, timeout=60)
    assert failed.state is JobState.FAILED
    assert failed.message

    live_client.clusters.delete("jobs")
    live_client.clusters.wait_deleted("jobs", timeout=120)
