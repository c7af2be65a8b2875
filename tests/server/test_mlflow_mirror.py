"""Mirroring of custom jobs and trials to MLflow.

The slow tests run a REAL MLflow tracking server (``mlflow server`` from a pinned mlflow in
its own cached virtualenv, see tests/mlflow_server.py) and read back over its REST API what
the mirror sent: experiments, runs, params, metric histories with steps, tags and statuses,
and that a restart (even one that lost the stored MLflow run id) creates no second run.
Jobs and trials are driven through Raydeck's own REST calls (create, metrics reports, the
study driver's suggest/report/complete); only their state changes are written to the rows,
as the training reconciler would. The fast tests need no MLflow: an unreachable one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from raydeck.core.models import ClusterCreate
from raydeck.core.models.training import CustomJobSpec, TrainingState
from raydeck.db.models import ClusterRow, MlflowRunRow, TrainingJobRow, utcnow
from raydeck.devtools import free_port
from raydeck.server.services import training_runs as runs
from raydeck.server.services.mlflow_mirror import MlflowMirror, _key, experiment_name, job_params
from tests.conftest import Api
from tests.mlflow_server import running_mlflow

JOBS = "/api/v1/customJobs"
HPT = "/api/v1/hyperparameterTuningJobs"


# ---- helpers ---------------------------------------------------------------------------------


def _with_dev_cluster(api: Api) -> Api:
    api.sdk().clusters.create(ClusterCreate(name="dev"))
    with api.app.state.raydeck.db.session() as session:
        for row in session.query(ClusterRow):
            row.state, row.dashboard_url = "RUNNING", "http://127.0.0.1:9"
    return api


@pytest.fixture
def dev(static_api: Api) -> Api:
    return _with_dev_cluster(static_api)


def _create_job(api: Api, name: str, **changes: Any) -> str:
    body: dict[str, Any] = {
        "display_name": name,
        "cluster": "dev",
        "labels": {"team": "ml"},
        "worker_pool_specs": [
            {
                "command": ["python", "train.py"],
                "args": ["--lr=0.01", "--epochs=3", "--verbose"],
                "env": {"API_KEY": "never-sent"},
            }
        ],
    }
    body.update(changes)
    response = api.http.post(JOBS, json=body, headers=api.headers("user"))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _report(api: Api, url: str, points: list[dict[str, Any]]) -> None:
    response = api.http.post(url, json={"points": points}, headers=api.headers())
    assert response.status_code == 200, response.text


def _set_state(api: Api, job_id: str, state: TrainingState, reason: str | None = None) -> None:
    """What the training reconciler writes as the job's Ray job runs and ends."""
    with api.app.state.raydeck.db.session() as session:
        row = session.get(TrainingJobRow, job_id)
        assert row is not None
        if state in (TrainingState.SUCCEEDED, TrainingState.FAILED, TrainingState.CANCELLED):
            runs.finish(session, row, state, reason)
        else:
            row.state, row.start_time = state.value, row.start_time or utcnow()


def _broken_job(api: Api) -> str:
    """A row no current version would store (its job spec is unreadable)."""
    with api.app.state.raydeck.db.session() as session:
        session.add(
            TrainingJobRow(
                id="cj-broken",
                kind="custom",
                display_name="broken",
                state="SUCCEEDED",
                spec={"job_spec": {"worker_pool_specs": []}, "base_output_dir": "/nowhere"},
                labels={},
            )
        )
    return "cj-broken"


def _mirror_row(api: Api, run_id: str) -> MlflowRunRow | None:
    with api.app.state.raydeck.db.session() as session:
        row = session.get(MlflowRunRow, run_id)
        if row is not None:
            session.expunge(row)
        return row


