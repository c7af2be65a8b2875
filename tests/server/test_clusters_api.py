"""Cluster API over the in-memory backend: lifecycle, paging, and bad input."""

from __future__ import annotations

import time
from typing import Any

import pytest

from raydeck.core.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from raydeck.core.models import ClusterCreate, ClusterState
from tests.conftest import Api


def _spec(name: str = "dev", **pool: Any) -> dict[str, Any]:
    return {
        "name": name,
        "worker_pools": [
            {"name": "workers", "replica_count": 2, "resources": {"accel": 1}, **pool}
        ],
    }


def _wait_state(api: Api, name: str, state: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.http.get(f"/api/v1/clusters/{name}", headers=api.headers()).json()
        if body.get("state") == state:
            return body
        time.sleep(0.02)
    raise AssertionError(f"{name} never reached {state}: {body}")


def test_create_returns_at_once_then_reconciler_runs_it(api: Api) -> None:
    response = api.http.post("/api/v1/clusters", json=_spec(), headers=api.headers())
    assert response.status_code == 201
    assert response.json()["state"] == "PROVISIONING"
    body = _wait_state(api, "dev", "RUNNING")
    assert body["dashboard_url"] == "http://127.0.0.1:9"
    assert body["worker_pools"][0]["current_replica_count"] == 2
    assert [n["name"] for n in body["nodes"]] == ["head", "workers-0", "workers-1"]


def test_resize_goes_through_updating(api: Api) -> None:
    sdk = api.sdk()
    sdk.clusters.create(ClusterCreate.model_validate(_spec()))
    sdk.clusters.wait("dev", timeout=10)
    updated = sdk.clusters.scale("dev", "workers", 1)
    assert updated.state is ClusterState.UPDATING
    running = sdk.clusters.wait("dev", timeout=10)
    assert running.worker_pools[0].replica_count == 1
    assert running.worker_pools[0].current_replica_count == 1


def test_delete_removes_cluster_and_backend_state(api: Api) -> None:
    sdk = api.sdk()
    created = sdk.clusters.create(ClusterCreate.model_validate(_spec()))
    sdk.clusters.wait("dev", timeout=10)
    assert sdk.clusters.delete("dev").state is ClusterState.STOPPING
    sdk.clusters.wait_deleted("dev", timeout=10)
    with pytest.raises(NotFoundError):
        sdk.clusters.get("dev")
    assert created.id not in api.backend.clusters


def test_transient_backend_failure_is_retried(api: Api) -> None:
    api.backend.fail_next_apply = "The current node timed out during startup"
    sdk = api.sdk()
    sdk.clusters.create(ClusterCreate.model_validate(_spec()))
    running = sdk.clusters.wait("dev", timeout=10)
    assert running.state_reason is None and len(api.backend.applied) == 1


def test_backend_failure_becomes_error_with_reason(api: Api) -> None:
    api.backend.fail_next_apply = "ports 30000-30099 are taken"
    api.backend.failing_applies = 3  # every attempt the reconciler makes
    sdk = api.sdk()
    sdk.clusters.create(ClusterCreate.model_validate(_spec()))
    body = _wait_state(api, "dev", "ERROR")
    assert body["state_reason"] == "ports 30000-30099 are taken"
    sdk.clusters.delete("dev")
    sdk.clusters.wait_deleted("dev", timeout=10)


def test_list_pages_and_filters(static_api: Api) -> None:
    sdk = static_api.sdk()
    for i in range(5):
        spec = {**_spec(f"c{i}"), "labels": {"team": "a" if i % 2 else "b"}}
        sdk.clusters.create(ClusterCreate.model_validate(spec))
    names: list[str] = []
    token = None
    while True:
        page = sdk.clusters.list(page_size=2, page_token=token)
        names += [c.name for c in page.items]
        token = page.next_page_token
        if token is None:
            break
    assert names == ["c0", "c1", "c2", "c3", "c4"]
    assert [c.name for c in sdk.clusters.list(label="team=a").items] == ["c1", "c3"]
    assert len(sdk.clusters.list(state=ClusterState.PROVISIONING).items) == 5
    assert sdk.clusters.list(state=ClusterState.RUNNING).items == []


BAD_CREATES: list[tuple[dict[str, Any], str]] = [
    (_spec(replica_count=0), "worker_pools[0].replica_count"),
    (_spec(replica_count=-2), "worker_pools[0].replica_count"),
    (_spec(min_replica_count=3, max_replica_count=2), "worker_pools[0]"),
    (_spec(replica_count=5, max_replica_count=2), "worker_pools[0]"),
    (_spec(num_cpus="lots"), "worker_pools[0].num_cpus"),
    (_spec(memory="12 parsecs"), "worker_pools[0].memory"),
    (_spec(resources={"accel": -1}), "worker_pools[0].resources.accel"),
    ({"name": "Bad_Name"}, "name"),
    ({"name": "ok", "colour": "red"}, "colour"),
    ({"name": "ok", "worker_pools": "many"}, "worker_pools"),
    ({"name": "ok", "ray_version": "1.0.0"}, "ray_version"),
    ({"name": "ok", "backend": "mainframe"}, "backend"),
    ({}, "name"),
]


@pytest.mark.parametrize(("body", "field"), BAD_CREATES)
def test_bad_create_names_the_field_and_stores_nothing(
    static_api: Api, body: dict[str, Any], field: str
) -> None:
    response = static_api.http.post("/api/v1/clusters", json=body, headers=static_api.headers())
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_argument"
    assert error["field"] == field
    assert "Traceback" not in response.text
    listed = static_api.http.get("/api/v1/clusters", headers=static_api.headers()).json()
    assert listed["items"] == []


def test_duplicate_pool_names_rejected(static_api: Api) -> None:
    body = {"name": "dup", "worker_pools": [{"name": "a"}, {"name": "a"}]}
    response = static_api.http.post("/api/v1/clusters", json=body, headers=static_api.headers())
    assert response.status_code == 400
    assert "unique" in response.json()["error"]["message"]


def test_malformed_json_is_400(static_api: Api) -> None:
    response = static_api.http.post(
        "/api/v1/clusters",
        content=b'{"name": "x",',
        headers={**static_api.headers(), "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_argument",
        "message": "request body is not valid JSON",
        "field": "body",
    }


def test_duplicate_name_conflicts_and_keeps_original(static_api: Api) -> None:
    sdk = static_api.sdk()
    first = sdk.clusters.create(ClusterCreate.model_validate(_spec("same")))
    with pytest.raises(AlreadyExistsError) as raised:
        sdk.clusters.create(ClusterCreate.model_validate(_spec("same", replica_count=1)))
    assert raised.value.field == "name"
    kept = sdk.clusters.get("same")
    assert kept.id == first.id
    assert kept.worker_pools[0].replica_count == 2


def test_unknown_cluster_is_404(static_api: Api) -> None:
    sdk = static_api.sdk()
    with pytest.raises(NotFoundError):
        sdk.clusters.get("ghost")
    with pytest.raises(NotFoundError):
        sdk.clusters.scale("ghost", "workers", 1)
    with pytest.raises(NotFoundError):
        sdk.clusters.delete("ghost")


BAD_UPDATES: list[tuple[dict[str, Any], str]] = [
    ({"worker_pools": [{"name": "nope", "replica_count": 1}]}, "worker_pools[0].name"),
    ({"worker_pools": [{"name": "workers", "replica_count": 0}]}, "worker_pools[0].replica_count"),
    ({"worker_pools": [{"name": "workers", "replica_count": -1}]}, "worker_pools[0].replica_count"),
    ({"worker_pools": [{"name": "workers", "min_replica_count": 4}]}, "worker_pools[0]"),
    ({"worker_pools": [{"name": "workers", "num_cpus": 8}]}, "worker_pools[0].num_cpus"),
    ({"worker_pools": []}, "worker_pools"),
    ({"worker_pools": [{"name": "workers", "replica_count": 1}], "labels": {"a": "b"}}, "labels"),
]


@pytest.mark.parametrize(("body", "field"), BAD_UPDATES)
def test_bad_update_names_the_field_and_changes_nothing(
    static_api: Api, body: dict[str, Any], field: str
) -> None:
    sdk = static_api.sdk()
    sdk.clusters.create(ClusterCreate.model_validate(_spec(max_replica_count=3)))
    before = sdk.clusters.get("dev")
    response = static_api.http.patch(
        "/api/v1/clusters/dev", json=body, headers=static_api.headers()
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field
    after = sdk.clusters.get("dev")
    assert after.worker_pools == before.worker_pools
    assert after.state == before.state


def test_moving_bounds_clamps_target(static_api: Api) -> None:
    sdk = static_api.sdk()
    sdk.clusters.create(
        ClusterCreate.model_validate(_spec(min_replica_count=1, max_replica_count=4))
    )
    response = static_api.http.patch(
        "/api/v1/clusters/dev",
        json={"worker_pools": [{"name": "workers", "max_replica_count": 1}]},
        headers=static_api.headers(),
    )
    assert response.status_code == 200, response.text
    pool = response.json()["worker_pools"][0]
    assert (pool["replica_count"], pool["max_replica_count"]) == (1, 1)


def test_sdk_raises_typed_errors_with_field(static_api: Api) -> None:
    sdk = static_api.sdk()
    sdk.clusters.create(ClusterCreate.model_validate(_spec()))
    with pytest.raises(InvalidArgumentError) as raised:
        sdk.clusters.scale("dev", "nope", 1)
    assert raised.value.field == "worker_pools[0].name"
