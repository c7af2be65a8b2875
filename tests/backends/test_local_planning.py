"""Port slots and node planning of the local backend; no Ray processes involved."""

from __future__ import annotations

import dataclasses
import socket
import threading
from pathlib import Path

import pytest

from raydeck.backends.base import BackendError, ClusterSpec, PoolSpec
from raydeck.backends.local.planning import choose_surplus, missing_workers, node_temp_dir
from raydeck.backends.local.ports import SLOT_SIZE, PortAllocator, ephemeral_port_range
from raydeck.backends.local.state import ClusterState, NodeRecord

# The top of the Ray tests' default range (tests/backends/test_local_backend.py), below the
# kernel's ephemeral ports; other processes may hold random ports in it, so only relations
# between results are asserted.
PORT_END = 31999
SPEC = ClusterSpec("c", "c", PoolSpec("head", 1), (), ray_auth_token="t")


# -- port slots (no Ray) ------------------------------------------------------------------


def test_slots_skip_bound_ports_and_leases(tmp_path: Path) -> None:
    start = PORT_END + 1 - 10 * SLOT_SIZE
    port_range = (start, start + 10 * SLOT_SIZE - 1)
    lease_file = tmp_path / "leases.json"
    probe = PortAllocator(port_range, tmp_path / "probe.json").allocate(1, used=set())[0]
    with socket.socket() as held:
        held.bind(("127.0.0.1", probe + 42))  # a worker port of the first free block
        first = PortAllocator(port_range, lease_file).allocate(1, used=set(), owner="x")
    assert first != [probe]
    other = PortAllocator(port_range, lease_file)
    assert other.allocate(1, used=set(), owner="y") != first  # x's lease is skipped
    # ...but not by x itself (a restarted head takes its slot back).
    assert other.allocate(1, used=set(), prefer=first, owner="x") == first
    other.release(first)  # once the node is up, its bound ports keep others away
    assert other.allocate(1, used=set(), prefer=first, owner="y") == first
    with pytest.raises(BackendError, match="no free block"):
        PortAllocator((start, start + SLOT_SIZE - 1), lease_file).allocate(1, used={start})


def test_slots_avoid_the_ephemeral_port_range(tmp_path: Path) -> None:
    _, top = ephemeral_port_range()
    start = top - 2 * SLOT_SIZE + 1  # two blocks inside the kernel's range, then two above
    allocator = PortAllocator((start, start + 4 * SLOT_SIZE - 1), tmp_path / "leases.json")
    assert allocator.allocate(1, used=set())[0] > top


def test_concurrent_allocations_never_collide(tmp_path: Path) -> None:
    start = PORT_END + 1 - 20 * SLOT_SIZE
    lease_file = tmp_path / "leases.json"
    results: list[int] = []
    lock = threading.Lock()

    def grab() -> None:
        allocator = PortAllocator((start, start + 20 * SLOT_SIZE - 1), lease_file)
        bases = allocator.allocate(2, used=set())
        with lock:
            results.extend(bases)

    threads = [threading.Thread(target=grab) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == len(set(results)) == 10


# -- planning (no Ray) --------------------------------------------------------------------


def test_surplus_prefers_named_nodes_then_highest_index_and_names_reuse_gaps() -> None:
    def record(name: str, pool: str) -> NodeRecord:
        return NodeRecord(name, pool, 0, "/unused")

    state = ClusterState("c", "/unused")
    for name, pool in [("head", "head"), ("a-0", "a"), ("a-1", "a"), ("a-2", "a"), ("b-0", "b")]:
        state.nodes[name] = record(name, pool)
    spec = dataclasses.replace(SPEC, worker_pools=(PoolSpec("a", 1), PoolSpec("c", 2)))
    surplus = choose_surplus(state, spec, {"a-0"})
    assert sorted(r.name for r in surplus) == ["a-0", "a-2", "b-0"]  # pool b left the spec
    assert [r.name for r in choose_surplus(state, spec, set()) if r.pool == "a"] == ["a-2", "a-1"]

    del state.nodes["a-0"]  # died: its name is free again
    grown = dataclasses.replace(spec, worker_pools=(PoolSpec("a", 4),))
    assert [name for name, _ in missing_workers(state, grown, [])] == ["a-0", "a-3"]


def test_temp_dirs_stay_short_enough_for_unix_sockets() -> None:
    assert node_temp_dir(Path("/tmp/rd-0123456789"), "gpu-0", 30100) == Path(
        "/tmp/rd-0123456789/gpu-0"
    )
    long_name = node_temp_dir(Path("/tmp/rd-0123456789"), "a-very-long-pool-name-7", 30100)
    assert long_name == Path("/tmp/rd-0123456789/n30100")
