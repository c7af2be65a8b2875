"""Projects as the tenancy boundary of models, endpoints and batch prediction jobs (in-process,
in-memory cluster backend): same names in two projects, isolated reads and deletes, and
references across projects refused naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from raydeck.client import RaydeckClient
from raydeck.core.errors import NotFoundError
from raydeck.core.models import ClusterCreate
from raydeck.core.models.access import ProjectCreate
from raydeck.db.models import ClusterRow
from raydeck.server.services import access
from tests.conftest import Api
from tests.model_artifacts import sklearn_model_dir


def _client(api: Api, project: str) -> RaydeckClient:
    return RaydeckClient(
        "http://testserver", api.tokens["admin"], project=project, transport=api.http._transport
    )


@pytest.fixture
def projects(static_api: Api, tmp_path: Path) -> tuple[RaydeckClient, RaydeckClient]:
    """Project 'default' and 'other', each with cluster 'serve', model 'churn' and endpoint
    'churn-api' of the same names."""
    with static_api.app.state.raydeck.db.session() as session:
        access.create_project(session, ProjectCreate(name="other"))
    clients = (_client(static_api, "default"), _client(static_api, "other"))
    for seed, client in enumerate(clients):
        client.clusters.create(ClusterCreate(name="serve"))
        client.models.upload("churn", sklearn_model_dir(tmp_path, seed), "sklearn")
        client.endpoints.create("churn-api", cluster="serve")
    return clients


def test_same_names_in_two_projects_are_separate_rows(
    projects: tuple[RaydeckClient, RaydeckClient],
) -> None:
    default, other = projects
    mine, theirs = default.models.get("churn"), other.models.get("churn")
    assert mine.id != theirs.id
    assert (mine.project, theirs.project) == ("default", "other")
    assert [m.id for m in default.models.list().items] == [mine.id]
    assert [m.id for m in other.models.list().items] == [theirs.id]
    ep_mine, ep_theirs = default.endpoints.get("churn-api"), other.endpoints.get("churn-api")
    assert ep_mine.id != ep_theirs.id and ep_theirs.project == "other"
    assert [e.id for e in other.endpoints.list().items] == [ep_theirs.id]
    # Deploying by name resolves the model of the endpoint's own project.
    deployed = other.endpoints.deploy("churn-api", "churn@1").deployed_models[0]
    assert deployed.model_id == theirs.id


def test_ids_of_another_project_are_not_found(
    projects: tuple[RaydeckClient, RaydeckClient],
) -> None:
    default, other = projects
    theirs_model = other.models.get("churn")
    theirs_version = other.models.get_version("churn@1")
    theirs_ep = other.endpoints.get("churn-api")
    for call in (
        lambda: default.models.get(theirs_model.id),
        lambda: default.endpoints.get(theirs_ep.id),
        lambda: default.endpoints.delete(theirs_ep.id),
        lambda: default.models.delete(theirs_model.id),
    ):
        with pytest.raises(NotFoundError):
            call()
    # Deleting in one project leaves the other's row of the same name alone.
    default.endpoints.delete("churn-api")
    assert other.endpoints.get("churn-api").state.value == "CREATING"
    assert other.models.get_version("churn@1").id == theirs_version.id


def test_cross_project_references_are_refused_naming_the_field(
    static_api: Api, projects: tuple[RaydeckClient, RaydeckClient], tmp_path: Path
) -> None:
    default, other = projects
    static_api.settings.allowed_roots = str(tmp_path)  # the inputs below (home stays refused)
    other.clusters.create(ClusterCreate(name="only-there"))
    other.models.upload("only-there", sklearn_model_dir(tmp_path, 9), "sklearn")
    theirs_version = other.models.get_version("only-there@1")
    with pytest.raises(NotFoundError) as raised:
        default.endpoints.create("ep2", cluster="only-there")
    assert raised.value.field == "cluster"
    for ref in ("only-there@1", theirs_version.id):
        with pytest.raises(NotFoundError) as raised:
            default.endpoints.deploy("churn-api", ref)
        assert raised.value.field == "model"
    assert default.endpoints.get("churn-api").deployed_models == []  # nothing stored
    # Batch prediction: the model and the cluster must be of the caller's project too.
    with static_api.app.state.raydeck.db.session() as session:  # in-memory: mark it running
        for row in session.query(ClusterRow):
            row.state, row.dashboard_url = "RUNNING", "http://127.0.0.1:9"
    data = tmp_path / "in.jsonl"
    data.write_text('{"instances": [[1, 2, 3, 4]]}\n')
    http, headers = static_api.http, static_api.headers("admin")
    body = {
        "model": "only-there@1",
        "cluster": "serve",
        "input": {"uris": [str(data)]},
        "output": {"uri": str(tmp_path / "out")},
    }
    answer = http.post("/api/v1/batchPredictionJobs", json=body, headers=headers)
    assert answer.status_code == 404 and answer.json()["error"]["field"] == "model", answer.text
    answer = http.post(
        "/api/v1/batchPredictionJobs",
        json={**body, "model": "churn@1", "cluster": "only-there"},
        headers=headers,
    )
    assert answer.status_code == 404 and answer.json()["error"]["field"] == "cluster", answer.text
    # In its own project the same request is accepted, and stays invisible to the other one.
    mine = http.post(
        "/api/v1/batchPredictionJobs",
        json={**body, "model": "only-there@1", "cluster": "only-there"},
        headers={**headers, "X-Raydeck-Project": "other"},
    )
    assert mine.status_code == 201, mine.text
    assert mine.json()["project"] == "other"
    job_id = mine.json()["id"]
    assert http.get(f"/api/v1/batchPredictionJobs/{job_id}", headers=headers).status_code == 404
    listed = http.get("/api/v1/batchPredictionJobs", headers=headers).json()["items"]
    assert listed == []
    cancel = http.post(f"/api/v1/batchPredictionJobs/{job_id}:cancel", headers=headers)
    assert cancel.status_code == 404
