"""Training API in-process: bad input is a 4xx naming the field and stores nothing; cancel and
state rules; the study service's ask/tell survives a rebuild (server restart); job tokens.
Real Ray runs in tests/e2e/test_training.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from raydeck.core.models import ClusterCreate
from raydeck.db.models import ClusterRow, TokenRow, TrainingJobRow, TrialRow
from raydeck.server.services import job_tokens, studies, tuning_jobs
from raydeck.server.services.tokens import authenticate
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


def _job(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "cluster": "dev",
        "worker_pool_specs": [{"python_module": {"module_name": "trainer.task"}}],
    }
    body.update(changes)
    return body


def _study(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "cluster": "dev",
        "study_spec": {
            "metrics": [{"metric_id": "acc", "goal": "MAXIMIZE"}],
            "parameters": [
                {"parameter_id": "lr", "double_value_spec": {"min_value": 1e-4, "max_value": 1}},
                {"parameter_id": "depth", "integer_value_spec": {"min_value": 2, "max_value": 8}},
            ],
            "algorithm": "bayesian",
            "seed": 3,
        },
        "trial_job_spec": {"worker_pool_specs": [{"command": ["python", "train.py"]}]},
        "max_trial_count": 6,
        "parallel_trial_count": 2,
    }
    body.update(changes)
    return body


def _count(api: Api) -> tuple[int, int]:
    with api.app.state.raydeck.db.session() as session:
        return session.query(TrainingJobRow).count(), session.query(ClusterRow).count()


def test_custom_job_is_stored_queued_with_its_output_dirs(dev: Api) -> None:
    response = dev.http.post(JOBS, json=_job(display_name="t"), headers=dev.headers("user"))
    assert response.status_code == 201, response.text
    job = response.json()
    assert (job["state"], job["cluster"], job["attempt"]) == ("QUEUED", "dev", 0)
    assert job["base_output_dir"].endswith(f"training/{job['id']}")
    assert [r["name"] for r in job["replicas"]] == ["workerpool0-0"]
    assert dev.http.get(f"{JOBS}/{job['id']}", headers=dev.headers("viewer")).json() == job
    # viewers read, never create
    assert dev.http.post(JOBS, json=_job(), headers=dev.headers("viewer")).status_code == 403
    assert dev.http.post(JOBS, json=_job()).status_code == 401


def test_ephemeral_cluster_is_created_for_a_job_without_cluster(dev: Api) -> None:
    body = _job(cluster=None)
    body["worker_pool_specs"].append({"replica_count": 2, "machine_spec": {"cpus": 2}})
    job = dev.http.post(JOBS, json=body, headers=dev.headers()).json()
    assert job["ephemeral_cluster"] is True and job["cluster"].startswith("eph-")
    cluster = dev.sdk().clusters.get(job["cluster"])
    assert [(p.name, p.replica_count, p.num_cpus) for p in cluster.worker_pools] == [
        ("workerpool1", 2, 2.0)
    ]
    # cancelling before submission ends it and deletes the ephemeral cluster
    cancelled = dev.http.post(f"{JOBS}/{job['id']}:cancel", headers=dev.headers()).json()
    assert cancelled["state"] == "CANCELLED"
    assert dev.sdk().clusters.get(job["cluster"]).state.value == "STOPPING"
    assert dev.http.delete(f"{JOBS}/{job['id']}", headers=dev.headers()).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (_job(cluster="nope"), 404, "cluster"),
        (_job(worker_pool_specs=[]), 400, "worker_pool_specs"),
        (_job(worker_pool_specs=[{"replica_count": 1}]), 400, "worker_pool_specs"),
        (
            _job(worker_pool_specs=[{"command": ["x"], "script": {"path": "/a.py"}}]),
            400,
            "worker_pool_specs[0]",
        ),
        (
            _job(worker_pool_specs=[{"script": {"path": "rel/a.py"}}]),
            400,
            "worker_pool_specs[0].script",  # the error mapping drops a field named "path"
        ),
        (
            _job(worker_pool_specs=[{"python_module": {"module_name": "1bad"}}]),
            400,
            "worker_pool_specs[0].python_module.module_name",
        ),
        (_job(scheduling={"max_restarts": -1}), 400, "scheduling.max_restarts"),
        (_job(base_output_dir="relative/out"), 400, "base_output_dir"),
    ],
)
def test_bad_custom_jobs_are_refused_and_store_nothing(
    dev: Api, body: dict[str, Any], status: int, field: str
) -> None:
    before = _count(dev)
    response = dev.http.post(JOBS, json=body, headers=dev.headers())
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field
    assert _count(dev) == before


def _param(index: int, spec: dict[str, Any]) -> dict[str, Any]:
    body = _study()
    body["study_spec"]["parameters"][index] = spec
    return body


def _with(path: str, value: Any) -> dict[str, Any]:
    body = _study()
    body["study_spec"][path] = value
    return body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            _param(
                0, {"parameter_id": "lr", "double_value_spec": {"min_value": 2, "max_value": 1}}
            ),
            "study_spec.parameters[0].double_value_spec.min_value",
        ),
        (
            _param(
                1, {"parameter_id": "d", "integer_value_spec": {"min_value": 9, "max_value": 1}}
            ),
            "study_spec.parameters[1].integer_value_spec.min_value",
        ),
        (
            _param(
                0,
                {
                    "parameter_id": "lr",
                    "double_value_spec": {"min_value": 0, "max_value": 1},
                    "scale_type": "UNIT_CUBE_SCALE",
                },
            ),
            "study_spec.parameters[0].scale_type",
        ),
        (
            _param(
                0,
                {
                    "parameter_id": "lr",
                    "double_value_spec": {"min_value": 0, "max_value": 1},
                    "scale_type": "UNIT_LOG_SCALE",
                },
            ),
            "study_spec.parameters[0].double_value_spec.min_value",
        ),
        (_with("algorithm", "grid"), "study_spec.parameters[0].double_value_spec.step"),
        (_with("algorithm", "annealing"), "study_spec.algorithm"),
        ({**_study(), "parallel_trial_count": 7}, "parallel_trial_count"),
        ({**_study(), "max_trial_count": 100, "parallel_trial_count": 33}, "parallel_trial_count"),
        (
            _param(1, {"parameter_id": "lr", "categorical_value_spec": {"values": ["a"]}}),
            "study_spec.parameters[1].parameter_id",
        ),
        (_param(0, {"parameter_id": "lr"}), "study_spec.parameters[0]"),
    ],
)
def test_bad_studies_are_refused_naming_the_field(
    dev: Api, body: dict[str, Any], field: str
) -> None:
    before = _count(dev)
    response = dev.http.post(HPT, json=body, headers=dev.headers())
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field
    assert _count(dev) == before


def _running_study(api: Api, body: dict[str, Any]) -> str:
    job = api.http.post(HPT, json=body, headers=api.headers()).json()
    with api.app.state.raydeck.db.session() as session:
        session.get(TrainingJobRow, job["id"]).state = "RUNNING"
    return str(job["id"])


def test_study_asks_reports_tells_and_resumes_after_a_restart(dev: Api) -> None:
    state = dev.app.state.raydeck
    job_id = _running_study(dev, _study())
    first = tuning_jobs.suggest_trials(state, job_id, 2)
    assert len(first["trials"]) == 2 and first["done"] is False  # type: ignore[arg-type]
    trial = first["trials"][0]  # type: ignore[index]
    assert trial["args"] == [
        f"--lr={trial['parameters']['lr']}",
        f"--depth={trial['parameters']['depth']}",
    ]
    assert 1e-4 <= trial["parameters"]["lr"] <= 1 and 2 <= trial["parameters"]["depth"] <= 8
    from raydeck.core.models.training import MetricPoint

    tuning_jobs.report_trial(state, job_id, trial["id"], [MetricPoint(metric="acc", value=0.7)])
    done = tuning_jobs.complete_trial(state, job_id, trial["id"], True, False, None)
    assert done.state.value == "SUCCEEDED" and done.final_measurement.metrics == {"acc": 0.7}
    so_far = dev.sdk("viewer").tuning_jobs.get(job_id)  # running: the best trial so far
    assert so_far.best_trial is not None and so_far.best_trial.id == trial["id"]
    other = first["trials"][1]["id"]  # type: ignore[index]
    failed = tuning_jobs.complete_trial(state, job_id, other, False, False, "exit 3")
    assert (failed.state.value, failed.state_reason) == ("FAILED", "exit 3")
    # A restart forgets the live study; the rows rebuild it and numbering goes on.
    studies.StudyCache.of(state.db).forget(job_id)
    more = tuning_jobs.suggest_trials(state, job_id, 4)
    assert [t["number"] for t in more["trials"]] == [2, 3, 4, 5]  # type: ignore[index]
    assert more["done"] is True
    assert tuning_jobs.suggest_trials(state, job_id, 1)["trials"] == []
    with state.db.session() as session:
        row = session.get(TrainingJobRow, job_id)
        for t in session.query(TrialRow).filter(TrialRow.number >= 2):
            t.state, t.final_value = "SUCCEEDED", 0.5 + t.number / 100
        end, reason = tuning_jobs.finalize(session, row)
    assert (end.value, reason) == ("SUCCEEDED", None)
    best = dev.sdk().tuning_jobs.get(job_id).best_trial
    assert best is not None and best.final_measurement.metrics["acc"] == 0.7
    trials = dev.sdk().tuning_jobs.trials(job_id)
    assert [t.state.value for t in trials] == ["SUCCEEDED", "FAILED"] + ["SUCCEEDED"] * 4


def test_grid_budget_is_the_grid_and_too_many_failures_fail_the_job(dev: Api) -> None:
    state = dev.app.state.raydeck
    body = _study(max_trial_count=50, max_failed_trial_count=1)
    body["study_spec"] = {
        "metrics": [{"metric_id": "acc", "goal": "MAXIMIZE"}],
        "parameters": [
            {
                "parameter_id": "lr",
                "double_value_spec": {"min_value": 0, "max_value": 1, "step": 0.5},
            },
            {"parameter_id": "k", "categorical_value_spec": {"values": ["a", "b"]}},
        ],
        "algorithm": "grid",
    }
    job_id = _running_study(dev, body)
    trials = tuning_jobs.suggest_trials(state, job_id, 32)["trials"]
    points = sorted((t["parameters"]["lr"], t["parameters"]["k"]) for t in trials)  # type: ignore[index, union-attr]
    assert points == [(x, k) for x in (0.0, 0.5, 1.0) for k in ("a", "b")]
    for t in trials[:2]:  # type: ignore[index]
        tuning_jobs.complete_trial(state, job_id, t["id"], False, False, "boom")
    with state.db.session() as session:
        end, reason = tuning_jobs.finalize(session, session.get(TrainingJobRow, job_id))
    assert end.value == "FAILED" and "max_failed_trial_count 1" in (reason or "")


def test_pruner_stops_a_trial_worse_than_the_median(dev: Api) -> None:
    from raydeck.core.models.training import MetricPoint

    state = dev.app.state.raydeck
    body = _study(max_trial_count=3, parallel_trial_count=1)
    body["study_spec"]["early_stopping"] = {"pruner": "median", "startup_trials": 1}
    job_id = _running_study(dev, body)
    good = tuning_jobs.suggest_trials(state, job_id, 1)["trials"][0]  # type: ignore[index]
    pts = [MetricPoint(metric="acc", value=0.9, step=s) for s in range(3)]
    tuning_jobs.report_trial(state, job_id, good["id"], pts)
    tuning_jobs.complete_trial(state, job_id, good["id"], True, False, None)
    bad = tuning_jobs.suggest_trials(state, job_id, 1)["trials"][0]  # type: ignore[index]
    answer = tuning_jobs.report_trial(
        state, job_id, bad["id"], [MetricPoint(metric="acc", value=0.1, step=1)]
    )
    assert answer.should_stop is True
    stopped = tuning_jobs.complete_trial(state, job_id, bad["id"], False, True, "stopped")
    assert stopped.state.value == "STOPPED"


def test_job_tokens_authenticate_until_revoked(static_api: Api, tmp_path: Path) -> None:
    state = static_api.app.state.raydeck
    with state.db.session() as session:
        secret = job_tokens.issue_job_token(session, "cl-1", "sub-1", None)
    env = job_tokens.job_runtime_env({"env_vars": {"A": "1"}}, state.settings, secret)
    assert env["env_vars"] == {
        "A": "1",
        "RAYDECK_SERVER": state.settings.advertised_url,
        "RAYDECK_TOKEN": secret,
    }
    mine = job_tokens.job_runtime_env({"env_vars": {"RAYDECK_TOKEN": "x"}}, state.settings, secret)
    assert mine["env_vars"]["RAYDECK_TOKEN"] == "x"  # never overrides the user's value
    with state.db.session() as session:
        token, account = authenticate(session, secret)
        # No known submitter: acts as the project's jobs service account, scoped to the
        # project and to what jobs call.
        assert (token.role, account.name, account.kind) == (
            "job",
            "jobs-default",
            "service_account",
        )
        assert token.scope_project == "default"
        assert token.scope_permissions == list(job_tokens.JOB_PERMISSIONS)
        stored = session.query(TokenRow).filter(TokenRow.secret_hash == secret).count()
        assert stored == 0  # only the hash is stored
        job_tokens.revoke_job_token(session, "cl-1", "sub-1")
    with state.db.session() as session, pytest.raises(Exception, match="revoked"):
        authenticate(session, secret)


def test_runs_are_found_by_label_across_jobs_and_studies(dev: Api) -> None:
    sdk = dev.sdk("viewer")
    ids = []
    for team in ("ml", "ml", "ops"):
        response = dev.http.post(JOBS, json=_job(labels={"team": team}), headers=dev.headers())
        ids.append(response.json()["id"])
    study = dev.http.post(HPT, json=_study(labels={"team": "ml"}), headers=dev.headers()).json()
    assert [j.id for j in sdk.custom_jobs.list(label="team=ml").items] == ids[:2]
    assert [j.id for j in sdk.custom_jobs.list(label="team=ops").items] == ids[2:]
    assert sdk.custom_jobs.list(label="team=none").items == []
    assert [j.id for j in sdk.tuning_jobs.list(label="team=ml").items] == [study["id"]]
    bad = dev.http.get(f"{JOBS}?label=team", headers=dev.headers("viewer"))
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "label"
