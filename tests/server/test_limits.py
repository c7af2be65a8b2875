"""Issue 11, finding 3: no request can exhaust the control plane.

Every count and resource is capped (settings ``RAYDECK_MAX_*``; a 400 naming the field), the
local backend refuses what this host could never hold, planning never walks a requested
count before it is validated, a stored row over the caps can still be read and deleted, and
every route refuses a body over its size limit with a 413 before reading it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from fastapi.testclient import TestClient

from raydeck.backends.local import LocalClusterBackend
from raydeck.core.settings import Settings, get_settings
from raydeck.db.models import ClusterRow
from raydeck.server.app import create_app
from tests.conftest import Api, _fresh_db
from tests.waiting import wait_until


@pytest.fixture
def small_caps(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Caps are read when a request is validated: a lower cap applies at once."""
    monkeypatch.setenv("RAYDECK_MAX_LABELS", "3")
    monkeypatch.setenv("RAYDECK_MAX_POOL_REPLICAS", "5")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def _field(answer: Any) -> str:
    assert answer.status_code == 400, answer.text
    field: str = answer.json()["error"]["field"]
    return field


POOL = {"name": "w"}
TOO_MUCH: list[tuple[str, dict[str, Any], str]] = [
    (
        "/api/v1/clusters",
        {"name": "c", "worker_pools": [{**POOL, "replica_count": 10**9}]},
        "worker_pools[0].replica_count",
    ),
    (
        "/api/v1/clusters",
        {"name": "c", "worker_pools": [{**POOL, "max_replica_count": 10**6}]},
        "worker_pools[0].max_replica_count",
    ),
    ("/api/v1/clusters", {"name": "c", "head": {"num_cpus": 1e6}}, "head.num_cpus"),
    ("/api/v1/clusters", {"name": "c", "head": {"num_gpus": 1e4}}, "head.num_gpus"),
    ("/api/v1/clusters", {"name": "c", "head": {"memory": 5 * 1024**4}}, "head.memory"),
    ("/api/v1/clusters", {"name": "c", "head": {"resources": {"a": 1e9}}}, "head.resources.a"),
    (
        "/api/v1/clusters",
        {"name": "c", "head": {"resources": {f"r{i}": 1 for i in range(40)}}},
        "head.resources",
    ),
    (
        "/api/v1/clusters",
        {"name": "c", "worker_pools": [{"name": f"p{i}"} for i in range(17)]},
        "worker_pools",
    ),
    ("/api/v1/clusters", {"name": "c", "labels": {f"k{i}": "v" for i in range(65)}}, "labels"),
    (
        "/api/v1/customJobs",
        {"worker_pool_specs": [{"replica_count": 10**6, "command": ["true"]}]},
        "worker_pool_specs[0].replica_count",
    ),
    (
        "/api/v1/customJobs",
        {"worker_pool_specs": [{"machine_spec": {"cpus": 1e7}, "command": ["true"]}]},
        "worker_pool_specs[0].machine_spec.cpus",
    ),
    (
        "/api/v1/hyperparameterTuningJobs",
        {
            "study_spec": {
                "metrics": [{"metric_id": "m", "goal": "MAXIMIZE"}],
                "parameters": [
                    {"parameter_id": "x", "double_value_spec": {"min_value": 0, "max_value": 1}}
                ],
            },
            "trial_job_spec": {"worker_pool_specs": [{"command": ["true"]}]},
            "max_trial_count": 10,
            "parallel_trial_count": 10**6,
        },
        "parallel_trial_count",
    ),
    (
        "/api/v1/batchPredictionJobs",
        {
            "model": "m",
            "cluster": "c",
            "input": {"uris": ["/x"]},
            "output": {"uri": "/y"},
            "concurrency": 10**6,
        },
        "concurrency",
    ),
    (
        "/api/v1/batchPredictionJobs",
        {
            "model": "m",
            "cluster": "c",
            "input": {"uris": ["/x"]},
            "output": {"uri": "/y"},
            "batch_size": 10**9,
        },
        "batch_size",
    ),
    (
        "/api/v1/endpoints/e:deployModel",
        {"model": "m", "max_replica_count": 10**6},
        "max_replica_count",
    ),
    ("/api/v1/endpoints/e:deployModel", {"model": "m", "num_cpus": 1e9}, "num_cpus"),
    (
        "/api/v1/endpoints/e:deployModel",
        {"model": "m", "batching": {"max_batch_size": 10**6}},
        "batching.max_batch_size",
    ),
    ("/api/v1/endpoints/e:predict", {"instances": [[0]] * 10_001}, "instances"),
]