class MlflowReader:
    """Reads back what the tracking server stored, over its REST API."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=f"{url}/api/2.0/mlflow", timeout=30)

    def experiment_id(self, name: str) -> str | None:
        response = self.http.get("experiments/get-by-name", params={"experiment_name": name})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return str(response.json()["experiment"]["experiment_id"])

    def runs(self, experiment: str) -> list[dict[str, Any]]:
        experiment_id = self.experiment_id(experiment)
        if experiment_id is None:
            return []
        body = {"experiment_ids": [experiment_id], "max_results": 1000}
        response = self.http.post("runs/search", json=body)
        response.raise_for_status()
        return list(response.json().get("runs", []))

    def run_of(self, experiment: str, raydeck_id: str) -> dict[str, Any]:
        found = [r for r in self.runs(experiment) if _tags(r).get("raydeck.run_id") == raydeck_id]
        assert len(found) == 1, f"{len(found)} MLflow runs for {raydeck_id}"
        return found[0]

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        response = self.http.get(
            "metrics/get-history", params={"run_id": run_id, "metric_key": key}
        )
        response.raise_for_status()
        return sorted((m["step"], m["value"]) for m in response.json().get("metrics", []))


def _tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _params(run: dict[str, Any]) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


# ---- without MLflow ----------------------------------------------------------------------------


def test_params_summarize_the_pools_and_never_carry_env_values() -> None:
    spec = CustomJobSpec.model_validate(
        {
            "worker_pool_specs": [
                {
                    "python_module": {"module_name": "trainer.task"},
                    "args": ["--lr=0.5", "--flag", "positional"],
                    "env": {"TOKEN": "s3cret"},
                },
                {"replica_count": 2, "machine_spec": {"cpus": 2, "gpus": 1}},
            ],
            "scheduling": {"max_restarts": 2, "timeout_seconds": 60},
        }
    )
    params = job_params(spec)
    assert params == {
        "workerpool0.replica_count": "1",
        "workerpool0.machine": "cpus=1 gpus=0",
        "workerpool0.program": "module trainer.task",
        "workerpool0.args": "--lr=0.5 --flag positional",
        "workerpool1.replica_count": "2",
        "workerpool1.machine": "cpus=2 gpus=1",
        "workerpool1.program": "Ray Train workers",
        "args.lr": "0.5",
        "max_restarts": "2",
        "timeout_seconds": "60",
    }
    assert "s3cret" not in str(params)
    assert _key("val/acc@top-1 (%)") == "val/acc_top-1 ___"
    assert _key("/../x") == "_/x"
    row = TrainingJobRow(id="cj-1", kind="custom", display_name="run", project="default")
    assert experiment_name(row) == "run"
    row.project = "team"
    assert experiment_name(row) == "team/run"


def test_an_unreachable_mlflow_never_breaks_a_job_and_is_retried_later(dev: Api) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    mirror = MlflowMirror(dev.app.state.raydeck.db, closed)
    job_id = _create_job(dev, "offline")
    _report(dev, f"{JOBS}/{job_id}/metrics:report", [{"metric": "loss", "value": 1.0}])
    broken = _broken_job(dev)

    assert mirror.sync_due() == 0
    unreadable = _mirror_row(dev, broken)  # recorded and retried later, never raised
    assert unreadable is not None and unreadable.failures == 1
    assert unreadable.last_error is not None and "worker_pool_specs" in unreadable.last_error
    row = _mirror_row(dev, job_id)
    assert row is not None and row.failures == 1 and row.mlflow_run_id is None
    assert row.last_error is not None and "cannot reach MLflow" in row.last_error
    assert row.next_attempt_at is not None and row.next_attempt_at > utcnow()
    # the mirror waits before trying again: no request, no new failure counted
    assert mirror.sync_due() == 0
    again = _mirror_row(dev, job_id)
    assert again is not None and again.failures == 1
    # the job itself is untouched: it reads, reports and cancels as without mirroring
    assert dev.sdk().custom_jobs.get(job_id).state is TrainingState.QUEUED
    assert [p.value for p in dev.sdk().custom_jobs.metrics(job_id)] == [1.0]
    assert dev.sdk().custom_jobs.cancel(job_id).state is TrainingState.CANCELLED
    dev.sdk().custom_jobs.delete(job_id)  # its mirroring record goes with it
    assert _mirror_row(dev, job_id) is None


def test_the_mirror_starts_only_when_a_tracking_uri_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAYDECK_MLFLOW_TRACKING_URI", raising=False)
    plain = Api(tmp_path / "a", run_reconcilers=True)
    try:
        names = {t.get_name() for t in _tasks(plain)}
        assert "mlflow-mirror" not in names and "training" in " ".join(names)
    finally:
        plain.close()
    monkeypatch.setenv("RAYDECK_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    mirrored = Api(tmp_path / "b", run_reconcilers=True)
    try:
        assert "mlflow-mirror" in {t.get_name() for t in _tasks(mirrored)}
    finally:
        mirrored.close()


def _tasks(api: Api) -> set[Any]:
    """The asyncio tasks of the app's event loop (the reconcile loops are named tasks)."""
    portal = api.http.portal  # type: ignore[attr-defined]
    return set(portal.call(asyncio.all_tasks))


