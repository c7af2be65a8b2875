"""/metrics per project: a caller bound in some projects sees only the series of those
projects (parsed with the Prometheus client parser); a binding on every project sees all."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from raydeck.client import RaydeckClient
from raydeck.core.models import ClusterCreate, JobSubmit, TokenCreate
from raydeck.core.models.access import AccountCreate, ProjectCreate, RoleBindingCreate
from raydeck.db.models import ClusterRow
from raydeck.server.services import access, tokens
from raydeck.server.services.endpoint_events import record_prediction
from raydeck.server.services.jobs import ClusterTarget, record_submission
from tests.conftest import Api

Samples = list[tuple[str, dict[str, str], float]]


@pytest.fixture
def two_projects(static_api: Api) -> Api:
    """Projects a and b, each with a cluster, a job, an endpoint with predict traffic (relayed
    and data plane); viewer "vera" of a only, "walt" of a and b."""
    state = static_api.app.state.raydeck
    with state.db.session() as session:
        for project in ("a", "b"):
            access.create_project(session, ProjectCreate(name=project))
        for who, projects in (("vera", ["a"]), ("walt", ["a", "b"])):
            access.create_account(session, AccountCreate(name=who))
            for project in projects:
                binding = RoleBindingCreate(account=who, role="viewer", project=project)
                access.bind_role(session, binding)
            secret = tokens.create_token(session, TokenCreate(name=f"{who}-t", account=who))
            static_api.tokens[who] = secret.secret
    for project in ("a", "b"):
        admin = RaydeckClient(
            "http://testserver",
            static_api.tokens["admin"],
            project=project,
            transport=static_api.http._transport,
        )
        admin.clusters.create(ClusterCreate(name=f"cl-{project}"))
        created = static_api.http.post(
            "/api/v1/endpoints",
            json={"display_name": f"ep-{project}", "cluster": f"cl-{project}"},
            headers={**static_api.headers(), "X-Raydeck-Project": project},
        )
        assert created.status_code == 201, created.text
        with state.db.session() as session:
            cluster = session.query(ClusterRow).filter_by(project=project).one()
            target = ClusterTarget(cluster.id, cluster.name, "http://127.0.0.1:9", "t", project)
        record_submission(state, target, f"sub-{project}", JobSubmit(entrypoint="true"))
        record_prediction(state, f"ep-{project}", project, "predict", 503, 0.01, None, "down")
        state.metrics.serve_traffic.record(
            created.json()["id"],
            project,
            f"ep-{project}",
            {
                "replica": "r1",
                "boundaries_ms": [10.0],
                "models": {"dm-1": {"model": "m@1", "by_code": {"200": 3}, "errors": 0}},
            },
        )
    return static_api


def _scrape(api: Api, who: str, project: str = "default") -> Samples:
    response = api.http.get("/metrics", headers={**api.headers(who), "X-Raydeck-Project": project})
    assert response.status_code == 200, response.text
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def _projects_of(samples: Samples, name: str) -> set[str]:
    return {labels["project"] for found, labels, _ in samples if found == name}


PER_RESOURCE = (
    "raydeck_clusters",
    "raydeck_jobs",
    "raydeck_endpoints",
    "raydeck_endpoint_predictions_total",
    "raydeck_endpoint_prediction_errors_total",
    "raydeck_endpoint_serve_requests_total",
)


def test_a_viewer_of_one_project_sees_only_its_series(two_projects: Api) -> None:
    samples = _scrape(two_projects, "vera", project="a")
    for name in PER_RESOURCE:
        assert _projects_of(samples, name) == {"a"}, name
    assert all(labels.get("project") == "a" for _, labels, _ in samples), [
        (n, labels) for n, labels, _ in samples if labels.get("project") != "a"
    ]
    assert not any(
        "ep-b" in labels.values() or "cl-b" in labels.values() for _, labels, _ in samples
    )
    # Server-wide series (the control plane's own HTTP traffic) are not project data.
    assert not any(name.startswith("raydeck_http_") for name, _, _ in samples)
    # In a project vera has no binding in, /metrics is refused like any other read.
    denied = two_projects.http.get(
        "/metrics", headers={**two_projects.headers("vera"), "X-Raydeck-Project": "b"}
    )
    assert denied.status_code == 403


def test_bindings_in_several_projects_and_on_every_project(two_projects: Api) -> None:
    walt = _scrape(two_projects, "walt", project="b")
    for name in PER_RESOURCE:
        assert _projects_of(walt, name) == {"a", "b"}, name
    assert "default" not in {labels.get("project") for _, labels, _ in walt}
    admin = _scrape(two_projects, "viewer")  # the built-in viewer token: bound on "*"
    for name in PER_RESOURCE:
        assert {"a", "b"} <= _projects_of(admin, name), name
    assert any(name.startswith("raydeck_http_requests") for name, _, _ in admin)