@pytest.mark.parametrize(("path", "body", "field"), TOO_MUCH)
def test_every_count_and_resource_is_capped(
    static_api: Api, path: str, body: dict[str, Any], field: str
) -> None:
    answer = static_api.http.post(path, json=body, headers=static_api.headers())
    assert _field(answer) == field
    assert "RAYDECK_" in answer.json()["error"]["message"]  # names the setting to raise


def test_page_sizes_are_capped(static_api: Api) -> None:
    answer = static_api.http.get(
        "/api/v1/clusters", params={"page_size": 10**6}, headers=static_api.headers()
    )
    assert _field(answer) == "page_size"


def test_caps_are_settings(static_api: Api, small_caps: None) -> None:
    admin = static_api.headers()
    body = {"name": "c", "worker_pools": [{**POOL, "replica_count": 6}]}
    answer = static_api.http.post("/api/v1/clusters", json=body, headers=admin)
    assert _field(answer) == "worker_pools[0].replica_count"
    assert "RAYDECK_MAX_POOL_REPLICAS" in answer.json()["error"]["message"]
    labels = {"name": "c", "labels": {"a": "1", "b": "2", "c": "3", "d": "4"}}
    assert _field(static_api.http.post("/api/v1/clusters", json=labels, headers=admin)) == "labels"
    ok = {"name": "c", "worker_pools": [{**POOL, "replica_count": 5}]}
    assert static_api.http.post("/api/v1/clusters", json=ok, headers=admin).status_code == 201
    resize = {"worker_pools": [{"name": "w", "replica_count": 6}]}
    answer = static_api.http.patch("/api/v1/clusters/c", json=resize, headers=admin)
    assert _field(answer) == "worker_pools[0].replica_count"


def test_a_stored_row_over_a_lowered_cap_stays_readable(static_api: Api, small_caps: None) -> None:
    admin = static_api.headers()
    # Created under the default caps...
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYDECK_MAX_POOL_REPLICAS", "1000")
        get_settings.cache_clear()
        body = {"name": "c", "worker_pools": [{**POOL, "replica_count": 50}]}
        assert static_api.http.post("/api/v1/clusters", json=body, headers=admin).status_code == 201
    get_settings.cache_clear()  # ...and read under a cap of 5
    answer = static_api.http.get("/api/v1/clusters/c", headers=admin)
    assert answer.status_code == 200
    assert answer.json()["worker_pools"][0]["replica_count"] == 50
    assert static_api.http.get("/api/v1/clusters", headers=admin).status_code == 200


@pytest.fixture
def local_api(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], LocalClusterBackend]]:
    """The real local backend (no cluster is ever started here: every spec is refused
    before a process would be) with a 4-worker limit, and the reconcilers running."""
    home = tmp_path / "home"
    tokens = _fresh_db(home)
    settings = Settings(home=home, reconcile_interval=0.05, default_backend="local")
    backend = LocalClusterBackend(
        tmp_path / "clusters", port_range=(61000, 61100), max_workers=4, cpu_oversubscription=2
    )
    app = create_app(settings, backends={"local": backend}, run_reconcilers=True)
    with TestClient(app, raise_server_exceptions=False) as http:
        yield http, {"Authorization": f"Bearer {tokens['admin']}"}, backend
    app.state.raydeck.db.dispose()


