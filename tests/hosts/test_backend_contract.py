"""One contract every ClusterBackend passes: create, observe, scale up and down (named nodes
first), re-attach from a fresh backend object, delete. Run against `local` (processes on this
host) and `hosts` (agents in namespaces, driven through the same database as the server)."""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from raydeck.backends.base import ClusterBackend, ClusterSpec, PoolSpec
from raydeck.backends.hosts import HostsClusterBackend
from raydeck.backends.local import LocalClusterBackend
from raydeck.backends.local.processes import cluster_processes
from raydeck.core.ids import new_id
from raydeck.db.models import ClusterRow, HostNodeRow
from raydeck.db.session import Database
from raydeck.server.secret_box import secret_box
from tests.hosts.conftest import HostsEnv

pytestmark = [pytest.mark.ray, pytest.mark.slow]

LOCAL_PORT_START = int(os.environ.get("RAYDECK_TEST_LOCAL_PORT_START", "26000"))


@dataclass
class Subject:
    make: Callable[[], ClusterBackend]  # a fresh object over the same state (a restart)
    raylets: Callable[[ClusterSpec], int]  # raylet processes of the cluster, wherever
    spec: ClusterSpec


def _spec(cluster_id: str, replicas: int) -> ClusterSpec:
    return ClusterSpec(
        cluster_id=cluster_id,
        name=cluster_id,
        head=PoolSpec("head", 1, num_cpus=1),
        worker_pools=(PoolSpec("w", replicas, num_cpus=1, placement="spread"),),
        ray_auth_token=secrets.token_hex(16),
    )


def _scaled(spec: ClusterSpec, replicas: int) -> ClusterSpec:
    pool = dataclasses.replace(spec.worker_pools[0], replicas=replicas)
    return dataclasses.replace(spec, worker_pools=(pool,))


@pytest.fixture(params=["local", "hosts"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    if request.param == "local":
        spec = _spec(new_id("ct"), 2)
        port_range = (LOCAL_PORT_START, LOCAL_PORT_START + 5999)

        def make_local() -> ClusterBackend:
            return LocalClusterBackend(tmp_path / "state", port_range=port_range)

        def local_raylets(s: ClusterSpec) -> int:
            return sum(1 for cp in cluster_processes(s.cluster_id) if cp.name == "raylet")

        yield Subject(make_local, local_raylets, spec)
        make_local().delete(spec)
        for cp in cluster_processes(spec.cluster_id):
            cp.process.kill()
        return

    env: HostsEnv = request.getfixturevalue("hosts_env")
    db = Database(f"sqlite:///{env.server.home / 'raydeck.db'}")
    spec = _spec(new_id("cl"), 2)
    # The agents learn a cluster's Ray token from its row; ERROR keeps the server's own
    # reconciler away from a cluster this test drives through the backend directly.
    with db.session() as session:
        session.add(
            ClusterRow(
                id=spec.cluster_id,
                name=f"contract-{spec.cluster_id[-6:]}",
                state="ERROR",
                state_reason="driven by the backend contract test",
                backend="hosts",
                ray_version="",
                spec={"head": {}, "worker_pools": []},
                ray_auth_token_ciphertext=secret_box(env.server.home / "secret.key").encrypt(
                    spec.ray_auth_token
                ),
            )
        )

    def make_hosts() -> ClusterBackend:
        return HostsClusterBackend(db, heartbeat_timeout=6.0, port_range=(21000, 29999))

    def hosts_raylets(s: ClusterSpec) -> int:
        with db.session() as session:
            ids = session.scalars(
                select(HostNodeRow.id).where(HostNodeRow.cluster_id == s.cluster_id)
            ).all()
        return sum(1 for i in ids for cp in cluster_processes(i) if cp.name == "raylet")

    try:
        yield Subject(make_hosts, hosts_raylets, spec)
    finally:
        make_hosts().delete(spec)
        with db.session() as session:
            row = session.get(ClusterRow, spec.cluster_id)
            if row is not None:
                session.delete(row)
        db.dispose()


def _alive(backend: ClusterBackend, spec: ClusterSpec) -> set[str]:
    observation = backend.observe(spec)
    assert observation.head_alive
    return {n.name for n in observation.nodes if n.alive}


def test_backend_contract(subject: Subject) -> None:
    backend, spec = subject.make(), subject.spec
    endpoints = backend.apply(spec)
    assert endpoints.dashboard_url.startswith("http://")
    assert _alive(backend, spec) == {"head", "w-0", "w-1"}
    assert subject.raylets(spec) == 3

    bigger = _scaled(spec, 3)
    backend.apply(bigger)
    assert _alive(backend, bigger) == {"head", "w-0", "w-1", "w-2"}

    # Shrinking removes the named node first, then the highest index.
    smaller = _scaled(spec, 1)
    backend.apply(smaller, prefer_remove=["w-0"])
    assert _alive(backend, smaller) == {"head", "w-1"}
    assert subject.raylets(smaller) == 2

    # A fresh backend object (a restarted server) sees the same nodes and starts nothing.
    again = subject.make()
    assert _alive(again, smaller) == {"head", "w-1"}
    assert again.apply(smaller) == endpoints
    assert subject.raylets(smaller) == 2

    again.delete(smaller)
    observation = again.observe(smaller)
    assert not observation.head_alive and not any(n.alive for n in observation.nodes)
    assert subject.raylets(smaller) == 0