# ---- against a real MLflow tracking server ---------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_mlflow(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


@pytest.mark.slow
def test_custom_jobs_and_trials_become_mlflow_runs_once(dev: Api, mlflow_url: str) -> None:
    mlflow = MlflowReader(mlflow_url)
    db = dev.app.state.raydeck.db
    mirror = MlflowMirror(db, mlflow_url)

    # a custom job: queued, then running with a metric series (a broken row stops nothing)
    broken = _broken_job(dev)
    job_id = _create_job(dev, "mirror-demo")
    mirror.sync_due()
    broken_row = _mirror_row(dev, broken)
    assert broken_row is not None and broken_row.failures == 1 and not mlflow.runs("broken")
    run = mlflow.run_of("mirror-demo", job_id)
    assert run["info"]["status"] == "SCHEDULED" and run["info"]["run_name"] == job_id
    _set_state(dev, job_id, TrainingState.RUNNING)
    losses = [{"metric": "loss", "value": 1.0 / (s + 1), "step": s} for s in range(3)]
    _report(dev, f"{JOBS}/{job_id}/metrics:report", losses)
    mirror.sync_due()
    run = mlflow.run_of("mirror-demo", job_id)
    mlflow_run = run["info"]["run_id"]
    assert run["info"]["status"] == "RUNNING"
    assert mlflow.history(mlflow_run, "loss") == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    params = _params(run)
    assert params["args.lr"] == "0.01" and params["args.epochs"] == "3"
    assert params["workerpool0.program"] == "python train.py"
    assert "never-sent" not in str(run)
    tags = _tags(run)
    assert tags["raydeck.custom_job_id"] == job_id and tags["raydeck.label.team"] == "ml"
    assert (tags["raydeck.state"], tags["raydeck.cluster"]) == ("RUNNING", "dev")
    assert tags["raydeck.project"] == "default"

    # more points and the end: the rest of the series, the final status and end time
    _report(
        dev,
        f"{JOBS}/{job_id}/metrics:report",
        [{"metric": "loss", "value": 0.1, "step": 3}, {"metric": "acc", "value": 0.9}],
    )
    _set_state(dev, job_id, TrainingState.SUCCEEDED)
    mirror.sync_due()
    run = mlflow.run_of("mirror-demo", job_id)
    assert run["info"]["status"] == "FINISHED" and run["info"]["end_time"] > 0
    assert _tags(run)["raydeck.state"] == "SUCCEEDED"
    assert mlflow.history(mlflow_run, "loss")[-1] == (3, 0.1)
    assert mlflow.history(mlflow_run, "acc") == [(0, 0.9)]
    row = _mirror_row(dev, job_id)
    assert row is not None and row.closed and row.mlflow_run_id == mlflow_run

    # a failed job carries its reason
    failing = _create_job(dev, "mirror-demo", worker_pool_specs=[{"command": ["false"]}])
    _set_state(dev, failing, TrainingState.FAILED, "replica workerpool0-0 exited with 1")
    mirror.sync_due()
    failed = mlflow.run_of("mirror-demo", failing)
    assert failed["info"]["status"] == "FAILED"
    assert _tags(failed)["raydeck.state_reason"] == "replica workerpool0-0 exited with 1"

    # a study: every trial is a run of the study's experiment, with its parameters
    study = {
        "display_name": "mirror-study",
        "cluster": "dev",
        "study_spec": {
            "metrics": [{"metric_id": "acc", "goal": "MAXIMIZE"}],
            "parameters": [
                {"parameter_id": "lr", "double_value_spec": {"min_value": 0.01, "max_value": 1}},
                {"parameter_id": "depth", "integer_value_spec": {"min_value": 2, "max_value": 8}},
            ],
            "algorithm": "random",
            "seed": 5,
        },
        "trial_job_spec": {"worker_pool_specs": [{"command": ["python", "train.py"]}]},
        "max_trial_count": 2,
        "parallel_trial_count": 2,
    }
    created = dev.http.post(HPT, json=study, headers=dev.headers("user"))
    assert created.status_code == 201, created.text
    hpt_id = created.json()["id"]
    _set_state(dev, hpt_id, TrainingState.RUNNING)
    suggested = dev.http.post(
        f"{HPT}/{hpt_id}/trials:suggest", json={"count": 2}, headers=dev.headers()
    )
    good, bad = suggested.json()["trials"]
    for step, value in enumerate([0.5, 0.8]):
        _report(
            dev,
            f"{HPT}/{hpt_id}/trials/{good['id']}:report",
            [{"metric": "acc", "value": value, "step": step}],
        )
    mirror.sync_due()
    assert mlflow.run_of("mirror-study", good["id"])["info"]["status"] == "RUNNING"
    complete = f"{HPT}/{hpt_id}/trials/{{}}:complete"
    assert (
        dev.http.post(
            complete.format(good["id"]), json={"ok": True}, headers=dev.headers()
        ).status_code
        == 200
    )
    outcome = {"ok": False, "message": "exit 3"}
    assert (
        dev.http.post(complete.format(bad["id"]), json=outcome, headers=dev.headers()).status_code
        == 200
    )
    mirror.sync_due()
    trial_runs = {_tags(r)["raydeck.trial_id"]: r for r in mlflow.runs("mirror-study")}
    assert set(trial_runs) == {good["id"], bad["id"]}
    first = trial_runs[good["id"]]
    assert first["info"]["status"] == "FINISHED" and first["info"]["run_name"] == "trial-0"
    assert _params(first) == {k: str(v) for k, v in good["parameters"].items()}
    assert _tags(first)["raydeck.tuning_job_id"] == hpt_id
    assert mlflow.history(first["info"]["run_id"], "acc") == [(0, 0.5), (1, 0.8)]
    second = trial_runs[bad["id"]]
    assert second["info"]["status"] == "FAILED"
    assert _tags(second)["raydeck.state_reason"] == "exit 3"

    # a restart: a new mirror (nothing in memory), and even a lost MLflow run id in the
    # rows (a crash right after runs/create): no second run, no repeated points
    with db.session() as session:
        session.delete(session.get(MlflowRunRow, job_id))
    restarted = MlflowMirror(db, mlflow_url)
    restarted.sync_due()
    assert len(mlflow.runs("mirror-demo")) == 2
    assert mlflow.run_of("mirror-demo", job_id)["info"]["run_id"] == mlflow_run
    assert [s for s, _ in mlflow.history(mlflow_run, "loss")] == [0, 1, 2, 3]
    assert len(mlflow.runs("mirror-study")) == 2
    found_again = _mirror_row(dev, job_id)
    assert found_again is not None and found_again.mlflow_run_id == mlflow_run


