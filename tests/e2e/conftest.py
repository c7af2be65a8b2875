"""One real cluster shared by the e2e modules that only use a cluster (jobs, training,
endpoints, batch prediction, warehouse data) rather than test clusters themselves: starting
and deleting a cluster is most of what such a module costs. Those tests run last (see
``pytest_collection_modifyitems`` in tests/ray_fixtures.py), so the cluster is not left idling
beside the modules that start clusters of their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from raydeck.client import RaydeckClient
from raydeck.core.models import ClusterCreate
from tests.ray_fixtures import LiveServer

SHARED_CLUSTER = "shared"


@pytest.fixture(scope="session")
def shared_cluster(live_client: RaydeckClient) -> Iterator[str]:
    """A head with 4 logical CPUs: enough for 3 parallel 1-CPU trials, or a 2-worker Ray Train
    job beside its driver (tests/e2e/test_training.py)."""
    spec = ClusterCreate.model_validate({"name": SHARED_CLUSTER, "head": {"num_cpus": 4}})
    live_client.clusters.create(spec)
    try:
        live_client.clusters.wait(SHARED_CLUSTER, timeout=180)
        yield SHARED_CLUSTER
    finally:
        live_client.clusters.delete(SHARED_CLUSTER)
        live_client.clusters.wait_deleted(SHARED_CLUSTER, timeout=180)


@pytest.fixture(scope="session")
def cluster(shared_cluster: str) -> str:
    """The cluster an e2e test runs its work on."""
    return shared_cluster


@pytest.fixture
def cluster_tmp(live_server: LiveServer) -> Path:
    """Like ``tmp_path``, for files a cluster reads or writes (inputs, outputs, code): Ray runs
    as its own OS user, which cannot enter pytest's 0700 temp root."""
    return live_server.cluster_tmp_dir()
