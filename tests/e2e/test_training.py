"""Training on real Ray through a real server, one shared cluster (head with 4 logical CPUs):
a module CustomJob with a second pool writes AIP_MODEL_DIR; a job that fails once restarts
and resumes from its checkpoint; a 2-worker Ray Train XGBoost job; a seeded 12-trial
bayesian study beats random search on the same budget; pruning stops trials early; a
pipeline ends with a registered model that predicts; cancel stops the Ray job (and no reader
of the Ray Jobs proxy sees the job's token); a timeout fails the job (through the CLI); a
study keeps its progress across a server kill -9 (last: it restarts the session's server)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from raydeck.client import RaydeckClient
from raydeck.core.models import JobState
from raydeck.core.models.pipelines import TrainingPipelineCreate
from raydeck.core.models.training import CustomJobCreate, TrainingState
from raydeck.core.models.tuning import HyperparameterTuningJobCreate, TrialState
from raydeck.runtime.predictors import load_predictor
from tests.ray_fixtures import LiveServer

pytestmark = [pytest.mark.ray, pytest.mark.slow]

S = TrainingState

TASK = """
import json, os, sys
import joblib
from sklearn.linear_model import LogisticRegression
import raydeck

spec = json.loads(os.environ["CLUSTER_SPEC"])
tf = json.loads(os.environ["TF_CONFIG"])
print("task", spec["task"], "tf", tf["task"], "args", sys.argv[1:], flush=True)
assert tf["task"] == {"type": "chief", "index": 0}, tf
assert len(spec["cluster"]["workerpool1"]) == 1, spec
os.makedirs(os.environ["AIP_MODEL_DIR"], exist_ok=True)
model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
joblib.dump(model, os.path.join(os.environ["AIP_MODEL_DIR"], "model.joblib"))
for step in range(3):
    raydeck.report(loss=1.0 / (step + 1), step=step)
"""

WORKER = "import json, os; print('worker', json.loads(os.environ['CLUSTER_SPEC'])['task'])"

FAIL_ONCE = """
import os, sys
ckpt = os.path.join(os.environ["AIP_CHECKPOINT_DIR"], "state.txt")
os.makedirs(os.path.dirname(ckpt), exist_ok=True)
if not os.path.exists(ckpt):
    open(ckpt, "w").write("epoch=3")
    sys.exit("simulated crash after epoch 3")
os.makedirs(os.environ["AIP_MODEL_DIR"], exist_ok=True)
open(os.path.join(os.environ["AIP_MODEL_DIR"], "resumed.txt"), "w").write(open(ckpt).read())
"""

XGB = """
import os
import ray, ray.train, xgboost
from ray.train.xgboost import XGBoostTrainer
from raydeck.training import scaling_config

def loop(config):
    context = ray.train.get_context()
    shard = ray.train.get_dataset_shard("train").materialize().to_pandas()
    data = xgboost.DMatrix(shard[["x"]].to_numpy(), label=shard["y"].to_numpy())
    booster = xgboost.train({"objective": "binary:logistic"}, data, num_boost_round=3)
    rank, world = context.get_world_rank(), context.get_world_size()
    with open(os.path.join(config["out"], f"rank-{rank}.txt"), "w") as out:
        out.write(f"{world} {len(shard)}")
    if rank == 0:
        booster.save_model(os.path.join(config["out"], "model.json"))

out = os.environ["AIP_MODEL_DIR"]
os.makedirs(out, exist_ok=True)
rows = [{"x": float(i), "y": int(i > 20)} for i in range(40)]
XGBoostTrainer(loop, train_loop_config={"out": out}, scaling_config=scaling_config(),
               datasets={"train": ray.data.from_items(rows)},
               run_config=ray.train.RunConfig(storage_path=os.environ["AIP_CHECKPOINT_DIR"])).fit()
