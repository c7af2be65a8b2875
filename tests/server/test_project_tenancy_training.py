"""Projects as the tenancy boundary of custom jobs, tuning jobs (studies and trials), training
pipelines and warehouse connections (in-process, in-memory cluster backend).

Two users, each bound ``user`` in one project only: neither sees, cancels or deletes the
other's runs (404, as for models and endpoints), a run is placed only on a cluster of its own
project, and what a job does on its cluster (job token, the SDK it runs) acts in its project.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import joblib
import pytest
from sklearn.linear_model import LogisticRegression

from raydeck.client import RaydeckClient
from raydeck.core.errors import NotFoundError, PermissionDeniedError
from raydeck.core.models import TokenCreate
from raydeck.core.models.access import AccountCreate, ProjectCreate, RoleBindingCreate
from raydeck.core.models.training import TrainingState
from raydeck.db.models import ClusterRow, ConnectionRow, TrainingJobRow
from raydeck.runtime.training.control_plane import ControlPlane
from raydeck.server.reconcilers.training_pipelines import PipelineReconciler
from raydeck.server.services import access, job_tokens, tokens
from tests.conftest import Api

JOBS = "/api/v1/customJobs"
HPT = "/api/v1/hyperparameterTuningJobs"
PIPELINES = "/api/v1/trainingPipelines"
CONNECTIONS = "/api/v1/connections"


def _headers(api: Api, who: str) -> dict[str, str]:
    project = {"alice": "team-a", "bob": "team-b"}[who]
    return {"Authorization": f"Bearer {api.tokens[who]}", "X-Raydeck-Project": project}


@pytest.fixture
def teams(static_api: Api) -> Api:
    """Projects team-a (alice is ``user`` there) and team-b (bob), each with a RUNNING
    cluster named "dev"; team-b also has "only-b"."""
    state = static_api.app.state.raydeck
    with state.db.session() as session:
        for who, project in (("alice", "team-a"), ("bob", "team-b")):
            access.create_project(session, ProjectCreate(name=project))
            access.create_account(session, AccountCreate(name=who))
            access.bind_role(session, RoleBindingCreate(account=who, role="user", project=project))
            created = tokens.create_token(session, TokenCreate(name=f"{who}-t", account=who))
            static_api.tokens[who] = created.secret
    for who, names in (("alice", ["dev"]), ("bob", ["dev", "only-b"])):
        for name in names:
            answer = static_api.http.post(
                "/api/v1/clusters", json={"name": name}, headers=_headers(static_api, who)
            )
            assert answer.status_code == 201, answer.text
    with state.db.session() as session:
        for row in session.query(ClusterRow):
            row.state, row.dashboard_url = "RUNNING", "http://127.0.0.1:9"
    return static_api


def _job(cluster: str | None = "dev") -> dict[str, Any]:
    return {
        "cluster": cluster,
        "worker_pool_specs": [{"python_module": {"module_name": "trainer.task"}}],
    }


def _study() -> dict[str, Any]:
    return {
        "cluster": "dev",
        "study_spec": {
            "metrics": [{"metric_id": "acc", "goal": "MAXIMIZE"}],
            "parameters": [
                {"parameter_id": "lr", "double_value_spec": {"min_value": 1e-4, "max_value": 1}}
            ],
            "algorithm": "random",
        },
        "trial_job_spec": {"worker_pool_specs": [{"command": ["python", "train.py"]}]},
        "max_trial_count": 2,
        "parallel_trial_count": 1,
    }


def _cluster_of(api: Api, job_id: str) -> ClusterRow:
    with api.app.state.raydeck.db.session() as session:
        row = session.get(TrainingJobRow, job_id)
        assert row is not None and row.cluster_id is not None
        cluster = session.get(ClusterRow, row.cluster_id)
        assert cluster is not None
        session.expunge(cluster)
        return cluster


def _refused_everywhere(api: Api, who: str, calls: list[tuple[str, str]]) -> None:
    """Each (method, path) answers 404 to ``who`` in its own project (PATCH with a valid
    body, so the 404 is about the resource)."""
    for method, path in calls:
        body = {"description": "mine now"} if method == "PATCH" else None
        answer = api.http.request(method, path, headers=_headers(api, who), json=body)
        assert answer.status_code == 404, (method, path, answer.status_code, answer.text)


def test_custom_jobs_are_kept_per_project(teams: Api) -> None:
    http = teams.http
    created = http.post(JOBS, json=_job(), headers=_headers(teams, "bob"))
    assert created.status_code == 201, created.text
    job = created.json()
    assert (job["project"], job["cluster"]) == ("team-b", "dev")
    assert _cluster_of(teams, job["id"]).project == "team-b"  # b's "dev", not a's
    job_id = job["id"]
    _refused_everywhere(
        teams,
        "alice",
        [
            ("GET", f"{JOBS}/{job_id}"),
            ("POST", f"{JOBS}/{job_id}:cancel"),
            ("DELETE", f"{JOBS}/{job_id}"),
            ("GET", f"{JOBS}/{job_id}/metrics"),
            ("GET", f"{JOBS}/{job_id}/artifacts"),
            ("GET", f"{JOBS}/{job_id}/logs"),
        ],
    )
    assert http.get(JOBS, headers=_headers(teams, "alice")).json()["items"] == []
    # Asking in team-b without a binding there is a 403, not a look at b's rows.
    as_b = {**_headers(teams, "alice"), "X-Raydeck-Project": "team-b"}
    assert http.get(f"{JOBS}/{job_id}", headers=as_b).status_code == 403
    # Nothing changed for bob.
    mine = http.get(f"{JOBS}/{job_id}", headers=_headers(teams, "bob")).json()
    assert mine["state"] == "QUEUED"
    assert [j["id"] for j in http.get(JOBS, headers=_headers(teams, "bob")).json()["items"]] == [
        job_id
    ]
    cancelled = http.post(f"{JOBS}/{job_id}:cancel", headers=_headers(teams, "bob"))
    assert cancelled.json()["state"] == "CANCELLED"


def test_a_run_goes_only_on_a_cluster_of_its_project(teams: Api) -> None:
    with teams.app.state.raydeck.db.session() as session:
        before = session.query(TrainingJobRow).count()
    for path, body in ((JOBS, _job("only-b")), (HPT, {**_study(), "cluster": "only-b"})):
        answer = teams.http.post(path, json=body, headers=_headers(teams, "alice"))
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["field"] == "cluster"
    with teams.app.state.raydeck.db.session() as session:
        assert session.query(TrainingJobRow).count() == before  # nothing stored


def test_ephemeral_cluster_belongs_to_the_jobs_project_and_ends_with_it(teams: Api) -> None:
    created = teams.http.post(JOBS, json=_job(None), headers=_headers(teams, "bob"))
    assert created.status_code == 201, created.text
    job = created.json()
    cluster = _cluster_of(teams, job["id"])
    assert cluster.project == "team-b" and cluster.name == job["cluster"]
    assert job["ephemeral_cluster"] is True
    # Alice's project has no such cluster; bob's lists it.
    clusters = teams.http.get("/api/v1/clusters", headers=_headers(teams, "alice")).json()
    assert job["cluster"] not in [c["name"] for c in clusters["items"]]
    # Cancelled before submission: its ephemeral cluster (in team-b) is deleted with it.
    teams.http.post(f"{JOBS}/{job['id']}:cancel", headers=_headers(teams, "bob"))
    assert _cluster_of(teams, job["id"]).state in ("STOPPING", "DELETED")


def test_tuning_jobs_and_trials_are_kept_per_project(teams: Api) -> None:
    http = teams.http
    created = http.post(HPT, json=_study(), headers=_headers(teams, "bob"))
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    assert created.json()["project"] == "team-b"
    with teams.app.state.raydeck.db.session() as session:  # as if its driver were running
        row = session.get(TrainingJobRow, job_id)
        assert row is not None
        row.state = TrainingState.RUNNING.value
    # The study driver's call, as bob's project: a trial is handed out.
    suggested = http.post(
        f"{HPT}/{job_id}/trials:suggest", json={"count": 1}, headers=_headers(teams, "bob")
    )
    assert suggested.status_code == 200, suggested.text
    trial_id = suggested.json()["trials"][0]["id"]
    report = {"points": [{"metric": "acc", "value": 0.5, "step": 1}]}
    _refused_everywhere(
        teams,
        "alice",
        [
            ("GET", f"{HPT}/{job_id}"),
            ("POST", f"{HPT}/{job_id}:cancel"),
            ("DELETE", f"{HPT}/{job_id}"),
            ("GET", f"{HPT}/{job_id}/trials"),
            ("GET", f"{HPT}/{job_id}/trials/{trial_id}/metrics"),
            ("GET", f"{HPT}/{job_id}/trials/{trial_id}/artifacts"),
        ],
    )
    for path, body in (
        (f"{HPT}/{job_id}/trials:suggest", {"count": 1}),
        (f"{HPT}/{job_id}/trials/{trial_id}:report", report),
        (f"{HPT}/{job_id}/trials/{trial_id}:complete", {"ok": True}),
    ):
        answer = http.post(path, json=body, headers=_headers(teams, "alice"))
        assert answer.status_code == 404, (path, answer.text)
    assert http.get(HPT, headers=_headers(teams, "alice")).json()["items"] == []
    # Bob's study is untouched: still one active trial, no metric point from alice.
    trials = http.get(f"{HPT}/{job_id}/trials", headers=_headers(teams, "bob")).json()
    assert [(t["id"], t["state"]) for t in trials] == [(trial_id, "ACTIVE")]
    points = http.get(f"{HPT}/{job_id}/trials/{trial_id}/metrics", headers=_headers(teams, "bob"))
    assert points.json() == []


def _model_dir(path: Path) -> None:
    path.mkdir(parents=True)
    joblib.dump(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), path / "model.joblib")


def test_pipeline_and_its_model_stay_in_the_pipelines_project(teams: Api) -> None:
    http = teams.http
    body = {
        "display_name": "churn-pipe",
        "training_task": {"custom_job": _job()},
        "model_to_upload": {"display_name": "churn", "framework": "sklearn"},
    }
    created = http.post(PIPELINES, json=body, headers=_headers(teams, "bob"))
    assert created.status_code == 201, created.text
    pipeline = created.json()
    assert pipeline["project"] == "team-b"
    child_id = pipeline["custom_job_id"]
    child = http.get(f"{JOBS}/{child_id}", headers=_headers(teams, "bob")).json()
    assert child["project"] == "team-b"
    _refused_everywhere(
        teams,
        "alice",
        [
            ("GET", f"{PIPELINES}/{pipeline['id']}"),
            ("POST", f"{PIPELINES}/{pipeline['id']}:cancel"),
            ("DELETE", f"{PIPELINES}/{pipeline['id']}"),
            ("GET", f"{JOBS}/{child_id}"),
        ],
    )
    assert http.get(PIPELINES, headers=_headers(teams, "alice")).json()["items"] == []
    # The training job succeeds with a model in AIP_MODEL_DIR; the reconciler uploads it.
    _model_dir(Path(child["base_output_dir"]) / "model")
    state = teams.app.state.raydeck
    with state.db.session() as session:
        row = session.get(TrainingJobRow, child_id)
        assert row is not None
        row.state = TrainingState.SUCCEEDED.value

    async def one_pass() -> list[tuple[str, str]]:
        reconciler = PipelineReconciler(state)
        state.wake_callbacks.remove(reconciler.loop.wake)  # this loop ends with the pass
        ready = reconciler._follow()
        for pipeline_id, model_dir in ready:
            await reconciler._upload(pipeline_id, model_dir)
        return ready

    assert [pid for pid, _ in asyncio.run(one_pass())] == [pipeline["id"]]
    done = http.get(f"{PIPELINES}/{pipeline['id']}", headers=_headers(teams, "bob")).json()
    assert done["state"] == "SUCCEEDED", done
    model = http.get("/api/v1/models/churn", headers=_headers(teams, "bob"))
    assert model.status_code == 200 and model.json()["project"] == "team-b"
    assert http.get("/api/v1/models/churn", headers=_headers(teams, "alice")).status_code == 404
    assert http.get("/api/v1/models/churn", headers=teams.headers("admin")).status_code == 404


def test_connections_are_kept_per_project(teams: Api) -> None:
    http = teams.http
    made = {}
    for who in ("alice", "bob"):
        answer = http.post(
            CONNECTIONS, json={"name": "wh", "kind": "duckdb"}, headers=_headers(teams, who)
        )
        assert answer.status_code == 201, answer.text
        made[who] = answer.json()
    assert made["alice"]["id"] != made["bob"]["id"]
    assert made["alice"]["path"] != made["bob"]["path"]  # same name, separate warehouses
    theirs = made["bob"]["id"]
    _refused_everywhere(
        teams,
        "alice",
        [
            ("GET", f"{CONNECTIONS}/{theirs}"),
            ("PATCH", f"{CONNECTIONS}/{theirs}"),
            ("DELETE", f"{CONNECTIONS}/{theirs}"),
            ("POST", f"{CONNECTIONS}/{theirs}:resolve"),
            ("GET", f"{CONNECTIONS}/{theirs}/tables"),
        ],
    )
    listed = http.get(CONNECTIONS, headers=_headers(teams, "alice")).json()["items"]
    assert [c["id"] for c in listed] == [made["alice"]["id"]]
    # By name, each project resolves its own.
    for who in ("alice", "bob"):
        resolved = http.post(f"{CONNECTIONS}/wh:resolve", headers=_headers(teams, who)).json()
        assert resolved["path"] == made[who]["path"]
    # Deleting alice's leaves bob's.
    assert http.delete(f"{CONNECTIONS}/wh", headers=_headers(teams, "alice")).status_code == 200
    assert http.get(f"{CONNECTIONS}/wh", headers=_headers(teams, "bob")).status_code == 200
    with teams.app.state.raydeck.db.session() as session:
        assert [r.project for r in session.query(ConnectionRow)] == ["team-b"]


def test_code_on_a_cluster_acts_in_its_jobs_project(
    teams: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job token of a team-b cluster, with the env the server gives its Ray job, resolves
    team-b's connection (as ``raydeck.data`` on the cluster does) and nothing elsewhere."""
    http = teams.http
    http.post(CONNECTIONS, json={"name": "wh", "kind": "duckdb"}, headers=_headers(teams, "bob"))
    state = teams.app.state.raydeck
    with state.db.session() as session:
        cluster = session.query(ClusterRow).filter_by(project="team-b", name="dev").one()
        secret = job_tokens.issue_job_token(session, cluster.id, "raydeck-sub-1", None)
    env = job_tokens.job_runtime_env(None, state.settings, secret, "team-b")["env_vars"]
    assert env["RAYDECK_PROJECT"] == "team-b" and env["RAYDECK_TOKEN"] == secret
    transport = http._transport
    with RaydeckClient(
        "http://testserver", secret, project=env["RAYDECK_PROJECT"], transport=transport
    ) as on_cluster:
        assert on_cluster.connections.resolve("wh").path is not None
    wrong_project = RaydeckClient("http://testserver", secret, transport=transport)
    with wrong_project, pytest.raises(PermissionDeniedError):
        wrong_project.connections.resolve("wh")
    # The training runtime's own calls carry the job's project too.
    monkeypatch.setenv("RAYDECK_PROJECT", "team-b")
    plane = ControlPlane("http://testserver", secret)
    try:
        assert plane._http.headers["X-Raydeck-Project"] == "team-b"
    finally:
        plane.close()
    # And a job of team-a's cluster cannot read team-b's connection at all.
    with state.db.session() as session:
        cluster_a = session.query(ClusterRow).filter_by(project="team-a", name="dev").one()
        secret_a = job_tokens.issue_job_token(session, cluster_a.id, "raydeck-sub-2", None)
    in_a = RaydeckClient("http://testserver", secret_a, project="team-a", transport=transport)
    with in_a, pytest.raises(NotFoundError):
        in_a.connections.resolve("wh")
