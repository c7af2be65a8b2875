"""LocalClusterBackend against real Ray: create, connect, scale, side by side, crash, re-attach.

The clusters are real ``ray start`` processes; every fixture deletes what it created and then
kills anything still carrying its cluster marker, so a failing test leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from raydeck.backends.base import BackendError, ClusterEndpoints, ClusterSpec, PoolSpec
from raydeck.backends.local import LocalClusterBackend, find_cluster_processes
from raydeck.backends.local.ports import SLOT_SIZE, PortAllocator
from raydeck.backends.local.processes import terminate

PORT_START = int(os.environ.get("RAYDECK_TEST_LOCAL_PORT_START", "36000"))
PORT_RANGE = (PORT_START, PORT_START + 5999)

# Runs in a fresh interpreter: Ray Client needs RAY_AUTH_MODE=token and RAY_AUTH_TOKEN there.
CLIENT_SCRIPT = """
import sys, ray
ray.init(sys.argv[1])

@ray.remote(resources={sys.argv[2]: 1})
def where():
    import os
    return os.environ.get("RAYDECK_NODE")

print(ray.get(where.remote(), timeout=120))
"""


def spec_for(cluster_id: str, pool: str, replicas: int, resource: str) -> ClusterSpec:
    return ClusterSpec(
        cluster_id=cluster_id,
        name=cluster_id,
        head=PoolSpec("head", 1, num_cpus=1),
        worker_pools=(
            PoolSpec(pool, replicas, num_cpus=1, memory=1_500_000_000, resources={resource: 1}),
        ),
        ray_auth_token=secrets.token_hex(16),
        env={"RAYDECK_TEST_ENV": "passed-through"},
    )


def scaled(spec: ClusterSpec, replicas: int) -> ClusterSpec:
    pool = dataclasses.replace(spec.worker_pools[0], replicas=replicas)
    return dataclasses.replace(spec, worker_pools=(pool,))


def client_command(endpoints: ClusterEndpoints, resource: str) -> list[str]:
    return [sys.executable, "-c", CLIENT_SCRIPT, f"ray://{endpoints.ray_client_address}", resource]


def client_env(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RAYDECK_"))}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    return env


def run_task(endpoints: ClusterEndpoints, token: str, resource: str) -> str:
    """Run one task needing ``resource`` through Ray Client; return the node it ran on."""
    result = subprocess.run(
        client_command(endpoints, resource),
        env=client_env(token),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def pids(cluster_id: str) -> set[int]:
    return {p.pid for p in find_cluster_processes(cluster_id)}


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def cleanup(backend: LocalClusterBackend, spec: ClusterSpec) -> None:
    try:
        backend.delete(spec)
    finally:
        terminate(find_cluster_processes(spec.cluster_id), grace_seconds=2)


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-backend")


@pytest.fixture(scope="module")
def backend(state_dir: Path) -> LocalClusterBackend:
    return LocalClusterBackend(state_dir, port_range=PORT_RANGE)


@pytest.fixture(scope="module")
def cluster_a(backend: LocalClusterBackend) -> Iterator[tuple[ClusterSpec, ClusterEndpoints]]:
    spec = spec_for(f"a{secrets.token_hex(3)}", "gpuish", 2, "accel")
    try:
        started = time.monotonic()
        endpoints = backend.apply(spec)
        print(f"\ncreate head + 2 workers -> RUNNING: {time.monotonic() - started:.1f}s")
        yield spec, endpoints
    finally:
        cleanup(backend, spec)


@pytest.mark.ray
@pytest.mark.slow
def test_create_runs_task_on_pool_resource(
    backend: LocalClusterBackend, cluster_a: tuple[ClusterSpec, ClusterEndpoints]
) -> None:
    spec, endpoints = cluster_a
    seen = backend.observe(spec)
    assert seen.head_alive and seen.endpoints == endpoints
    assert [(n.name, n.pool, n.alive) for n in seen.nodes] == [
        ("head", "head", True),
        ("gpuish-0", "gpuish", True),
        ("gpuish-1", "gpuish", True),
    ]
    assert len({n.address for n in seen.nodes}) == 3

    assert run_task(endpoints, spec.ray_auth_token, "accel") in {"gpuish-0", "gpuish-1"}

    # Ray's own token auth guards the dashboard; the pool's memory reached Ray.
    url = f"{endpoints.dashboard_url}/nodes?view=summary&nocache=1"
    assert httpx.get(url, trust_env=False).status_code == 401
    summary = httpx.get(
        url, headers={"Authorization": f"Bearer {spec.ray_auth_token}"}, trust_env=False
    ).json()["data"]["summary"]
    workers = [s["raylet"] for s in summary if not s["raylet"]["isHeadNode"]]
    assert [w["resourcesTotal"]["memory"] for w in workers] == [1_500_000_000] * 2


@pytest.mark.ray
@pytest.mark.slow
def test_every_process_is_found(cluster_a: tuple[ClusterSpec, ClusterEndpoints]) -> None:
    spec, _ = cluster_a
    names: set[str] = set()
    for proc in find_cluster_processes(spec.cluster_id):
        try:
            cmdline = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        for kind in (
            "gcs_server",
            "raylet",
            "dashboard.py",
            "log_monitor.py",
            "monitor.py",
            "ray.util.client.server",
            "ray::DashboardAgent",
            "ray::RuntimeEnvAgent",
        ):
            if kind in cmdline:
                names.add(kind)
    assert len(names) == 8, names
    head_only = {p.pid for p in find_cluster_processes(spec.cluster_id, "head")}
    assert head_only and head_only < pids(spec.cluster_id)
    # Daemons get the spec's env and the markers.
    raylet = next(
        p for p in find_cluster_processes(spec.cluster_id, "gpuish-0") if p.name() == "raylet"
    )
    assert raylet.environ()["RAYDECK_TEST_ENV"] == "passed-through"
    assert raylet.environ()["RAY_AUTH_MODE"] == "token"


@pytest.mark.ray
@pytest.mark.slow
def test_restarted_backend_reattaches(
    state_dir: Path, backend: LocalClusterBackend, cluster_a: tuple[ClusterSpec, ClusterEndpoints]
) -> None:
    spec, endpoints = cluster_a
    before = pids(spec.cluster_id)
    fresh = LocalClusterBackend(state_dir, port_range=PORT_RANGE)  # as after a server restart
    assert fresh.observe(spec) == backend.observe(spec)
    assert fresh.apply(spec) == endpoints
    assert before <= pids(spec.cluster_id)  # nothing was restarted


@pytest.mark.ray
@pytest.mark.slow
def test_scale_down_prefers_named_node(
    backend: LocalClusterBackend, cluster_a: tuple[ClusterSpec, ClusterEndpoints]
) -> None:
    spec, endpoints = cluster_a
    kept = {p.pid for p in find_cluster_processes(spec.cluster_id, "gpuish-1")}
    assert backend.apply(scaled(spec, 1), prefer_remove=["gpuish-0"]) == endpoints
    seen = backend.observe(spec)
    assert seen.alive_replicas("gpuish") == 1
    assert [n.name for n in seen.nodes] == ["head", "gpuish-1"]
    assert find_cluster_processes(spec.cluster_id, "gpuish-0") == []
    assert kept <= {p.pid for p in find_cluster_processes(spec.cluster_id, "gpuish-1")}


@pytest.mark.ray
@pytest.mark.slow
def test_two_clusters_side_by_side_and_delete(
    state_dir: Path, backend: LocalClusterBackend, cluster_a: tuple[ClusterSpec, ClusterEndpoints]
) -> None:
    spec_a, endpoints_a = cluster_a
    spec_b = spec_for(f"b{secrets.token_hex(3)}", "cpu", 1, "other")
    try:
        endpoints_b = backend.apply(spec_b)
        assert endpoints_b.gcs_address != endpoints_a.gcs_address

        # Both clusters run tasks at the same time, each on its own pool's resource.
        procs = [
            subprocess.Popen(
                client_command(endpoints, resource),
                env=client_env(spec.ray_auth_token),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for spec, endpoints, resource in (
                (spec_a, endpoints_a, "accel"),
                (spec_b, endpoints_b, "other"),
            )
        ]
        outputs = [p.communicate(timeout=240) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
        assert [out.strip().splitlines()[-1] for out, _ in outputs] == ["gpuish-1", "cpu-0"]

        b_before = pids(spec_b.cluster_id)
        state_file = state_dir / spec_a.cluster_id / "state.json"
        temp_dirs = [Path(n["temp_dir"]) for n in json.loads(state_file.read_text())["nodes"]]
        assert temp_dirs and all(d.is_dir() for d in temp_dirs)
        backend.delete(spec_a)
        assert find_cluster_processes(spec_a.cluster_id) == []
        assert not any(d.exists() for d in [*temp_dirs, state_file.parent])
        assert backend.observe(spec_a).endpoints is None
        backend.delete(spec_a)  # idempotent
        assert b_before <= pids(spec_b.cluster_id)
        assert backend.observe(spec_b).head_alive
        assert run_task(endpoints_b, spec_b.ray_auth_token, "other") == "cpu-0"

        backend.delete(spec_b)
        assert find_cluster_processes(spec_b.cluster_id) == []
    finally:
        cleanup(backend, spec_b)


@pytest.mark.ray
@pytest.mark.slow
def test_dead_gcs_is_reported_then_apply_restarts_and_delete_cleans(
    backend: LocalClusterBackend,
) -> None:
    spec = spec_for(f"c{secrets.token_hex(3)}", "w", 0, "x")
    try:
        endpoints = backend.apply(spec)
        first_gcs = kill_gcs(spec.cluster_id)
        assert wait_until(lambda: not backend.observe(spec).head_alive)
        observed = backend.observe(spec)
        assert [(n.name, n.alive) for n in observed.nodes] == [("head", False)]

        assert backend.apply(spec) == endpoints  # starts over; the head keeps its free slot
        assert backend.observe(spec).head_alive
        assert first_gcs not in pids(spec.cluster_id)

        kill_gcs(spec.cluster_id)
        assert wait_until(lambda: not backend.observe(spec).head_alive)
        backend.delete(spec)
        assert find_cluster_processes(spec.cluster_id) == []
        assert backend.observe(spec).endpoints is None
    finally:
        cleanup(backend, spec)


def kill_gcs(cluster_id: str) -> int:
    procs = find_cluster_processes(cluster_id, "head")
    pid = next(p.pid for p in procs if p.name() == "gcs_server")
    os.kill(pid, signal.SIGKILL)
    return int(pid)


@pytest.mark.ray
@pytest.mark.slow
def test_failed_ray_start_raises_and_leaves_nothing(
    state_dir: Path, backend: LocalClusterBackend
) -> None:
    spec = dataclasses.replace(
        spec_for(f"d{secrets.token_hex(3)}", "w", 0, "x"),
        head=PoolSpec("head", 1, num_cpus=1, resources={"broken": -1}),
    )
    try:
        with pytest.raises(BackendError, match=r"ray start for node 'head'.*nonnegative"):
            backend.apply(spec)
        assert find_cluster_processes(spec.cluster_id) == []
        assert backend.observe(spec).nodes == ()
    finally:
        cleanup(backend, spec)


# -- port slots (no Ray) ------------------------------------------------------------------


def test_slots_skip_bound_ports_and_leases(tmp_path: Path) -> None:
    start = PORT_RANGE[1] + 1 - 3 * SLOT_SIZE  # the top of the test range, away from clusters
    allocator = PortAllocator((start, start + 3 * SLOT_SIZE - 1), tmp_path / "leases.json")
    with socket.socket() as held:
        held.bind(("127.0.0.1", start + 42))  # a worker port of the first block
        first = allocator.allocate(1, used=set())
    assert first == [start + SLOT_SIZE]
    other = PortAllocator((start, start + 3 * SLOT_SIZE - 1), tmp_path / "leases.json")
    assert other.allocate(1, used=set()) == [start]  # leased blocks are skipped
    with pytest.raises(BackendError, match="no free block"):
        other.allocate(1, used={start + 2 * SLOT_SIZE})


def test_concurrent_allocations_never_collide(tmp_path: Path) -> None:
    start = PORT_RANGE[1] + 1 - 10 * SLOT_SIZE
    lease_file = tmp_path / "leases.json"
    results: list[int] = []
    lock = threading.Lock()

    def grab() -> None:
        allocator = PortAllocator((start, start + 10 * SLOT_SIZE - 1), lease_file)
        bases = allocator.allocate(2, used=set())
        with lock:
            results.extend(bases)

    threads = [threading.Thread(target=grab) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(start, start + 10 * SLOT_SIZE, SLOT_SIZE))
