"""Issue 5 figures: what a tuning trial costs in Raydeck against Ray Tune and plain Optuna, and
how fast a CustomJob starts.

Per-trial overhead = (wall time − trials × objective time) / trials, for a 100-trial study of
a trivial objective ((x − 0.3)², objective time 0) with the same sampler (Optuna TPE, seed 0,
the settings Raydeck's bayesian algorithm uses) everywhere:
- Raydeck: a HyperparameterTuningJob, 2 parallel trials, each a script reporting with
  ``raydeck.report``; wall = create → SUCCEEDED.
- Ray Tune: ``Tuner`` + ``OptunaSearch`` with the same sampler, ``max_concurrent_trials=2``,
  1 CPU per trial (Tune's defaults otherwise), run as a Ray job on the same cluster; wall =
  submit → SUCCEEDED. Both walls include starting their Ray job's driver.
- plain Optuna: ``study.optimize`` in this process, one trial at a time (no cluster).
CustomJob submit→RUNNING: create → RUNNING (replicas started) of a one-replica job.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import optuna

from benchmarks.report import Figure
from raydeck.client import RaydeckClient
from raydeck.core.models import ClusterCreate, JobState
from raydeck.core.models.training import CustomJobCreate, TrainingState
from raydeck.core.models.tuning import HyperparameterTuningJobCreate

__all__ = ["bench_tuning"]

CLUSTER = "bench-tune"
TRIALS = 100
PARALLEL = 2
SEED = 0
STARTUP_TRIALS = 10  # what Raydeck's bayesian algorithm uses for a 100-trial budget
START_ROUNDS = 3

TRIAL_SCRIPT = """
import argparse
import raydeck
p = argparse.ArgumentParser()
p.add_argument("--x", type=float)
raydeck.report(objective=(p.parse_args().x - 0.3) ** 2)
"""

TUNE_SCRIPT = """
import sys, time
import optuna, ray
from ray import tune
from ray.tune.search.optuna import OptunaSearch

def objective(config):
    return {{"objective": (config["x"] - 0.3) ** 2}}

ray.init(log_to_driver=False)
sampler = optuna.samplers.TPESampler(
    seed={seed}, n_startup_trials={startup}, constant_liar=True, multivariate=True
)
begin = time.monotonic()
tuner = tune.Tuner(
    tune.with_resources(objective, {{"cpu": 1}}),
    param_space={{"x": tune.uniform(-1.0, 1.0)}},
    tune_config=tune.TuneConfig(
        search_alg=OptunaSearch(metric="objective", mode="min", sampler=sampler),
        num_samples={trials},
        max_concurrent_trials={parallel},
    ),
    run_config=tune.RunConfig(storage_path=sys.argv[1], verbose=0),
)
results = tuner.fit()
best = results.get_best_result(metric="objective", mode="min")
print(f"TUNE trials={{len(results)}} errors={{results.num_errors}} "
      f"best={{best.metrics['objective']:.6f}} fit_seconds={{time.monotonic() - begin:.2f}}")
