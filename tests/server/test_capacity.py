"""What a cluster can hold: shapes from a stored spec (autoscaling's max counts), refusals that
name the field, the waiting reason from Ray's load report, and the adaptive CPU default.
The live load comes from real Ray in tests/e2e (and the README test); here it is built from
the dataclasses ``RayDashboardClient.cluster_load`` returns."""

from __future__ import annotations

import pytest

from raydeck.backends.ray_api import ClusterLoad, NodeLoad
from raydeck.core.errors import InvalidArgumentError
from raydeck.core.models import ClusterCreate
from raydeck.db.models import ClusterRow, JobRow
from raydeck.server.services import capacity
from tests.conftest import Api

SPEC = ClusterCreate.model_validate(
    {
        "name": "dev",
        "head": {"num_cpus": 1},
        "worker_pools": [
            {"name": "workers", "num_cpus": 1, "replica_count": 2, "resources": {"accel": 1}},
            {"name": "big", "num_cpus": 4, "replica_count": 1, "max_replica_count": 3},
        ],
    }
).model_dump(mode="json") | {
    "nodes": [
        {"name": "head", "pool": "head", "address": "127.0.0.1:100"},
        {"name": "workers-0", "pool": "workers", "address": "127.0.0.1:101"},
        {"name": "workers-1", "pool": "workers", "address": "127.0.0.1:102"},
    ]
}


def _node(address: str, free_cpu: float, *, head: bool = False) -> NodeLoad:
    return NodeLoad(
        node_id=address,
        address=address,
        is_head=head,
        total={"CPU": 1.0, "node:127.0.0.1": 1.0},
        available={"CPU": free_cpu, "node:127.0.0.1": 1.0},
        busy=free_cpu < 1,
        idle_seconds=None,
    )


def _load(*demands: dict[str, float], free: tuple[float, float, float]) -> ClusterLoad:
    nodes = (
        _node("127.0.0.1:100", free[0], head=True),
        _node("127.0.0.1:101", free[1]),
        _node("127.0.0.1:102", free[2]),
    )
    return ClusterLoad(demands=demands, placement_groups=(), nodes=nodes, reported_at=None)


def test_shapes_count_autoscaling_max_and_refusals_name_the_field() -> None:
    shapes = capacity.node_shapes(SPEC)
    assert [(s.pool, s.resources["CPU"], s.max_count) for s in shapes] == [
        ("head", 1.0, 1),
        ("workers", 1.0, 2),
        ("big", 4.0, 3),
    ]
    capacity.check_fits(shapes, {"CPU": 4}, cluster="dev", field="f")  # a "big" node
    capacity.check_fits(shapes, {"CPU": 1, "accel": 1}, cluster="dev", field="f")
    with pytest.raises(InvalidArgumentError) as refused:
        capacity.check_fits(
            shapes, {"CPU": 1, "GPU": 1}, cluster="dev", field="f", fields={"GPU": "res.gpus"}
        )
    assert refused.value.field == "res.gpus" and "1 GPU" in refused.value.message
    with pytest.raises(InvalidArgumentError) as both:  # CPU and accel exist, never together
        capacity.check_fits(shapes, {"CPU": 4, "accel": 1}, cluster="dev", field="f")
    assert both.value.field == "f"
    # 1 + 2×1 + 3×4 = 15 CPUs at most
    capacity.check_total_fits(shapes, [{"CPU": 5}] * 3, cluster="dev", field="pools")
    with pytest.raises(InvalidArgumentError) as total:
        capacity.check_total_fits(shapes, [{"CPU": 4}] * 4, cluster="dev", field="pools")
    assert total.value.field == "pools" and "16 CPU" in total.value.message


def test_waiting_reason_names_what_is_missing_and_the_largest_free_slot() -> None:
    names = capacity.node_names(SPEC)
    stuck = _load({"CPU": 1.0}, free=(0.0, 0.5, 0.25))
    assert (
        capacity.waiting_reason(stuck, names)
        == "waiting for 1 CPU; largest free slot 0.5 CPU on workers-0"
    )
    assert capacity.waiting_reason(stuck, names, {"CPU": 0.5}) is None  # fits workers-0
    assert capacity.waiting_reason(_load(free=(0.0, 0.5, 0.25)), names) is None  # none pending
    fits = _load({"CPU": 1.0}, free=(0.0, 0.5, 1.0))  # pending, but a slot is free now
    assert capacity.waiting_reason(fits, names) is None


def test_default_cpus_fit_the_largest_free_slot() -> None:
    shapes = capacity.node_shapes(SPEC)
    assert capacity.default_cpus(shapes, _load(free=(1.0, 1.0, 1.0))) == 1.0
    assert capacity.default_cpus(shapes, _load(free=(0.0, 0.5, 0.25))) == 0.5
    assert capacity.default_cpus(shapes, _load(free=(0.0, 0.0, 0.0))) == 1.0  # nothing free
    assert capacity.default_cpus(shapes, None) == 1.0
    small = capacity.node_shapes({**SPEC, "head": {"num_cpus": 0.5}, "worker_pools": []})
    assert capacity.default_cpus(small, None) == 0.5


def test_a_job_whose_driver_fits_no_node_is_refused_naming_the_field(static_api: Api) -> None:
    static_api.sdk().clusters.create(ClusterCreate(name="dev"))  # one head with 1 CPU
    with static_api.app.state.raydeck.db.session() as session:
        for row in session.query(ClusterRow):
            row.state, row.dashboard_url = "RUNNING", "http://127.0.0.1:9"
    body = {"entrypoint": "python x.py", "entrypoint_num_cpus": 2}
    response = static_api.http.post(
        "/api/v1/clusters/dev/jobs", json=body, headers=static_api.headers()
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == "entrypoint_num_cpus" and "2 CPU" in error["message"]
    with static_api.app.state.raydeck.db.session() as session:
        assert session.query(JobRow).count() == 0