@pytest.mark.slow
def test_the_server_mirrors_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_url: str
) -> None:
    monkeypatch.setenv("RAYDECK_MLFLOW_TRACKING_URI", mlflow_url)
    monkeypatch.setenv("RAYDECK_MLFLOW_SYNC_INTERVAL", "0.2")
    api = _with_dev_cluster(Api(tmp_path / "home", run_reconcilers=True))
    try:
        job_id = _create_job(api, "background-mirror")
        _report(
            api, f"{JOBS}/{job_id}/metrics:report", [{"metric": "loss", "value": 2.0, "step": 7}]
        )
        mlflow = MlflowReader(mlflow_url)

        def mirrored() -> bool:
            found = [
                r
                for r in mlflow.runs("background-mirror")
                if _tags(r).get("raydeck.run_id") == job_id
            ]
            return bool(found) and mlflow.history(found[0]["info"]["run_id"], "loss") == [(7, 2.0)]

        _until(mirrored, "the job's run and its metric in MLflow")
        api.sdk().custom_jobs.cancel(job_id)

        def ended() -> bool:
            run = mlflow.run_of("background-mirror", job_id)
            return bool(run["info"]["status"] == "KILLED")

        _until(ended, "the cancelled job's run KILLED in MLflow")
    finally:
        api.close()


def _until(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout:g} s")
        time.sleep(0.2)
