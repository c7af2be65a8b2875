"""Issue 4 figures: endpoints against a hand-written Ray Serve app, batch prediction against a
hand-written Ray Data ``map_batches``, both measured in the same run.

Online: the same scikit-learn model behind a Raydeck endpoint (ingress router with token check
+ model deployment) and behind a one-deployment Serve app written the way the Serve docs show,
on a raw ``ray start`` head with the same CPUs; one replica each. Latency is sequential
requests (keep-alive), throughput is a fixed number of requests from concurrent clients.
Batching: a RandomForest (a fixed per-call cost, like most real models) on two endpoints,
batching off and on (at its defaults), under concurrent load, median of 3 alternating
rounds. Deploy→READY: the first endpoint of a cluster, Serve's own start included, against
``serve.run`` of the raw app on a fresh raw head.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import aiohttp
import httpx
import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from benchmarks.raw_ray import RawCluster
from benchmarks.report import Figure, p50_p99
from raydeck.client import RaydeckClient
from raydeck.core.models import ClusterCreate, JobState
from raydeck.core.models.batch_predictions import BatchPredictionState

__all__ = ["bench_batch_prediction", "bench_serving"]

CLUSTER = "bench-serve"
RAW_SERVE_BASE_PORT = 27600
FEATURES = 4
LATENCY_BLOCKS, LATENCY_BLOCK_SIZE = 6, 50
THROUGHPUT_REQUESTS, CONCURRENCY = 1500, 16
BATCH_CONCURRENCY = 32
BATCH_ROWS = 200_000
BATCH_ROUNDS = 3
INSTANCE = [[0.5, -1.2, 0.3, 2.0]]

# The baseline: what a user writes with Ray Serve alone (model path and port in argv).
RAW_SERVE_APP = textwrap.dedent(
    """
    import json, sys, time
    import joblib, numpy as np, ray
    from ray import serve
    from starlette.requests import Request

    @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64)
    class RawModel:
        def __init__(self, path):
            self.model = joblib.load(path)

        async def __call__(self, request: Request):
            body = await request.json()
            x = np.asarray(body["instances"], dtype=np.float64)
            return {"predictions": self.model.predict(x).tolist()}

    begin = time.monotonic()
    ray.init(address=sys.argv[3])
    serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[2])})
    serve.run(RawModel.bind(sys.argv[1]), name="raw", route_prefix="/raw")
    print(json.dumps({"deploy_seconds": time.monotonic() - begin}))
    """
)

# The batch baseline: Ray Data's documented offline-inference pattern, submitted as a job.
RAW_BATCH_SCRIPT = textwrap.dedent(
    """
    import sys
    import joblib, numpy as np, ray

    class Predict:
        def __init__(self, path):
            self.model = joblib.load(path)

        def __call__(self, batch):
            x = np.stack([batch[f"f{i}"] for i in range(4)], axis=1)
            batch["prediction"] = self.model.predict(x)
            return batch

    ray.init()
    ds = ray.data.read_parquet(sys.argv[2])
    ds = ds.map_batches(
        Predict,
        fn_constructor_args=(sys.argv[1],),
        batch_size=int(sys.argv[4]),
        concurrency=1,
        num_cpus=1,
    )
    ds.write_parquet(sys.argv[3])
    """
)


def _train(directory: Path, model: object) -> Path:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2000, FEATURES))
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) > 0).astype(int)
    model.fit(x, y)  # type: ignore[attr-defined]
    directory.mkdir(parents=True)
    joblib.dump(model, directory / "model.joblib")
    return directory


def _latencies(url: str, headers: dict[str, str]) -> list[float]:
    samples = []
    with httpx.Client(headers=headers, timeout=30) as http:
        for _ in range(LATENCY_BLOCK_SIZE):
            begin = time.perf_counter()
            response = http.post(url, json={"instances": INSTANCE})
            samples.append((time.perf_counter() - begin) * 1000)
            response.raise_for_status()
    return samples


async def _throughput_async(url: str, headers: dict[str, str], concurrency: int) -> float:
    pending = iter(range(THROUGHPUT_REQUESTS))
    async with aiohttp.ClientSession(headers=headers) as session:

        async def client() -> None:
            for _ in pending:
                async with session.post(url, json={"instances": INSTANCE}) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url}: HTTP {response.status}")

        begin = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return THROUGHPUT_REQUESTS / (time.perf_counter() - begin)


def _throughput(url: str, headers: dict[str, str], concurrency: int = CONCURRENCY) -> float:
    return asyncio.run(_throughput_async(url, headers, concurrency))


def _start_raw_serve(raw: RawCluster, model_dir: Path) -> float:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            RAW_SERVE_APP,
            str(model_dir / "model.joblib"),
            str(raw.serve_port),
            raw.gcs,
        ],
        env=raw.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"raw Serve app failed: {done.stderr[-2000:]}")
    seconds: float = json.loads(done.stdout.strip().splitlines()[-1])["deploy_seconds"]
    return seconds


def _deploy(client: RaydeckClient, name: str, model: str, **fields: object) -> tuple[str, float]:
    begin = time.monotonic()
    client.endpoints.create(name, cluster=CLUSTER)
    client.endpoints.deploy(name, model, num_cpus=1, **fields)
    endpoint = client.endpoints.wait(name, timeout=300, poll=0.1)
    assert endpoint.predict_url is not None
    return f"{endpoint.predict_url}/predict", time.monotonic() - begin


def bench_serving(client: RaydeckClient, token: str) -> list[Figure]:
    work = Path(tempfile.mkdtemp(prefix="raydeck-bench-serve-"))
    linear = _train(work / "linear", LogisticRegression())
    forest = _train(work / "forest", RandomForestClassifier(n_estimators=100, random_state=0))
    client.models.upload("bench-linear", linear, "sklearn")
    client.models.upload("bench-forest", forest, "sklearn")
    client.clusters.create(ClusterCreate.model_validate({"name": CLUSTER, "head": {"num_cpus": 4}}))
    client.clusters.wait(CLUSTER, timeout=300, poll=0.1)
    raw = RawCluster(RAW_SERVE_BASE_PORT, workers=0, head_cpus=4)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        raw.start()
        raw_deploy = _start_raw_serve(raw, linear)
        url, deploy = _deploy(client, "bench-linear", "bench-linear")
        raw_url = f"http://127.0.0.1:{raw.serve_port}/raw"
        print(f"  deploy→READY: raydeck {deploy:.2f}s, raw serve.run {raw_deploy:.2f}s")
        for target in (url, raw_url):  # warm both paths (connections, auth cache, replicas)
            _latencies(target, headers)
        ours, theirs = [], []
        for _ in range(LATENCY_BLOCKS):  # alternate so noise hits both alike
            theirs += _latencies(raw_url, headers)
            ours += _latencies(url, headers)
        (p50, p99), (raw_p50, raw_p99) = p50_p99(ours), p50_p99(theirs)
        raw_rps = statistics.median(_throughput(raw_url, headers) for _ in range(2))
        rps = statistics.median(_throughput(url, headers) for _ in range(2))
        print(f"  predict p50 {p50:.2f}/{raw_p50:.2f} ms, throughput {rps:.0f}/{raw_rps:.0f} rps")
        # A second version at 20%: the endpoint now routes through its router (one more hop).
        second = client.models.upload(
            "bench-linear", linear, "sklearn", parent_model="bench-linear"
        )
        client.endpoints.deploy(
            "bench-linear", f"bench-linear@{second.version_id}", num_cpus=1, traffic_percentage=20
        )
        client.endpoints.wait("bench-linear", timeout=300, poll=0.1)
        _latencies(url, headers)  # warm the router
        split, split_raw = [], []
        for _ in range(LATENCY_BLOCKS):
            split_raw += _latencies(raw_url, headers)
            split += _latencies(url, headers)
        (split_p50, _), (split_raw_p50, _) = p50_p99(split), p50_p99(split_raw)
        print(f"  80/20 split endpoint p50 {split_p50:.2f}/{split_raw_p50:.2f} ms")
        client.endpoints.delete("bench-linear")

        plain_url, _ = _deploy(client, "bench-forest", "bench-forest")
        batched_url, _ = _deploy(
            client,
            "bench-forest-batched",
            "bench-forest",
            batching={},  # the defaults users get: 32 per batch, Serve's 10 ms wait
        )
        for target in (plain_url, batched_url):
            _throughput(target, headers, BATCH_CONCURRENCY)
        plain_runs, batched_runs = [], []
        for _ in range(3):  # alternate so noise hits both alike
            plain_runs.append(_throughput(plain_url, headers, BATCH_CONCURRENCY))
            batched_runs.append(_throughput(batched_url, headers, BATCH_CONCURRENCY))
        plain_rps, batched_rps = statistics.median(plain_runs), statistics.median(batched_runs)
        print(
            f"  forest, {BATCH_CONCURRENCY} clients: {batched_rps:.0f} rps batched, "
            f"{plain_rps:.0f} unbatched"
        )
    finally:
        raw.stop()
        client.clusters.delete(CLUSTER)
        client.clusters.wait_deleted(CLUSTER, timeout=300)
    return [
        Figure("predict latency p50 vs hand-written Serve", "ms", p50, raw_p50, 1.3),
        Figure("predict latency p99 vs hand-written Serve (own target)", "ms", p99, raw_p99, 1.5),
        Figure(
            "predict latency p50, 80/20 split endpoint (router hop) vs hand-written Serve"
            " (own target)",
            "ms",
            split_p50,
            split_raw_p50,
            1.5,
        ),
        Figure(
            "predict throughput, 16 clients, 1 replica",
            "req/s",
            rps,
            raw_rps,
            0.8,
            higher_is_better=True,
        ),
        Figure(
            "batched vs unbatched throughput, 32 clients (raw = unbatched)",
            "req/s",
            batched_rps,
            plain_rps,
            2.0,
            higher_is_better=True,
        ),
        Figure(
            "endpoint deploy→READY, Serve start included (raw = serve.run)",
            "s",
            deploy,
            raw_deploy,
            15.0,
            absolute=True,
        ),
    ]


def _batch_input(directory: Path) -> Path:
    rng = np.random.default_rng(11)
    x = rng.normal(size=(BATCH_ROWS, FEATURES))
    path = directory / "input.parquet"
    pq.write_table(pa.table({f"f{i}": x[:, i] for i in range(FEATURES)}), path)
    return path


def bench_batch_prediction(client: RaydeckClient) -> list[Figure]:
    """Rows/s from submit to SUCCEEDED for both, as Ray jobs on the same cluster."""
    work = Path(tempfile.mkdtemp(prefix="raydeck-bench-batch-"))
    model_dir = _train(work / "model", LogisticRegression())
    version = client.models.upload("bench-batch", model_dir, "sklearn")
    source = _batch_input(work)
    script_dir = work / "job"
    script_dir.mkdir()
    (script_dir / "raw_batch.py").write_text(RAW_BATCH_SCRIPT)
    client.clusters.create(ClusterCreate.model_validate({"name": CLUSTER, "head": {"num_cpus": 2}}))
    client.clusters.wait(CLUSTER, timeout=300, poll=0.1)
    ours, theirs = [], []
    try:
        for round_index in range(BATCH_ROUNDS):
            begin = time.monotonic()
            job = client.jobs.submit(
                CLUSTER,
                f"python raw_batch.py {model_dir / 'model.joblib'} {source} "
                f"{work / f'raw-out-{round_index}'} 4096",
                working_dir=script_dir,
            )
            done = client.jobs.wait(job.id, timeout=600, poll=0.1)
            if done.state is not JobState.SUCCEEDED:
                raise RuntimeError(f"hand-written batch job failed: {done.message}")
            theirs.append(BATCH_ROWS / (time.monotonic() - begin))
            begin = time.monotonic()
            batch = client.batch_predictions.create(
                model=f"bench-batch@{version.version_id}",
                cluster=CLUSTER,
                input=str(source),
                output=str(work / f"out-{round_index}"),
                output_format="parquet",
                batch_size=4096,
                num_cpus=1,
            )
            finished = client.batch_predictions.wait(batch.id, timeout=600, poll=0.1)
            if finished.state is not BatchPredictionState.SUCCEEDED:
                raise RuntimeError(f"batch prediction failed: {finished.state_reason}")
            ours.append(BATCH_ROWS / (time.monotonic() - begin))
            print(f"  round {round_index}: raw {theirs[-1]:.0f} rows/s, raydeck {ours[-1]:.0f}")
    finally:
        client.clusters.delete(CLUSTER)
        client.clusters.wait_deleted(CLUSTER, timeout=300)
    return [
        Figure(
            f"batch prediction {BATCH_ROWS:,} rows vs hand-written map_batches",
            "rows/s",
            statistics.median(ours),
            statistics.median(theirs),
            0.9,
            higher_is_better=True,
        )
    ]
