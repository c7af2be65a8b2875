"""Artifacts of custom jobs and trials in-process: what is listed (with sizes), downloads over
REST, SDK and CLI, and paths that try to leave the artifact directories; metric series in
the CLI."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from raydeck.cli import custom_jobs, main, tuning_jobs
from raydeck.cli.output import console, err_console
from raydeck.core.errors import InvalidArgumentError, NotFoundError
from raydeck.core.models import ClusterCreate
from raydeck.db.models import ClusterRow, TrainingJobRow
from raydeck.server.services import tuning_jobs as tuning_service
from tests.conftest import Api

JOBS = "/api/v1/customJobs"
HPT = "/api/v1/hyperparameterTuningJobs"


@pytest.fixture
def dev(static_api: Api) -> Api:
    static_api.sdk().clusters.create(ClusterCreate(name="dev"))
    with static_api.app.state.raydeck.db.session() as session:
        for row in session.query(ClusterRow):
            row.state, row.dashboard_url = "RUNNING", "http://127.0.0.1:9"
    return static_api


def _write(root: Path, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


# what a training program leaves behind: artifacts, plus files that are not artifacts
OUTPUT = {
    "model/model.joblib": b"m" * 1500,
    "model/meta/params.json": b'{"lr": 0.1}',
    "checkpoints/ckpt-2/state.pt": b"c" * 20,
    "logs/events.out.tfevents": b"e" * 7,
    "metrics/workerpool0-0.metrics": b'{"acc": 0.5}\n',
    "replica_logs/workerpool0-0.log": b"secret output, served redacted by /logs",
    ".raydeck/status.json": b"{}",
    "elsewhere.txt": b"not in an AIP directory",
}
LISTED = {
    k: len(v)
    for k, v in OUTPUT.items()
    if k.split("/")[0] in ("model", "checkpoints", "logs", "metrics")
}


def _custom_job(api: Api) -> dict[str, Any]:
    body = {"cluster": "dev", "worker_pool_specs": [{"command": ["python", "train.py"]}]}
    response = api.http.post(JOBS, json=body, headers=api.headers("user"))
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def test_custom_job_artifacts_are_listed_with_sizes_and_downloaded(
    dev: Api, tmp_path: Path
) -> None:
    job = _custom_job(dev)
    url = f"{JOBS}/{job['id']}/artifacts"
    assert dev.http.get(url, headers=dev.headers("viewer")).json() == []  # nothing written yet
    root = Path(job["base_output_dir"])
    _write(root, OUTPUT)
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the job")
    (root / "model" / "link-out").symlink_to(secret)

    listed = dev.http.get(url, headers=dev.headers("viewer")).json()
    assert {a["path"]: a["size"] for a in listed} == LISTED
    assert [a["path"] for a in listed] == sorted(LISTED)
    response = dev.http.get(f"{url}/model/model.joblib", headers=dev.headers("viewer"))
    assert response.status_code == 200 and response.content == OUTPUT["model/model.joblib"]
    assert "model.joblib" in response.headers["content-disposition"]
    assert dev.http.get(f"{url}/model/model.joblib").status_code == 401

    sdk = dev.sdk("viewer")
    assert {a.path for a in sdk.custom_jobs.artifacts(job["id"])} == set(LISTED)
    saved = sdk.custom_jobs.download_artifact(job["id"], "model/meta/params.json", tmp_path / "p")
    assert saved.read_bytes() == OUTPUT["model/meta/params.json"]
    with pytest.raises(NotFoundError):
        sdk.custom_jobs.download_artifact(job["id"], "model/nope.bin", tmp_path / "nope.bin")
    assert not (tmp_path / "nope.bin").exists() and not (tmp_path / "nope.bin.part").exists()
    with pytest.raises(NotFoundError):
        sdk.custom_jobs.artifacts("cj-unknown")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("replica_logs/workerpool0-0.log", 400),  # logs are served redacted by /logs
        (".raydeck/status.json", 400),
        ("elsewhere.txt", 400),
        ("model/%2E%2E/replica_logs/workerpool0-0.log", 400),
        ("model/..%2F..%2F..%2Fetc%2Fpasswd", 400),
        ("%2Fetc%2Fpasswd", 400),
        ("model/link-out", 400),  # a symlink leaving the directory
        ("model/missing.bin", 404),
        ("model/meta", 404),  # a directory is not a file
    ],
)
def test_artifact_paths_outside_the_artifact_dirs_are_refused(
    dev: Api, tmp_path: Path, path: str, status: int
) -> None:
    job = _custom_job(dev)
    root = Path(job["base_output_dir"])
    _write(root, OUTPUT)
    (tmp_path / "secret.txt").write_text("outside the job")
    (root / "model" / "link-out").symlink_to(tmp_path / "secret.txt")
    response = dev.http.get(f"{JOBS}/{job['id']}/artifacts/{path}", headers=dev.headers())
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == "path"
    assert "outside the job" not in response.text


def _running_study_with_trials(api: Api, count: int) -> tuple[str, list[dict[str, Any]]]:
    body = {
        "cluster": "dev",
        "study_spec": {
            "metrics": [{"metric_id": "acc", "goal": "MAXIMIZE"}],
            "parameters": [
                {"parameter_id": "lr", "double_value_spec": {"min_value": 0.01, "max_value": 1}}
            ],
            "algorithm": "random",
            "seed": 1,
        },
        "trial_job_spec": {"worker_pool_specs": [{"command": ["python", "train.py"]}]},
        "max_trial_count": 4,
        "parallel_trial_count": 2,
    }
    response = api.http.post(HPT, json=body, headers=api.headers("user"))
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    state = api.app.state.raydeck
    with state.db.session() as session:
        row = session.get(TrainingJobRow, job_id)
        assert row is not None
        row.state = "RUNNING"  # what the reconciler does once the study driver runs
    made = tuning_service.suggest_trials(state, job_id, count)["trials"]
    assert isinstance(made, list)
    return job_id, made


def test_trial_artifacts_are_listed_and_downloaded_per_trial(dev: Api, tmp_path: Path) -> None:
    job_id, (first, second) = _running_study_with_trials(dev, 2)
    _write(Path(first["output_dir"]), OUTPUT)
    _write(Path(second["output_dir"]), {"model/other.bin": b"x"})
    base = f"{HPT}/{job_id}/trials"

    listed = dev.http.get(f"{base}/{first['id']}/artifacts", headers=dev.headers("viewer"))
    assert {a["path"]: a["size"] for a in listed.json()} == LISTED
    other = dev.sdk().tuning_jobs.trial_artifacts(job_id, second["id"])
    assert [(a.path, a.size) for a in other] == [("model/other.bin", 1)]
    got = dev.http.get(
        f"{base}/{first['id']}/artifacts/checkpoints/ckpt-2/state.pt", headers=dev.headers()
    )
    assert got.content == OUTPUT["checkpoints/ckpt-2/state.pt"]
    saved = dev.sdk().tuning_jobs.download_trial_artifact(
        job_id, second["id"], "model/other.bin", tmp_path / "o.bin"
    )
    assert saved.read_bytes() == b"x"

    # a trial is only found under its own study; traversal is refused as for jobs
    assert dev.http.get(f"{base}/trial-nope/artifacts", headers=dev.headers()).status_code == 404
    other_job, _ = _running_study_with_trials(dev, 0)
    cross = dev.http.get(f"{HPT}/{other_job}/trials/{first['id']}/artifacts", headers=dev.headers())
    assert cross.status_code == 404 and cross.json()["error"]["field"] == "trial"
    # (httpx folds the '..' before sending: then no route matches; the server refuses it too)
    with pytest.raises((InvalidArgumentError, NotFoundError)):
        dev.sdk().tuning_jobs.download_trial_artifact(
            job_id, first["id"], "model/../../" + second["id"] + "/model/other.bin", tmp_path / "x"
        )
    assert not (tmp_path / "x").exists()
    sneaky = f"{base}/{first['id']}/artifacts/model/%2E%2E/%2E%2E/{second['id']}/model/other.bin"
    assert dev.http.get(sneaky, headers=dev.headers()).status_code == 400


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def cli(
    dev: Api, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Run]:
    for module in (custom_jobs, tuning_jobs):
        monkeypatch.setattr(module, "RaydeckClient", lambda: dev.sdk("viewer"))
    monkeypatch.setattr(console, "width", 200)
    monkeypatch.setattr(err_console, "width", 200)

    def run(*args: str) -> Run:
        monkeypatch.setattr(sys, "argv", ["raydeck", *args])
        try:
            main.main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def test_cli_shows_metric_series_of_jobs_and_trials(cli: Callable[..., Run], dev: Api) -> None:
    job = _custom_job(dev)
    points = [{"metric": "loss", "value": 1 / (s + 1), "step": s} for s in range(3)]
    points.append({"metric": "acc", "value": 0.25})
    report = f"{JOBS}/{job['id']}/metrics:report"
    assert dev.http.post(report, json={"points": points}, headers=dev.headers()).status_code == 200
    table = cli("custom-jobs", "metrics", job["id"])
    assert table.code == 0, table.err
    lines = [line for line in table.out.splitlines() if "loss" in line]
    assert len(lines) == 3 and "0.333333" in lines[2] and " 2 " in lines[2]
    only = json.loads(cli("custom-jobs", "metrics", job["id"], "-m", "acc", "-o", "json").out)
    assert [(p["metric"], p["step"], p["value"]) for p in only] == [("acc", None, 0.25)]

    job_id, (trial,) = _running_study_with_trials(dev, 1)
    trial_points = {"points": [{"metric": "acc", "value": 0.5, "step": 4}]}
    url = f"{HPT}/{job_id}/trials/{trial['id']}:report"
    assert dev.http.post(url, json=trial_points, headers=dev.headers()).status_code == 200
    series = json.loads(cli("hpt", "metrics", job_id, trial["id"], "-o", "json").out)
    assert [(p["step"], p["value"]) for p in series] == [(4, 0.5)]
    assert "0.5" in cli("hpt", "metrics", job_id, trial["id"]).out
    # the trial's number (what `hpt get` and `hpt trials` show) works as well as its id
    by_number = json.loads(cli("hpt", "metrics", job_id, str(trial["number"]), "-o", "json").out)
    assert by_number == series
    assert cli("hpt", "metrics", job_id, "999").code != 0
    missing = cli("custom-jobs", "metrics", "cj-nope")
    assert missing.code != 0 and "cj-nope" in missing.err and "Traceback" not in missing.err


def test_cli_lists_and_downloads_artifacts(
    cli: Callable[..., Run], dev: Api, tmp_path: Path
) -> None:
    job = _custom_job(dev)
    _write(Path(job["base_output_dir"]), OUTPUT)
    listing = cli("custom-jobs", "artifacts", job["id"])
    assert listing.code == 0, listing.err
    assert "model/model.joblib" in listing.out and "1.5 KiB" in listing.out
    assert "replica_logs" not in listing.out
    as_json = json.loads(cli("custom-jobs", "artifacts", job["id"], "-o", "json").out)
    assert {a["path"] for a in as_json} == set(LISTED)

    dest = tmp_path / "dl"
    got = cli("custom-jobs", "artifacts", job["id"], "--download", "model", "--dest", str(dest))
    assert got.code == 0, got.err
    assert "2 file(s)" in got.out
    assert (dest / "model" / "model.joblib").read_bytes() == OUTPUT["model/model.joblib"]
    assert (dest / "model" / "meta" / "params.json").is_file()
    assert not (dest / "checkpoints").exists()

    missing = cli("custom-jobs", "artifacts", job["id"], "-d", "model/none", "--dest", str(dest))
    err_lines = [line for line in missing.err.splitlines() if line.strip()]
    assert missing.code != 0 and len(err_lines) == 1 and "model/none" in err_lines[0]
    assert "Traceback" not in missing.err

    job_id, (trial,) = _running_study_with_trials(dev, 1)
    _write(Path(trial["output_dir"]), {"model/m.txt": b"trial model"})
    trial_listing = cli("hpt", "artifacts", job_id, trial["id"])
    assert trial_listing.code == 0 and "model/m.txt" in trial_listing.out
    fetched = cli("hpt", "artifacts", job_id, trial["id"], "-d", "model/m.txt", "--dest", str(dest))
    assert fetched.code == 0, fetched.err
    assert (dest / "model" / "m.txt").read_bytes() == b"trial model"
    unknown = cli("hpt", "artifacts", job_id, "trial-nope")
    assert unknown.code != 0 and "trial-nope" in unknown.err and "Traceback" not in unknown.err