"""


def _per_trial(wall: float, objective_seconds: float = 0.0) -> float:
    return (wall - TRIALS * objective_seconds) / TRIALS


def _plain_optuna() -> float:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(
        seed=SEED, n_startup_trials=STARTUP_TRIALS, constant_liar=True, multivariate=True
    )
    study = optuna.create_study(direction="minimize", sampler=sampler)
    begin = time.monotonic()
    study.optimize(lambda t: (t.suggest_float("x", -1.0, 1.0) - 0.3) ** 2, n_trials=TRIALS)
    return time.monotonic() - begin


def _raydeck_study(client: RaydeckClient, code: Path) -> float:
    request = HyperparameterTuningJobCreate.model_validate(
        {
            "cluster": CLUSTER,
            "study_spec": {
                "metrics": [{"metric_id": "objective", "goal": "MINIMIZE"}],
                "parameters": [
                    {"parameter_id": "x", "double_value_spec": {"min_value": -1, "max_value": 1}}
                ],
                "algorithm": "bayesian",
                "seed": SEED,
            },
            "trial_job_spec": {
                "base_output_dir": str(code / "raydeck-study"),
                "worker_pool_specs": [
                    {"script": {"path": str(code / "trial.py")}, "machine_spec": {"cpus": 1}}
                ],
            },
            "max_trial_count": TRIALS,
            "parallel_trial_count": PARALLEL,
        }
    )
    begin = time.monotonic()
    job = client.tuning_jobs.create(request)
    done = client.tuning_jobs.wait(job.id, timeout=3600, poll=0.1)
    wall = time.monotonic() - begin
    if done.state is not TrainingState.SUCCEEDED:
        raise RuntimeError(f"raydeck study {job.id} ended {done.state}: {done.state_reason}")
    ran = sum(done.trial_counts.values())
    best = done.best_trial.final_measurement if done.best_trial else None
    print(f"  raydeck: {ran} trials in {wall:.1f}s, best {best.metrics if best else None}")
    return wall


def _ray_tune(client: RaydeckClient, code: Path) -> float:
    script = code / "tune_bench.py"
    entrypoint = f"{sys.executable} {script} {code / 'tune-results'}"
    begin = time.monotonic()
    job = client.jobs.submit(CLUSTER, entrypoint)
    done = client.jobs.wait(job.id, timeout=3600, poll=0.1)
    wall = time.monotonic() - begin
    logs = client.jobs.logs(job.id)
    summary = next((line for line in logs.splitlines() if line.startswith("TUNE ")), None)
    if done.state is not JobState.SUCCEEDED or summary is None:
        raise RuntimeError(f"ray tune job {job.id} ended {done.state}: {logs[-1500:]}")
    if f"trials={TRIALS} errors=0" not in summary:
        raise RuntimeError(f"ray tune did not run {TRIALS} clean trials: {summary}")
    print(f"  ray tune: {summary} (job wall {wall:.1f}s)")
    return wall


def _submit_to_running(client: RaydeckClient, code: Path) -> list[float]:
    times = []
    for round_index in range(START_ROUNDS):
        request = CustomJobCreate.model_validate(
            {
                "cluster": CLUSTER,
                "base_output_dir": str(code / f"start-{round_index}"),
                "worker_pool_specs": [
                    {"command": ["sleep", "2"], "machine_spec": {"cpus": 1}},
                ],
            }
        )
        begin = time.monotonic()
        job = client.custom_jobs.create(request)
        client.custom_jobs.wait(
            job.id, timeout=600, poll=0.05, until=frozenset({TrainingState.RUNNING})
        )
        times.append(time.monotonic() - begin)
        done = client.custom_jobs.wait(job.id, timeout=600)
        if done.state is not TrainingState.SUCCEEDED:
            raise RuntimeError(f"custom job {job.id} ended {done.state}: {done.state_reason}")
        print(f"  custom job round {round_index}: RUNNING after {times[-1]:.2f}s")
    return times


def bench_tuning(client: RaydeckClient) -> list[Figure]:
    code = Path(tempfile.mkdtemp(prefix="raydeck-bench-tune-"))
    (code / "trial.py").write_text(textwrap.dedent(TRIAL_SCRIPT))
    (code / "tune_bench.py").write_text(
        textwrap.dedent(TUNE_SCRIPT).format(
            seed=SEED, startup=STARTUP_TRIALS, trials=TRIALS, parallel=PARALLEL
        )
    )
    client.clusters.create(
        ClusterCreate.model_validate({"name": CLUSTER, "head": {"num_cpus": PARALLEL}})
    )
    client.clusters.wait(CLUSTER, timeout=300)
    try:
        optuna_wall = _plain_optuna()
        print(f"  plain optuna: {TRIALS} trials in {optuna_wall:.2f}s")
        start_times = _submit_to_running(client, code)
        tune_wall = _ray_tune(client, code)
        raydeck_wall = _raydeck_study(client, code)
    finally:
        client.clusters.delete(CLUSTER)
        client.clusters.wait_deleted(CLUSTER, timeout=300)
    raydeck = _per_trial(raydeck_wall)
    what = f"{TRIALS}-trial TPE study, trivial objective, {PARALLEL} parallel"
    return [
        Figure(
            f"tuning per-trial overhead vs Ray Tune+OptunaSearch ({what})",
            "s",
            raydeck,
            _per_trial(tune_wall),
            1.5,
        ),
        Figure(
            f"tuning per-trial overhead vs plain Optuna in one process ({TRIALS} trials)",
            "s",
            raydeck,
            _per_trial(optuna_wall),
            None,
        ),
        Figure(
            "CustomJob submit→RUNNING, one replica (median), absolute",
            "s",
            statistics.median(start_times),
            None,
            5.0,
            absolute=True,
        ),
    ]