def test_the_local_backend_refuses_what_this_host_cannot_hold(
    local_api: tuple[TestClient, dict[str, str], LocalClusterBackend],
) -> None:
    http, admin, _ = local_api
    cores = psutil.cpu_count() or 1
    memory = psutil.virtual_memory().total
    cases = [
        ({"head": {"num_cpus": cores * 2 + 1}}, "head.num_cpus"),
        ({"worker_pools": [{**POOL, "memory": memory + 1}]}, "worker_pools[0].memory"),
        (
            {"worker_pools": [{**POOL, "replica_count": 3}, {"name": "v", "replica_count": 2}]},
            "worker_pools",
        ),
        (
            {"worker_pools": [{**POOL, "replica_count": 1, "max_replica_count": 5}]},
            "worker_pools",
        ),  # autoscaling counts at its largest
    ]
    for extra, field in cases:
        answer = http.post("/api/v1/clusters", json={"name": "c", **extra}, headers=admin)
        assert _field(answer) == field, extra
        assert "num_cpus" not in field or "RAYDECK_LOCAL_CPU_OVERSUBSCRIPTION" in answer.text
    assert http.get("/api/v1/clusters", headers=admin).json()["items"] == []


def test_a_row_over_capacity_goes_to_error_at_once_and_deletes(
    local_api: tuple[TestClient, dict[str, str], LocalClusterBackend],
) -> None:
    """The attack's row (stored before the caps existed): the reconciler refuses it before
    any per-replica work, and deleting it works."""
    http, admin, backend = local_api
    state = http.app.state.raydeck  # type: ignore[attr-defined]
    with state.db.session() as session:
        session.add(
            ClusterRow(
                id="cl-huge",
                project="default",
                name="huge",
                state="PROVISIONING",
                backend="local",
                ray_version="2.60.0",
                spec={
                    "head": {"num_cpus": 1e6},
                    "worker_pools": [{"name": "w", "replica_count": 10**9}],
                },
                labels={},
                ray_auth_token="t",
            )
        )
    rss = psutil.Process().memory_info().rss

    def errored() -> bool:
        answer = http.get("/api/v1/clusters/huge", headers=admin).json()
        return bool(answer["state"] == "ERROR")

    wait_until(errored, "the oversized cluster to be refused")
    reason = http.get("/api/v1/clusters/huge", headers=admin).json()["state_reason"]
    assert "num_cpus" in reason
    assert psutil.Process().memory_info().rss - rss < 200 * 1024**2  # nothing per replica
    assert http.delete("/api/v1/clusters/huge", headers=admin).status_code == 202
    wait_until(
        lambda: http.get("/api/v1/clusters/huge", headers=admin).status_code == 404,
        "the oversized cluster to be deleted",
    )
    assert not any(backend._state_dir.glob("cl-huge*"))


def test_bodies_over_the_limit_get_413_on_every_route(tmp_path: Path) -> None:
    server = Api(tmp_path / "home", run_reconcilers=False, max_request_bytes=1000)
    try:
        admin = server.headers()
        big = b"[" + b"0," * 1000 + b"0]"
        for method, path in [
            ("POST", "/api/v1/clusters"),
            ("POST", "/api/v1/endpoints/e:predict"),  # the predict relay too
            ("PATCH", "/api/v1/models/m"),
            ("PUT", "/api/v1/projects/default/budget"),
            ("POST", "/api/v1/unknown"),  # before routing, before auth
        ]:
            answer = server.http.request(method, path, content=big, headers=admin)
            assert answer.status_code == 413, (path, answer.text)
            assert answer.json()["error"]["code"] == "resource_exhausted"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            yield b'{"name": "c", "labels": {"a": "'
            for _ in range(100):
                yield b"x" * 100

        answer = server.http.post("/api/v1/clusters", content=chunks(), headers=admin)
        assert answer.status_code == 413, answer.text
        small = server.http.post("/api/v1/clusters", json={"name": "c"}, headers=admin)
        assert small.status_code == 201
        # Uploads have their own, larger limit (multipart archives spool to disk).
        upload = server.http.post(
            "/api/v1/models:upload",
            data={"metadata": "{}"},
            files={"artifact": ("a.tar.gz", b"x" * 5000)},
            headers=admin,
        )
        assert upload.status_code == 400, upload.text  # got past the size limit
    finally:
        server.close()
