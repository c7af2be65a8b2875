"""The autoscaling policy on its own: bin-packing demand, bounds, idle removal."""

from __future__ import annotations

from typing import Any

from raydeck.core.models import WorkerPoolSpec
from raydeck.server.reconcilers.autoscaling_policy import NodeActivity, plan_scaling


def pool(name: str = "accel", **kw: Any) -> WorkerPoolSpec:
    base: dict[str, Any] = {"name": name, "num_cpus": 1, "resources": {"accel": 1}}
    base.update({"replica_count": 1, "min_replica_count": 1, "max_replica_count": 3, **kw})
    return WorkerPoolSpec.model_validate(base)


def busy(name: str, pool_name: str = "accel") -> NodeActivity:
    return NodeActivity(name, pool_name, {"CPU": 0, "accel": 0}, idle_for=0)


def idle(name: str, seconds: float, pool_name: str = "accel") -> NodeActivity:
    return NodeActivity(name, pool_name, {"CPU": 1, "accel": 1}, idle_for=seconds)


def test_pending_demand_adds_nodes_up_to_max() -> None:
    demands = [{"CPU": 1, "accel": 1}] * 5
    (decision,) = plan_scaling([pool()], demands, [busy("accel-0")], idle_seconds=30)
    assert decision.replicas == 3  # max, although 5 are waiting
    assert decision.remove == ()


def test_demand_that_fits_free_resources_adds_nothing() -> None:
    demands = [{"CPU": 1, "accel": 1}]
    assert plan_scaling([pool()], demands, [idle("accel-0", 0)], idle_seconds=30) == []


def test_demand_goes_to_the_pool_that_provides_it() -> None:
    pools = [pool("cpu", resources={}), pool("accel")]
    (decision,) = plan_scaling(pools, [{"accel": 1}], [], idle_seconds=30)
    assert decision.pool == "accel"


def test_unsatisfiable_demand_is_ignored() -> None:
    assert plan_scaling([pool()], [{"GPU": 1}], [busy("accel-0")], idle_seconds=30) == []


def test_bundles_pack_onto_one_new_node_when_they_fit() -> None:
    big = pool(num_cpus=4, resources={})
    (decision,) = plan_scaling([big], [{"CPU": 1}] * 4, [], idle_seconds=30)
    assert decision.replicas == 2  # one new 4-CPU node holds all four


def test_fixed_pools_never_change() -> None:
    fixed = WorkerPoolSpec(name="fixed", replica_count=2)
    assert plan_scaling([fixed], [{"CPU": 1}] * 9, [], idle_seconds=0) == []


def test_idle_nodes_are_removed_down_to_min() -> None:
    nodes = [idle("accel-0", 100), idle("accel-1", 100), idle("accel-2", 5)]
    (decision,) = plan_scaling([pool(replica_count=3)], [], nodes, idle_seconds=30)
    assert decision.replicas == 1
    assert set(decision.remove) == {"accel-0", "accel-1"}


def test_min_is_respected_when_all_idle() -> None:
    nodes = [idle("accel-0", 100), idle("accel-1", 100)]
    (decision,) = plan_scaling(
        [pool(replica_count=2, min_replica_count=2, max_replica_count=4)],
        [],
        nodes,
        idle_seconds=30,
    ) or [None]
    assert decision is None


def test_nothing_removed_while_work_is_pending() -> None:
    nodes = [idle("accel-0", 100), busy("accel-1")]
    p = pool(replica_count=2, max_replica_count=2)
    assert plan_scaling([p], [{"CPU": 1, "accel": 1}] * 3, nodes, idle_seconds=30) == []