"""

QUADRATIC = """
import argparse
import raydeck
p = argparse.ArgumentParser()
p.add_argument("--x", type=float)
p.add_argument("--y", type=float)
a = p.parse_args()
raydeck.report(objective=-((a.x - 1.3) ** 2) - (a.y + 2.1) ** 2)
"""

SLOW_TRIAL = """
import argparse, time
import raydeck
p = argparse.ArgumentParser()
p.add_argument("--x", type=float)
a = p.parse_args()
time.sleep(1.5)
raydeck.report(objective=-((a.x - 0.5) ** 2))
"""

HOLD = (
    "import os, time; t = os.environ['RAYDECK_TOKEN']; "
    "print('token', t[:4], len(t), flush=True); time.sleep(600)"
)

CURVE = """
import argparse, time
import raydeck
p = argparse.ArgumentParser()
p.add_argument("--rate", type=float)
a = p.parse_args()
for step in range(1, 11):
    raydeck.report(loss=a.rate * 10 / step, step=step)
    time.sleep(0.3)
"""


@pytest.fixture(scope="module")
def code(live_server: LiveServer) -> Path:
    root = live_server.cluster_tmp_dir("code-")  # read on the cluster, by its Ray OS user
    (root / "trainer").mkdir()
    (root / "trainer" / "__init__.py").write_text("")
    for name, text in {
        "trainer/task.py": TASK,
        "fail_once.py": FAIL_ONCE,
        "xgb.py": XGB,
        "quadratic.py": QUADRATIC,
        "curve.py": CURVE,
        "slow_trial.py": SLOW_TRIAL,
    }.items():
        (root / name).write_text(textwrap.dedent(text))
    return root


def _job(body: dict[str, Any]) -> CustomJobCreate:
    return CustomJobCreate.model_validate(body)


def test_module_job_with_two_pools_writes_its_model(
    live_client: RaydeckClient, cluster: str, code: Path, cluster_tmp: Path
) -> None:
    job = live_client.custom_jobs.create(
        _job(
            {
                "cluster": cluster,
                "base_output_dir": str(cluster_tmp / "out"),
                "worker_pool_specs": [
                    {
                        "python_module": {"module_name": "trainer.task", "package_dir": str(code)},
                        "args": ["--epochs=1"],
                    },
                    {"command": ["python", "-c", WORKER], "machine_spec": {"cpus": 0.5}},
                ],
            }
        )
    )
    assert job.state is S.QUEUED
    done = live_client.custom_jobs.wait(job.id, timeout=240)
    assert done.state is S.SUCCEEDED, done.state_reason
    assert (cluster_tmp / "out" / "model" / "model.joblib").is_file()
    listed = {a.path: a.size for a in live_client.custom_jobs.artifacts(job.id)}
    model_file = cluster_tmp / "out" / "model" / "model.joblib"
    assert listed["model/model.joblib"] == model_file.stat().st_size
    fetched = live_client.custom_jobs.download_artifact(
        job.id, "model/model.joblib", cluster_tmp / "fetched.joblib"
    )
    assert fetched.read_bytes() == model_file.read_bytes()
    chief_log = live_client.custom_jobs.logs(job.id)
    assert "'type': 'workerpool0'" in chief_log and "--epochs=1" in chief_log
    worker_log = live_client.custom_jobs.logs(job.id, "workerpool1-0")
    assert "'type': 'workerpool1', 'index': 0" in worker_log
    losses = [(p.step, p.value) for p in live_client.custom_jobs.metrics(job.id, "loss")]
    assert losses == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    # A missing module fails with the cause named.
    bad = live_client.custom_jobs.create(
        _job(
            {
                "cluster": cluster,
                "worker_pool_specs": [
                    {"python_module": {"module_name": "trainer.nope", "package_dir": str(code)}}
                ],
            }
        )
    )
    failed = live_client.custom_jobs.wait(bad.id, timeout=120)
    assert failed.state is S.FAILED
    assert "module 'trainer.nope' not found" in (failed.state_reason or "")


def test_a_job_that_fails_once_restarts_and_resumes(
    live_client: RaydeckClient, cluster: str, code: Path, cluster_tmp: Path
) -> None:
    job = live_client.custom_jobs.create(
        _job(
            {
                "cluster": cluster,
                "base_output_dir": str(cluster_tmp / "out"),
                "scheduling": {"max_restarts": 1},
                "worker_pool_specs": [{"script": {"path": str(code / "fail_once.py")}}],
            }
        )
    )
    done = live_client.custom_jobs.wait(job.id, timeout=240)
    assert done.state is S.SUCCEEDED, done.state_reason
    assert done.attempt == 1
    assert (cluster_tmp / "out" / "model" / "resumed.txt").read_text() == "epoch=3"


def test_ray_train_xgboost_over_two_workers(
    live_client: RaydeckClient, cluster: str, code: Path, cluster_tmp: Path
) -> None:
    job = live_client.custom_jobs.create(
        _job(
            {
                "cluster": cluster,
                "base_output_dir": str(cluster_tmp / "out"),
                "worker_pool_specs": [
                    {"script": {"path": str(code / "xgb.py")}, "machine_spec": {"cpus": 0.5}},
                    {"replica_count": 2, "machine_spec": {"cpus": 1}},  # Ray Train workers
                ],
            }
        )
    )
    done = live_client.custom_jobs.wait(job.id, timeout=400)
    assert done.state is S.SUCCEEDED, done.state_reason
    model_dir = cluster_tmp / "out" / "model"
    # Both workers of the codeless pool trained, each on its half of the 40 rows.
    ranks = sorted(p.read_text() for p in model_dir.glob("rank-*.txt"))
    assert ranks == ["2 20", "2 20"]
    assert (model_dir / "model.json").is_file()


def _study(
    code: Path, tmp: Path, algorithm: str, cluster: str, seed: int
) -> HyperparameterTuningJobCreate:
    return HyperparameterTuningJobCreate.model_validate(
        {
            "cluster": cluster,
            "study_spec": {
                "metrics": [{"metric_id": "objective", "goal": "MAXIMIZE"}],
                "parameters": [
                    {"parameter_id": "x", "double_value_spec": {"min_value": -5, "max_value": 5}},
                    {"parameter_id": "y", "double_value_spec": {"min_value": -5, "max_value": 5}},
                ],
                "algorithm": algorithm,
                "seed": seed,
            },
            "trial_job_spec": {
                "base_output_dir": str(tmp / algorithm),
                "worker_pool_specs": [
                    {"script": {"path": str(code / "quadratic.py")}, "machine_spec": {"cpus": 1}}
                ],
            },
            "max_trial_count": 12,
            "parallel_trial_count": 3,
        }
    )


def test_bayesian_study_beats_random_search_on_the_same_budget(
    live_client: RaydeckClient, cluster: str, code: Path, cluster_tmp: Path
) -> None:
    best: dict[str, float] = {}
    for algorithm in ("bayesian", "random"):
        job = live_client.tuning_jobs.create(_study(code, cluster_tmp, algorithm, cluster, seed=1))
        done = live_client.tuning_jobs.wait(job.id, timeout=400)
        assert done.state is S.SUCCEEDED, done.state_reason
        trials = live_client.tuning_jobs.trials(job.id)
        assert len(trials) == 12 and all(t.state is TrialState.SUCCEEDED for t in trials)
        assert done.best_trial is not None and done.best_trial.final_measurement is not None
        best[algorithm] = done.best_trial.final_measurement.metrics["objective"]
        values = [t.final_measurement.metrics["objective"] for t in trials if t.final_measurement]
        assert best[algorithm] == max(values)
    # Optimum 0 at (1.3, -2.1) in a 10 × 10 box; stated tolerance: a squared distance of 6.
    # 12 trials, 3 at a time, leave TPE only 3 random startup trials, and which trials it has
    # seen when it asks depends on the order trials end. Seed 1 holds whatever the order: over
    # 70 simulated completion orders (plain Optuna, the same sampler) TPE's best was -5.4 at
    # worst, random search's -11.6. (Seed 7 with a tolerance of 1 held in 1 order out of 5.)
    assert best["bayesian"] >= -6.0, best
    assert best["bayesian"] > best["random"], best


def test_pruning_stops_poor_trials_early(
    live_client: RaydeckClient, cluster: str, code: Path, cluster_tmp: Path
) -> None:
    request = HyperparameterTuningJobCreate.model_validate(
        {
            "cluster": cluster,
            "study_spec": {
                "metrics": [{"metric_id": "loss", "goal": "MINIMIZE"}],
                "parameters": [
                    {"parameter_id": "rate", "discrete_value_spec": {"values": [1, 2, 3, 4]}}
                ],
                "algorithm": "grid",
                "seed": 5,  # grid order 1, 2, 3, 4: every later trial is worse than the first
                "early_stopping": {"pruner": "median", "startup_trials": 1, "warmup_steps": 2},
            },
            "trial_job_spec": {
                "base_output_dir": str(cluster_tmp / "prune"),
                "worker_pool_specs": [{"script": {"path": str(code / "curve.py")}}],
            },
            "max_trial_count": 4,
            "parallel_trial_count": 1,
        }
    )
    job = live_client.tuning_jobs.create(request)
    done = live_client.tuning_jobs.wait(job.id, timeout=400)
    assert done.state is S.SUCCEEDED, done.state_reason
    trials = live_client.tuning_jobs.trials(job.id)
    stopped = [t for t in trials if t.state is TrialState.STOPPED]
    assert stopped, [(t.parameters, t.state) for t in trials]
    for trial in stopped:
        steps = live_client.tuning_jobs.trial_metrics(job.id, trial.id, "loss")
        assert 0 < len(steps) < 10
    assert done.best_trial is not None and done.best_trial.parameters["rate"] == 1


def test_pipeline_registers_a_model_that_predicts(
    live_client: RaydeckClient, cluster: str, code: Path, cluster_tmp: Path
) -> None:
    request = TrainingPipelineCreate.model_validate(
        {
            "training_task": {
                "custom_job": {
                    "cluster": cluster,
                    "base_output_dir": str(cluster_tmp / "out"),
                    "worker_pool_specs": [
                        {
                            "python_module": {
                                "module_name": "trainer.task",
                                "package_dir": str(code),
                            }
                        },
                        {"command": ["python", "-c", WORKER], "machine_spec": {"cpus": 0.5}},
                    ],
                }
            },
            "model_to_upload": {
                "display_name": "trained",
                "framework": "sklearn",
                "labels": {"team": "ml"},
            },
        }
    )
    pipeline = live_client.training_pipelines.create(request)
    done = live_client.training_pipelines.wait(pipeline.id, timeout=300)
    assert done.state is S.SUCCEEDED, done.state_reason
    assert done.model_version == "trained@1"
    version = live_client.models.get_version("trained@1")
    assert version.labels["team"] == "ml"
    predictor = load_predictor("sklearn", version.artifact_uri)
    assert predictor.predict([[0.0], [3.0]]) == [0, 1]


def _gone(marker: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for proc in psutil.process_iter(["cmdline"]):
            if marker in " ".join(proc.info["cmdline"] or []):
                alive.append(proc)
        if not alive:
            return True
        time.sleep(0.5)
    return False


def test_cancel_stops_the_ray_job_and_the_token_stays_hidden(
    live_server: LiveServer, live_client: RaydeckClient, cluster: str, cluster_tmp: Path
) -> None:
    marker = f"hold-{uuid.uuid4().hex[:12]}"
    job = live_client.custom_jobs.create(
        _job(
            {
                "cluster": cluster,
                "base_output_dir": str(cluster_tmp / "out"),
                "worker_pool_specs": [{"command": ["python", "-c", HOLD, marker]}],
            }
        )
    )
    running = live_client.custom_jobs.wait(job.id, timeout=180, until=frozenset({S.RUNNING}))
    deadline = time.monotonic() + 60
    while "token rdk_ 47" not in live_client.custom_jobs.logs(job.id):
        assert time.monotonic() < deadline, live_client.custom_jobs.logs(job.id)
        time.sleep(0.5)  # the job itself holds a real job token

    # Ray shows the job's env vars to any reader of jobs; through Raydeck, the token is redacted.
    viewer = live_client.tokens.create(f"viewer-{marker}", role="viewer").secret
    proxy = f"{live_server.url}/api/v1/clusters/{cluster}/ray/api/jobs"
    headers = {"Authorization": f"Bearer {viewer}"}
    one = httpx.get(f"{proxy}/{running.submission_id}", headers=headers, timeout=30)
    listed = httpx.get(f"{proxy}/", headers=headers, timeout=30)
    for response in (one, listed):
        assert response.status_code == 200, response.text
        assert not re.search(r"rdk_[A-Za-z0-9_-]{16,}", response.text)
    assert one.json()["runtime_env"]["env_vars"]["RAYDECK_TOKEN"] == "<redacted>"
    assert one.json()["runtime_env"]["env_vars"]["RAYDECK_SERVER"].startswith("http")

    live_client.custom_jobs.cancel(job.id)
    done = live_client.custom_jobs.wait(job.id, timeout=120)
    assert done.state is S.CANCELLED and (done.state_reason or "").startswith("cancelled")
    assert running.job_id is not None
    assert live_client.jobs.get(running.job_id).state is JobState.STOPPED
    assert _gone(marker), "the job's process outlived its cancel"


def test_a_timeout_fails_the_job_naming_it(live_server: LiveServer, cluster: str) -> None:
    """Through the CLI: --wait follows it to FAILED and exits non-zero."""
    result = subprocess.run(
        [sys.executable, "-m", "raydeck.cli.main", "custom-jobs", "create", "-c", cluster,
         "--command", "sleep 120", "--timeout", "3", "--wait"],
        env={**live_server.client_env(), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "FAILED" in result.stdout and "timed out after 3 s" in result.stdout, result.stdout


def test_a_study_keeps_its_progress_across_a_server_kill9(
    live_server: LiveServer, live_client: RaydeckClient, cluster: str, code: Path, cluster_tmp: Path
) -> None:
    request = HyperparameterTuningJobCreate.model_validate(
        {
            "cluster": cluster,
            "study_spec": {
                "metrics": [{"metric_id": "objective", "goal": "MAXIMIZE"}],
                "parameters": [
                    {"parameter_id": "x", "double_value_spec": {"min_value": 0, "max_value": 1}}
                ],
                "seed": 11,
            },
            "trial_job_spec": {
                "base_output_dir": str(cluster_tmp / "study"),
                "worker_pool_specs": [{"script": {"path": str(code / "slow_trial.py")}}],
            },
            "max_trial_count": 6,
            "parallel_trial_count": 2,
        }
    )
    job = live_client.tuning_jobs.create(request)
    deadline = time.monotonic() + 240
    while True:
        ended = [t for t in live_client.tuning_jobs.trials(job.id) if t.end_time is not None]
        if len(ended) >= 2:
            break
        assert time.monotonic() < deadline, live_client.tuning_jobs.get(job.id)
        time.sleep(0.3)

    live_server.kill9()
    time.sleep(3)  # trials go on; their reports and the driver's calls wait for the server
    live_server.start()

    done = live_client.tuning_jobs.wait(job.id, timeout=300)
    assert done.state is S.SUCCEEDED, done.state_reason
    assert done.attempt == 0  # the same study driver carried on
    trials = live_client.tuning_jobs.trials(job.id)
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state is TrialState.SUCCEEDED for t in trials), [t.state for t in trials]
    before = {t.id: t.final_measurement for t in ended}
    assert {t.id: t.final_measurement for t in trials if t.id in before} == before
