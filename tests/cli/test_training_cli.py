"""`raydeck custom-jobs`, `raydeck hpt`, `raydeck pipelines` run in-process against the
in-process API (its SDK over the ASGI transport instead of a server process): what the
commands send, what they show, --wait until an end, logs --follow, one-line errors.
Real Ray runs these commands in tests/e2e/test_training.py."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from raydeck.cli import custom_jobs, main, pipelines, tuning_jobs
from raydeck.cli.output import console, err_console
from raydeck.core.models import ClusterCreate
from raydeck.core.models.training import MetricPoint
from raydeck.db.models import ClusterRow, TrainingJobRow
from raydeck.server.services import training_runs as runs
from raydeck.server.services import tuning_jobs as tuning_service
from tests.conftest import Api


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def one_line_error(self, *needles: str) -> None:
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert self.code != 0 and len(lines) == 1, (self.code, self.err)
        assert "Traceback" not in self.err + self.out
        for needle in needles:
            assert needle in lines[0], lines[0]


@pytest.fixture
def dev(static_api: Api, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Api:
    static_api.settings.allowed_roots = str(tmp_path)  # output dirs the tests name under here
    # 4 CPUs: a job is refused when its replicas together could never fit the cluster
    static_api.sdk().clusters.create(
        ClusterCreate.model_validate({"name": "dev", "head": {"num_cpus": 4}})
    )
    with static_api.app.state.raydeck.db.session() as session:
        for row in session.query(ClusterRow):
            row.state, row.dashboard_url = "RUNNING", "http://127.0.0.1:9"
    for module in (custom_jobs, tuning_jobs, pipelines):
        monkeypatch.setattr(module, "RaydeckClient", lambda: static_api.sdk("user"))
    monkeypatch.setattr(console, "width", 200)
    monkeypatch.setattr(err_console, "width", 200)
    return static_api


@pytest.fixture
def cli(
    dev: Api, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[..., Run]]:
    def run(*args: str) -> Run:
        monkeypatch.setattr(sys, "argv", ["raydeck", *args])
        try:
            main.main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    yield run


def _row(api: Api, job_id: str) -> dict[str, Any]:
    with api.app.state.raydeck.db.session() as session:
        row = session.get(TrainingJobRow, job_id)
        assert row is not None
        return {"state": row.state, "spec": row.spec, "labels": row.labels}


def _created_id(run: Run) -> str:
    assert run.code == 0, run.err
    return run.out.split()[1]


def test_custom_job_from_flags_get_list_cancel(
    cli: Callable[..., Run], dev: Api, tmp_path: Path
) -> None:
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    run = cli(
        "custom-jobs", "create", "-c", "dev", "--script", str(script), "--replicas", "3",
        "--cpus", "0.5", "--env", "A=1", "--max-restarts", "2", "--timeout", "60",
        "--base-output-dir", str(tmp_path / "out"), "--name", "t1", "-l", "team=ml",
        "--", "--lr=0.1", "--epochs", "2",
    )  # fmt: skip
    job_id = _created_id(run)
    assert "QUEUED" in run.out and "dev" in run.out
    spec = _row(dev, job_id)["spec"]["job_spec"]
    chief, workers = spec["worker_pool_specs"]
    assert chief["script"] == {"path": str(script)} and chief["replica_count"] == 1
    assert chief["args"] == ["--lr=0.1", "--epochs", "2"] and chief["env"] == {"A": "1"}
    assert chief["machine_spec"]["cpus"] == 0.5
    assert workers["replica_count"] == 2 and workers["script"] == chief["script"]
    assert spec["scheduling"] == {"max_restarts": 2, "timeout_seconds": 60.0}
    assert spec["base_output_dir"] == str(tmp_path / "out")
    assert _row(dev, job_id)["labels"] == {"team": "ml"}

    got = cli("custom-jobs", "get", job_id)
    assert got.code == 0 and "QUEUED" in got.out and "workerpool1-1" in got.out
    as_json = json.loads(cli("custom-jobs", "get", job_id, "-o", "json").out)
    assert as_json["id"] == job_id and as_json["display_name"] == "t1"
    listed = cli("custom-jobs", "list")
    assert job_id in listed.out and "t1" in listed.out
    assert job_id not in cli("custom-jobs", "list", "--state", "RUNNING").out
    cancelled = cli("custom-jobs", "cancel", job_id)
    assert cancelled.code == 0 and "CANCELLED" in cancelled.out
    assert _row(dev, job_id)["state"] == "CANCELLED"
    assert "deleted" in cli("custom-jobs", "delete", job_id).out


def test_module_job_with_train_workers(cli: Callable[..., Run], dev: Api, tmp_path: Path) -> None:
    run = cli(
        "custom-jobs", "create", "-c", "dev", "--module", "trainer.task",
        "--package-dir", str(tmp_path), "--train-workers", "2", "--gpus", "0",
    )  # fmt: skip
    pools = _row(dev, _created_id(run))["spec"]["job_spec"]["worker_pool_specs"]
    assert pools[0]["python_module"] == {
        "module_name": "trainer.task",
        "package_dir": str(tmp_path),
    }
    assert pools[1] == {**pools[1], "replica_count": 2, "python_module": None, "script": None}


def test_list_compares_runs_by_label_and_metric(cli: Callable[..., Run], dev: Api) -> None:
    ids = [
        _created_id(cli("custom-jobs", "create", "-c", "dev", "--command", "x", "-l", label))
        for label in ("exp=a", "exp=a", "exp=b")
    ]
    state = dev.app.state.raydeck
    with state.db.session() as session:
        for job_id, loss in zip(ids, (0.5, 0.25, 0.125), strict=True):
            points = [MetricPoint(metric="loss", value=v, step=i) for i, v in enumerate((1, loss))]
            runs.record_points(session, job_id, points)
    listed = cli("custom-jobs", "list", "--label", "exp=a", "--metric", "loss")
    assert listed.code == 0, listed.err
    lines = {line.split()[1]: line for line in listed.out.splitlines() if "cj-" in line}
    assert set(lines) == set(ids[:2])
    assert lines[ids[0]].rstrip(" │").endswith("0.5") and "0.25" in lines[ids[1]]
    cli("custom-jobs", "list", "--label", "exp").one_line_error("invalid_argument", "label")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--script", "/a.py"], ["--cluster", "--ephemeral"]),
        (["-c", "dev", "--ephemeral", "--script", "/a.py"], ["--cluster"]),
        (["-c", "dev"], ["--module", "--script", "--command"]),
        (["-c", "dev", "--script", "/a.py", "--command", "x"], ["one of"]),
        (["-c", "dev", "--command", "x", "--package-dir", "/p"], ["--package-dir"]),
        (["-c", "dev", "--command", "x", "--env", "NOEQUALS"], ["KEY=VALUE"]),
        (["-c", "dev", "--command", "x", "--replicas", "0"], ["--replicas"]),
        (["-c", "ghost", "--command", "x"], ["not_found", "ghost"]),
        (["-c", "dev", "--module", "1bad"], ["invalid_argument", "module_name"]),
    ],
)
def test_custom_job_errors_are_one_line(
    cli: Callable[..., Run], dev: Api, args: list[str], needles: list[str]
) -> None:
    before = dev.sdk().custom_jobs.list().items
    cli("custom-jobs", "create", *args).one_line_error(*needles)
    assert dev.sdk().custom_jobs.list().items == before  # nothing stored


def _in_background(work: Callable[[], Run]) -> tuple[threading.Thread, list[Run]]:
    box: list[Run] = []
    thread = threading.Thread(target=lambda: box.append(work()), daemon=True)
    thread.start()
    return thread, box


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_create_wait_follows_the_job_to_its_end(cli: Callable[..., Run], dev: Api) -> None:
    sdk = dev.sdk()
    thread, box = _in_background(
        lambda: cli("custom-jobs", "create", "-c", "dev", "--command", "sleep 9", "--wait")
    )
    _until(lambda: bool(sdk.custom_jobs.list().items), "the job")
    job = sdk.custom_jobs.list().items[0]
    sdk.custom_jobs.cancel(job.id)
    thread.join(30)
    (run,) = box
    assert run.code == 1  # it did not succeed
    assert f"created {job.id}" in run.out and "CANCELLED" in run.out
    assert "cancelled before it was submitted" in run.out


def test_logs_of_a_replica_and_follow(
    cli: Callable[..., Run], dev: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _created_id(
        cli("custom-jobs", "create", "-c", "dev", "--command", "x", "--replicas", "2",
            "--base-output-dir", str(tmp_path / "out"))
    )  # fmt: skip
    cli("custom-jobs", "logs", job_id).one_line_error("not_found", "workerpool0-0")
    logs = tmp_path / "out" / "replica_logs"
    logs.mkdir(parents=True)
    (logs / "workerpool1-0.log").write_text("worker line\n")
    worker = cli("custom-jobs", "logs", job_id, "--replica", "workerpool1-0")
    assert worker.code == 0 and worker.out == "worker line\n"

    chief = logs / "workerpool0-0.log"
    monkeypatch.setattr(custom_jobs, "FOLLOW_POLL_SECONDS", 0.05)
    thread, box = _in_background(lambda: cli("custom-jobs", "logs", job_id, "-f"))
    time.sleep(0.3)  # following a log that is not there yet
    chief.write_text("epoch 1\n")
    time.sleep(0.3)
    chief.write_text("epoch 1\nepoch 2\n")
    time.sleep(0.3)
    dev.sdk().custom_jobs.cancel(job_id)  # the end stops the follow
    thread.join(30)
    (run,) = box
    assert run.code == 0 and run.out == "epoch 1\nepoch 2\n"


STUDY = {
    "study_spec": {
        "metrics": [{"metric_id": "acc", "goal": "MAXIMIZE"}],
        "parameters": [
            {"parameter_id": "lr", "double_value_spec": {"min_value": 0.001, "max_value": 1}},
            {"parameter_id": "opt", "categorical_value_spec": {"values": ["adam", "sgd"]}},
        ],
        "algorithm": "bayesian",
        "seed": 1,
    },
    "trial_job_spec": {"worker_pool_specs": [{"command": ["python", "train.py"]}]},
    "max_trial_count": 4,
}


def _finish_trials(api: Api, job_id: str, values: list[float]) -> None:
    state = api.app.state.raydeck
    with state.db.session() as session:
        session.get(TrainingJobRow, job_id).state = "RUNNING"  # as if its driver started
    trials = tuning_service.suggest_trials(state, job_id, len(values))["trials"]
    for trial, value in zip(trials, values, strict=True):  # type: ignore[call-overload]
        point = MetricPoint(metric="acc", value=value, step=1)
        tuning_service.report_trial(state, job_id, trial["id"], [point])
        tuning_service.complete_trial(state, job_id, trial["id"], True, False, None)


def test_hpt_from_a_yaml_study(cli: Callable[..., Run], dev: Api, tmp_path: Path) -> None:
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(STUDY))
    run = cli("hpt", "create", str(study), "-c", "dev", "--parallel", "2", "--name", "s1")
    job_id = _created_id(run)
    spec = _row(dev, job_id)["spec"]
    assert (spec["parallel_trial_count"], spec["max_trial_count"]) == (2, 4)

    _finish_trials(dev, job_id, [0.5, 0.75])
    got = cli("hpt", "get", job_id)
    assert got.code == 0 and "2/4 trials done" in got.out
    assert "best:      acc=0.75 (trial 1: lr=" in got.out  # the best so far
    trials = cli("hpt", "trials", job_id)
    assert trials.code == 0 and "0.75" in trials.out and "opt=" in trials.out
    assert len(json.loads(cli("hpt", "trials", job_id, "-o", "json").out)) == 2
    assert job_id in cli("hpt", "list").out
    cancelled = cli("hpt", "cancel", job_id)  # its driver was never submitted: at once
    assert cancelled.code == 0 and "CANCELLED" in cancelled.out


def test_hpt_create_wait_shows_the_best_trial(
    cli: Callable[..., Run], dev: Api, tmp_path: Path
) -> None:
    study = tmp_path / "study.json"
    study.write_text(json.dumps({**STUDY, "cluster": "dev"}))
    thread, box = _in_background(lambda: cli("hpt", "create", str(study), "--wait"))
    _until(lambda: bool(dev.sdk().tuning_jobs.list().items), "the study")
    job_id = dev.sdk().tuning_jobs.list().items[0].id
    _finish_trials(dev, job_id, [0.25, 0.9, 0.5, 0.1])
    with dev.app.state.raydeck.db.session() as session:  # what the reconciler does at the end
        row = session.get(TrainingJobRow, job_id)
        end, reason = tuning_service.finalize(session, row)
        row.state, row.state_reason = end.value, reason
    thread.join(30)
    (run,) = box
    assert run.code == 0, run.err
    assert "SUCCEEDED" in run.out and "4/4 trials done" in run.out
    assert "acc=0.9 (trial 1" in run.out


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        (None, ["cannot read"]),
        ("study_spec: [unclosed", ["not valid YAML/JSON"]),
        ("- a list", ["mapping"]),
        (json.dumps({**STUDY, "cluster": "dev", "max_trial_count": 0}), ["max_trial_count"]),
        (json.dumps({**STUDY, "cluster": "ghost"}), ["not_found", "ghost"]),
    ],
)
def test_hpt_errors_are_one_line(
    cli: Callable[..., Run], tmp_path: Path, content: str | None, needles: list[str]
) -> None:
    path = tmp_path / "study.yaml"
    if content is not None:
        path.write_text(content)
    cli("hpt", "create", str(path)).one_line_error(*needles)


def test_hpt_refused_by_the_server_names_the_field(cli: Callable[..., Run], tmp_path: Path) -> None:
    bad = json.loads(json.dumps(STUDY))
    bad["study_spec"]["parameters"][0]["double_value_spec"] = {"min_value": 2, "max_value": 1}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**bad, "cluster": "dev"}))
    cli("hpt", "create", str(path)).one_line_error("invalid_argument", "min_value")


def test_pipelines_create_get_list_cancel(
    cli: Callable[..., Run], dev: Api, tmp_path: Path
) -> None:
    spec = {
        "training_task": {
            "custom_job": {
                "cluster": "dev",
                "worker_pool_specs": [{"script": {"path": "/code/train.py"}}],
            }
        },
        "model_to_upload": {"display_name": "churn", "framework": "sklearn"},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    run = cli("pipelines", "create", str(path), "--name", "p1")
    pipeline_id = _created_id(run)
    assert "custom job cj-" in run.out
    got = cli("pipelines", "get", pipeline_id)
    assert got.code == 0 and "churn (sklearn)" in got.out
    assert pipeline_id in cli("pipelines", "list").out
    cancelled = cli("pipelines", "cancel", pipeline_id)
    assert cancelled.code == 0 and "CANCELLING" in cancelled.out
    missing = {**spec, "model_to_upload": {"framework": "sklearn"}}
    path.write_text(yaml.safe_dump(missing))
    cli("pipelines", "create", str(path)).one_line_error("model_to_upload")
