"""``make demo``: the quickstart, end to end, on the embedded defaults.

Starts a real server (SQLite, local backend) in a throwaway RAYDECK_HOME, creates a cluster
(head + 2 workers with a custom resource), runs Ray tasks through ``raydeck://``, submits a
job with an uploaded working_dir, follows its logs, scales the pool, and deletes it all.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import ray
from rich.console import Console
from rich.table import Table

from raydeck.client import RaydeckClient
from raydeck.core.models import Cluster, ClusterCreate, JobState
from raydeck.core.models.tuning import HyperparameterTuningJob, HyperparameterTuningJobCreate
from raydeck.core.settings import DEFAULT_RAY_OS_USER
from raydeck.devtools import ServerProcess

T = TypeVar("T")
console = Console()
steps: list[tuple[str, float, str]] = []

TRAIN_SCRIPT = textwrap.dedent(
    """
    import ray, socket
    ray.init()

    @ray.remote(resources={"accel": 1})
    def square(x):
        return x * x, socket.gethostname()

    results = ray.get([square.remote(i) for i in range(8)])
    print("sum of squares:", sum(r[0] for r in results))
    print("ran on accel workers: ok")
    """
)


TRAIN_MODELS_SCRIPT = textwrap.dedent(
    """
    import os, sys, joblib, ray, xgboost as xgb
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    ray.init()
    out = sys.argv[1]

    @ray.remote
    def train(kind):
        X, y = make_classification(2000, 4, random_state=0)
        path = os.path.join(out, kind)
        os.makedirs(path, exist_ok=True)
        if kind == "sklearn":
            joblib.dump(LogisticRegression().fit(X, y), os.path.join(path, "model.joblib"))
        else:
            xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(X, y).save_model(
                os.path.join(path, "model.json"))
        return path

    print("trained:", ray.get([train.remote("sklearn"), train.remote("xgboost")]))
    """
)


# A tuning trial: gets its parameters as --name=value, reports with raydeck.report.
TRIAL_SCRIPT = textwrap.dedent(
    """
    import argparse, raydeck
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    parser = argparse.ArgumentParser()
    parser.add_argument("--C", type=float, required=True)
    X, y = make_classification(600, 8, n_informative=3, flip_y=0.1, random_state=0)
    model = LogisticRegression(C=parser.parse_args().C, max_iter=500)
    raydeck.report(accuracy=cross_val_score(model, X, y, cv=3).mean())
    """
)


def step(title: str, action: Callable[[], T], describe: Callable[[T], str] = str) -> T:
    console.print(f"[bold cyan]→[/bold cyan] {title}")
    start = time.monotonic()
    result = action()
    elapsed = time.monotonic() - start
    detail = describe(result)
    steps.append((title, elapsed, detail))
    console.print(f"  [green]✓[/green] {detail} ({elapsed:.2f}s)", highlight=False)
    return result


def ray_client_roundtrip(cluster: str) -> str:
    ray.init(f"raydeck://{cluster}", logging_level=logging.ERROR)
    try:

        @ray.remote(resources={"accel": 1})
        def where() -> str:
            return str(ray.get_runtime_context().get_node_id())[:8]

        nodes = sorted(set(ray.get([where.remote() for _ in range(6)])))
        return f"6 tasks needing 'accel' ran on worker node(s) {', '.join(nodes)}"
    finally:
        ray.shutdown()


def share_with_ray(directory: Path) -> None:
    """Run as root, the server runs Ray as unprivileged OS users of the ``raydeck-ray`` group
    (SECURITY.md): the demo's jobs read and write its work dirs, so that group owns them
    (setgid, so what either side creates inside stays shared). Not root: nothing to do."""
    try:
        gid = grp.getgrnam(DEFAULT_RAY_OS_USER).gr_gid
    except KeyError:
        return
    if os.geteuid() == 0:
        os.chown(directory, 0, gid)
        directory.chmod(0o2770)


def run_quickstart(client: RaydeckClient, work_root: Path) -> None:
    spec = ClusterCreate.model_validate(
        {
            "name": "demo",
            "worker_pools": [
                {"name": "accel", "replica_count": 2, "num_cpus": 1, "resources": {"accel": 1}}
            ],
            "labels": {"team": "demo"},
        }
    )
    step(
        "create cluster 'demo' (head + 2 workers)",
        lambda: client.clusters.create(spec),
        lambda c: f"{c.name} {c.state.value} (the API returns at once)",
    )
    step("wait until RUNNING", lambda: client.clusters.wait("demo"), lambda c: f"{c.dashboard_url}")
    step("ray.init('raydeck://demo') and run tasks", lambda: ray_client_roundtrip("demo"))

    workdir = Path(tempfile.mkdtemp(prefix="raydeck-job-", dir=work_root))
    share_with_ray(workdir)
    (workdir / "train.py").write_text(TRAIN_SCRIPT)
    job = step(
        "submit a job with its working_dir",
        lambda: client.jobs.submit("demo", "python train.py", working_dir=workdir),
        lambda j: j.id,
    )
    step(
        "follow its logs",
        lambda: "".join(client.jobs.follow_logs(job.id)).strip(),
        lambda text: text.splitlines()[-2] if text else "(no output)",
    )
    done = step("job result", lambda: client.jobs.wait(job.id), lambda j: j.state.value)
    if done.state is not JobState.SUCCEEDED:
        raise SystemExit(f"demo job failed: {done.message}")

    tune(client, workdir)
    serve_models(client, workdir)

    def scale_down() -> Cluster:
        client.clusters.scale("demo", "accel", 1)
        return client.clusters.wait("demo")

    step(
        "scale pool 'accel' to 1",
        scale_down,
        lambda c: f"{c.worker_pools[0].current_replica_count} worker(s) running",
    )

    def delete() -> str:
        client.clusters.delete("demo")
        client.clusters.wait_deleted("demo")
        return "all of its processes stopped"

    step("delete the cluster", delete)


def tune(client: RaydeckClient, workdir: Path) -> None:
    """A 6-trial study (Optuna TPE in the control plane), 2 trials at a time on the cluster."""
    (workdir / "trial.py").write_text(TRIAL_SCRIPT)
    request = HyperparameterTuningJobCreate.model_validate(
        {
            "display_name": "tune-C",
            "cluster": "demo",
            "study_spec": {
                "metrics": [{"metric_id": "accuracy", "goal": "MAXIMIZE"}],
                "parameters": [
                    {
                        "parameter_id": "C",
                        "double_value_spec": {"min_value": 0.001, "max_value": 10},
                        "scale_type": "UNIT_LOG_SCALE",
                    }
                ],
                "algorithm": "bayesian",
                "seed": 0,
            },
            "trial_job_spec": {
                "base_output_dir": str(workdir / "tuning"),
                "worker_pool_specs": [
                    {"script": {"path": str(workdir / "trial.py")}, "machine_spec": {"cpus": 1}}
                ],
            },
            "max_trial_count": 6,
            "parallel_trial_count": 2,
        }
    )

    def best(job: HyperparameterTuningJob) -> str:
        if job.best_trial is None or job.best_trial.final_measurement is None:
            raise SystemExit(f"demo study {job.state.value}: {job.state_reason}")
        accuracy = job.best_trial.final_measurement.metrics["accuracy"]
        c_value = float(job.best_trial.parameters["C"])
        return f"{job.state.value}: best of 6 trials C={c_value:.3g}, accuracy {accuracy:.3f}"

    job = client.tuning_jobs.create(request)
    step("tune C with 6 trials, 2 at a time", lambda: client.tuning_jobs.wait(job.id), best)


def serve_models(client: RaydeckClient, workdir: Path) -> None:
    """Train two models on the cluster, register them as versions of one model, deploy both
    behind one endpoint with an 80/20 split and predict over REST and the SDK."""
    (workdir / "train_models.py").write_text(TRAIN_MODELS_SCRIPT)
    model_dir = workdir / "trained"
    job = client.jobs.submit("demo", f"python train_models.py {model_dir}", working_dir=workdir)
    step(
        "train sklearn + XGBoost in a job",
        lambda: client.jobs.wait(job.id),
        lambda j: f"{j.state.value}",
    )

    def register() -> str:
        first = client.models.upload("churn", model_dir / "sklearn", "sklearn")
        second = client.models.upload(
            "churn", model_dir / "xgboost", "xgboost", parent_model="churn"
        )
        return f"churn@{first.version_id} (sklearn), churn@{second.version_id} (xgboost, default)"

    step("register both as versions of model 'churn'", register)
    client.endpoints.create("churn-api", cluster="demo")
    client.endpoints.deploy("churn-api", "churn@1", num_cpus=0.25)
    client.endpoints.deploy("churn-api", "churn@2", num_cpus=0.25, traffic_percentage=20)
    endpoint = step(
        "deploy both with an 80/20 split",
        lambda: client.endpoints.wait("churn-api"),
        lambda e: f"READY at {e.predict_url}",
    )
    instance = [[0.5, -1.2, 0.3, 2.0]]
    step(
        "predict over REST (curl-style)",
        lambda: httpx.post(
            f"{endpoint.predict_url}/predict",
            json={"instances": instance},
            headers={"Authorization": f"Bearer {os.environ['RAYDECK_TOKEN']}"},
        ).json(),
        lambda r: f"{r['predictions']} from {r['deployed_model_id']}",
    )
    bound = client.endpoint("churn-api")
    step(
        "predict 200 times with the SDK",
        lambda: Counter(bound.predict(instance).model_version_id for _ in range(200)),
        lambda c: ", ".join(f"{k}: {v}" for k, v in sorted(c.items())),
    )
    # Free the endpoint's Serve replicas first: Ray Data budgets the CPUs left on this
    # small cluster, and a read task waits while Serve holds part of every core.
    client.endpoints.delete("churn-api")
    deadline = time.monotonic() + 120
    while any(e.display_name == "churn-api" for e in client.endpoints.list().items):
        if time.monotonic() > deadline:
            raise SystemExit("endpoint churn-api was not deleted within 120 s")
        time.sleep(0.5)
    batch_input = workdir / "batch.jsonl"
    batch_input.write_text("".join(json.dumps(row) + "\n" for row in [[0.1, 0.2, 0.3, 0.4]] * 1000))
    batch = client.batch_predictions.create(
        model="churn@default",
        cluster="demo",
        input=str(batch_input),
        output=str(workdir / "batch-out"),
        num_cpus=0.5,
    )
    step(
        "batch-predict a 1,000-row file",
        lambda: client.batch_predictions.wait(batch.id),
        lambda b: f"{b.state.value}: {b.counts.rows_succeeded} rows predicted",
    )


def main() -> None:
    home = Path(os.environ.get("RAYDECK_DEMO_HOME") or tempfile.mkdtemp(prefix="raydeck-demo-"))
    # The jobs' files, tuning outputs and batch input/output live here: the admin allowlists it
    # (the server opens only its projects' own areas and such roots).
    work_root = Path(tempfile.mkdtemp(prefix="raydeck-demo-work-"))
    server = ServerProcess(home, env={"RAYDECK_ALLOWED_ROOTS": str(work_root)})
    step("start the control plane (SQLite, local backend)", server.start, lambda _: server.url)
    share_with_ray(work_root)
    os.environ.update({"RAYDECK_SERVER": server.url, "RAYDECK_TOKEN": server.token})
    try:
        with RaydeckClient() as client:
            run_quickstart(client, work_root)
    finally:
        server.stop()
    table = Table(title="Raydeck demo", title_justify="left")
    for column in ("step", "seconds", "result"):
        table.add_column(column)
    for title, elapsed, detail in steps:
        table.add_row(title, f"{elapsed:.2f}", detail)
    console.print(table)
    console.print(f"server home: {home} (log: {server.log_path})")


if __name__ == "__main__":
    main()
