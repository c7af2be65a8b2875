"""/metrics parses with the Prometheus parser and its counts match the requests made."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Api


def _samples(api: Api) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = api.http.get("/metrics", headers=api.headers("viewer"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def _value(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    return sum(v for found, v in samples.get(name, []) if labels.items() <= found.items())


def test_request_counts_match_requests_made(static_api: Api) -> None:
    api = static_api
    before = _samples(api)
    for _ in range(7):
        assert api.http.get("/api/v1/clusters", headers=api.headers()).status_code == 200
    for _ in range(3):
        assert api.http.get("/api/v1/clusters/nope", headers=api.headers()).status_code == 404
    assert api.http.get("/api/v1/clusters").status_code == 401
    after = _samples(api)

    def delta(**labels: str) -> float:
        name = "raydeck_http_requests_total"
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta(method="GET", route="/api/v1/clusters", status="200") == 7
    assert delta(method="GET", route="/api/v1/clusters/{name}", status="404") == 3
    assert delta(method="GET", route="/api/v1/clusters", status="401") == 1
    # Route templates, never raw paths: no label per cluster name.
    assert not any("nope" in str(labels) for labels, _ in after["raydeck_http_requests_total"])
    latency = _value(
        after, "raydeck_http_request_duration_seconds_count", route="/api/v1/clusters"
    ) - _value(before, "raydeck_http_request_duration_seconds_count", route="/api/v1/clusters")
    assert latency == 8


def test_state_gauges_follow_clusters_and_nodes(api: Api) -> None:
    body = {"name": "m1", "worker_pools": [{"name": "w", "replica_count": 2}]}
    assert api.http.post("/api/v1/clusters", json=body, headers=api.headers()).status_code == 201
    api.sdk().clusters.wait("m1")
    api.sdk().clusters.get("m1")  # nodes are recorded with the RUNNING state
    samples = _samples(api)
    assert _value(samples, "raydeck_clusters", state="RUNNING", project="default") == 1
    assert _value(samples, "raydeck_cluster_nodes", cluster="m1", pool="w", state="alive") == 2
    assert _value(samples, "raydeck_cluster_nodes", cluster="m1", pool="head") == 1
    assert "raydeck_cost_accrued_total" in samples or "raydeck_cost_accrued" in samples


def test_prediction_failures_are_counted_per_endpoint(api: Api) -> None:
    assert (
        api.http.post("/api/v1/clusters", json={"name": "pc"}, headers=api.headers()).status_code
        == 201
    )
    api.sdk().clusters.wait("pc")
    created = api.http.post(
        "/api/v1/endpoints", json={"display_name": "ep", "cluster": "pc"}, headers=api.headers()
    )
    assert created.status_code == 201, created.text
    for _ in range(2):
        failed = api.http.post(
            "/api/v1/endpoints/ep:predict", json={"instances": [[1]]}, headers=api.headers()
        )
        assert failed.status_code >= 400
    samples = _samples(api)
    assert _value(samples, "raydeck_endpoint_prediction_errors_total", endpoint="ep") == 2
    assert _value(samples, "raydeck_endpoint_predictions_total", endpoint="ep") == 2


def test_services_can_add_state_metrics(static_api: Api) -> None:
    """The hook other services (e.g. tuning trials) use to export their state."""
    from prometheus_client.core import GaugeMetricFamily
    from sqlalchemy import func, select

    from raydeck.db.models import ClusterRow

    def clusters_again(session):  # type: ignore[no-untyped-def]
        family = GaugeMetricFamily("raydeck_test_rows", "rows", labels=["table"])
        family.add_metric(["clusters"], session.scalar(select(func.count(ClusterRow.id))))
        return [family]

    static_api.app.state.raydeck.metrics.add_state_metrics(clusters_again)
    assert _value(_samples(static_api), "raydeck_test_rows", table="clusters") == 0


def test_tuning_trials_are_counted_by_state(static_api: Api) -> None:
    from raydeck.db.models import TrainingJobRow, TrialRow

    with static_api.app.state.raydeck.db.session() as session:
        session.add(
            TrainingJobRow(id="tj-1", kind="tuning", display_name="sweep", state="RUNNING", spec={})
        )
        session.flush()
        for number, state in enumerate(["SUCCEEDED", "SUCCEEDED", "RUNNING"]):
            session.add(
                TrialRow(
                    id=f"tr-{number}", tuning_job_id="tj-1", number=number, state=state, params={}
                )
            )
    samples = _samples(static_api)
    assert _value(samples, "raydeck_tuning_trials", tuning_job="sweep", state="SUCCEEDED") == 2
    assert _value(samples, "raydeck_tuning_trials", tuning_job="sweep", state="RUNNING") == 1
    assert _value(samples, "raydeck_training_jobs", kind="tuning", state="RUNNING") == 1
