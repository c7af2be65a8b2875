"""``make bench``: Raydeck against raw Ray, measured in the same run on this machine.

Groups (``python -m benchmarks.run [group ...]``, all by default):
- clusters: create→RUNNING vs raw `ray start` of the same processes;
- jobs: trivial job submit→SUCCEEDED vs the raw Ray Jobs API;
- api: get/list p50/p99 with 1,000 jobs stored;
- serving: predict latency/throughput vs a hand-written Serve app, batching, deploy→READY;
- batch: batch prediction rows/s vs a hand-written Ray Data map_batches job;
- data: warehouse read/write rows/s vs hand-written Ray Data SQL and plain DuckDB
  (benchmarks/data.py, on its own local Ray).
- hosts: a cluster over 3 network-namespace hosts vs raw `ray start`s in the same namespaces,
  predict throughput with replicas on 2 hosts, recovery from a lost host (benchmarks/hosts.py).
- tuning: per-trial overhead of a 100-trial study vs Ray Tune+OptunaSearch and plain Optuna,
  CustomJob submit→RUNNING.
Rounds alternate raw and Raydeck so background noise hits both alike.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from benchmarks.data import bench_data
from benchmarks.hosts import bench_hosts
from benchmarks.raw_ray import RawCluster
from benchmarks.report import Figure, p50_p99, write_report
from benchmarks.serving import bench_batch_prediction, bench_serving
from benchmarks.tuning import bench_tuning
from raydeck.client import RaydeckClient
from raydeck.core.ids import new_id
from raydeck.core.models import ClusterCreate, JobState
from raydeck.db.models import JobRow
from raydeck.db.session import Database
from raydeck.devtools import ServerProcess

CLUSTER_ROUNDS = 3
JOB_ROUNDS = 7
API_REQUESTS = 400
RAW_BASE_PORT = 27000  # below the ephemeral range (32768+), outside Ray Client 23000-23999
JOBS_CLUSTER = "bench-jobs"


def _cluster_spec(name: str) -> ClusterCreate:
    return ClusterCreate.model_validate(
        {
            "name": name,
            "head": {"num_cpus": 1},
            "worker_pools": [{"name": "accel", "replica_count": 2, "resources": {"accel": 1}}],
        }
    )


def _wait_running(client: RaydeckClient, name: str) -> None:
    client.clusters.wait(name, timeout=300, poll=0.05)


def _raw_start_with_one_retry(base_port: int) -> float | None:
    """Raw `ray start` of head + 2 workers. Ray gives a new node a fixed 30 s to register;
    on 2 loaded cores a worker sometimes misses it, so a failed raw round is retried once
    (and said so); a round that fails twice has no raw figure instead of aborting the run."""
    for attempt in range(2):
        raw = RawCluster(base_port + 300 * attempt)
        try:
            return raw.start()
        except RuntimeError as exc:
            print(f"  raw ray start failed ({str(exc).splitlines()[-1][:120]}); retrying")
        finally:
            raw.stop()
    return None


def bench_cluster_create(client: RaydeckClient) -> list[Figure]:
    raw_times, raydeck_times = [], []
    for round_index in range(CLUSTER_ROUNDS):
        raw_time = _raw_start_with_one_retry(RAW_BASE_PORT)
        if raw_time is not None:
            raw_times.append(raw_time)
        name = f"bench-create-{round_index}"
        begin = time.monotonic()
        client.clusters.create(_cluster_spec(name))
        _wait_running(client, name)
        raydeck_times.append(time.monotonic() - begin)
        client.clusters.delete(name)
        client.clusters.wait_deleted(name)
        raw_text = f"{raw_time:.2f}s" if raw_time is not None else "failed"
        print(f"  round {round_index}: raw {raw_text}, raydeck {raydeck_times[-1]:.2f}s")
    raydeck = statistics.median(raydeck_times)
    raw_median = statistics.median(raw_times) if raw_times else None
    return [
        Figure("cluster create→RUNNING, head + 2 workers (median)", "s", raydeck, raw_median, 1.5),
        Figure("cluster create→RUNNING, absolute", "s", raydeck, None, 10.0, absolute=True),
    ]


def _ensure_jobs_cluster(client: RaydeckClient) -> None:
    if not any(c.name == JOBS_CLUSTER for c in client.clusters.list(page_size=100).items):
        client.clusters.create(ClusterCreate(name=JOBS_CLUSTER))
    _wait_running(client, JOBS_CLUSTER)


def bench_jobs(client: RaydeckClient) -> list[Figure]:
    _ensure_jobs_cluster(client)
    raw = RawCluster(RAW_BASE_PORT, workers=0)
    raw_times, raydeck_times = [], []
    try:
        raw.start()
        raw_jobs = raw.jobs()
        raw.submit_and_wait(raw_jobs, "echo warm")  # first job pays for the job agent's warm-up
        client.jobs.wait(client.jobs.submit("bench-jobs", "echo warm").id, poll=0.02)
        for _ in range(JOB_ROUNDS):
            raw_times.append(raw.submit_and_wait(raw_jobs, "echo hi"))
            begin = time.monotonic()
            job = client.jobs.submit("bench-jobs", "echo hi")
            done = client.jobs.wait(job.id, poll=0.02)
            raydeck_times.append(time.monotonic() - begin)
            assert done.state is JobState.SUCCEEDED, done.message
    finally:
        raw.stop()
    return [
        Figure(
            "trivial job submit→SUCCEEDED (median)",
            "s",
            statistics.median(raydeck_times),
            statistics.median(raw_times),
            1.2,
        )
    ]


def _store_jobs(db_url: str, cluster_id: str, count: int) -> list[str]:
    db = Database(db_url)
    ids = [new_id("job") for _ in range(count)]
    with db.session() as session:
        session.add_all(
            JobRow(
                id=job_id,
                cluster_id=cluster_id,
                cluster_name="bench-jobs",
                submission_id=f"stored-{i}",
                entrypoint="python train.py",
                job_metadata={"i": str(i)},
                state=JobState.SUCCEEDED.value,
            )
            for i, job_id in enumerate(ids)
        )
    db.dispose()
    return ids


def bench_api(server: ServerProcess, client: RaydeckClient) -> list[Figure]:
    _ensure_jobs_cluster(client)
    cluster = client.clusters.get(JOBS_CLUSTER)
    ids = _store_jobs(f"sqlite:///{server.home / 'raydeck.db'}", cluster.id, 1000)
    figures = []
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=headers) as http:
        paths = {
            "GET job": lambda: f"/api/v1/jobs/{random.choice(ids)}",
            "LIST jobs (page of 100)": lambda: "/api/v1/jobs?page_size=100",
            "GET cluster": lambda: "/api/v1/clusters/bench-jobs",
        }
        for label, path in paths.items():
            samples = []
            for _ in range(API_REQUESTS):
                begin = time.perf_counter()
                response = http.get(path())
                samples.append((time.perf_counter() - begin) * 1000)
                response.raise_for_status()
            p50, p99 = p50_p99(samples)
            figures.append(Figure(f"API {label} p50, 1,000 jobs stored", "ms", p50, None, 50, True))
            figures.append(Figure(f"API {label} p99, 1,000 jobs stored", "ms", p99, None, 50, True))
    return figures


Group = Callable[[ServerProcess, RaydeckClient], list[Figure]]
GROUPS: dict[str, Group] = {
    "clusters": lambda server, client: bench_cluster_create(client),
    "jobs": lambda server, client: bench_jobs(client),
    "api": bench_api,
    "serving": lambda server, client: bench_serving(client, server.token),
    "batch": lambda server, client: bench_batch_prediction(client),
    "data": lambda server, client: bench_data(),
    "tuning": lambda server, client: bench_tuning(client),
    "hosts": lambda server, client: bench_hosts(),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="*", help=f"any of {', '.join(GROUPS)} (default: all)")
    groups = parser.parse_args().groups or list(GROUPS)
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    home = Path(tempfile.mkdtemp(prefix="raydeck-bench-"))
    # Benchmarks keep models, batch input/output and tuning outputs in temp dirs: allowlisted
    # (the server's home, also under it, stays refused).
    env = {"RAYDECK_RECONCILE_INTERVAL": "0.2", "RAYDECK_ALLOWED_ROOTS": tempfile.gettempdir()}
    server = ServerProcess(home, env=env)
    server.start()
    figures: list[Figure] = []
    try:
        with RaydeckClient(server.url, server.token, timeout=120) as client:
            for group in groups:
                print(f"{group}…")
                figures += GROUPS[group](server, client)
            for cluster in client.clusters.list(page_size=100).items:
                client.clusters.delete(cluster.name)
                client.clusters.wait_deleted(cluster.name, timeout=300)
    finally:
        server.stop()
    write_report(figures)


if __name__ == "__main__":
    main()
