"""Real-Ray fixtures: one real ``raydeck server`` subprocess per test session, and one
in-process Ray instance shared by the tests that run Ray Data / Ray Train in the test process.

Clusters the server starts are real ``ray start`` processes; every fixture deletes what it
created, and the session finalizer kills anything left of this server's clusters (never
`ray stop`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from raydeck.backends.local import find_cluster_processes
from raydeck.client import RaydeckClient
from raydeck.devtools import ServerProcess


class LiveServer(ServerProcess):
    def client(self) -> RaydeckClient:
        return RaydeckClient(self.url, self.token, timeout=120)

    def run_python(self, code: str, timeout: float = 180) -> str:
        """Run ``code`` in a fresh interpreter configured as a Raydeck client; return stdout."""
        result = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=self.client_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise AssertionError(f"client script failed:\n{result.stdout}\n{result.stderr[-3000:]}")
        return result.stdout

    def cluster_ids(self) -> list[str]:
        with self.client() as client:
            return [c.id for c in client.clusters.list(page_size=1000).items]


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("raydeck-home")
    server = LiveServer(
        home,
        env={
            "RAYDECK_RECONCILE_INTERVAL": "0.5",
            "RAYDECK_AUTOSCALE_INTERVAL": "1",
            "RAYDECK_AUTOSCALE_IDLE_SECONDS": "4",
            "RAYDECK_PORT_RANGE_START": os.environ.get("RAYDECK_TEST_PORT_START", "20000"),
            # Tests name files under their tmp_path (the home, in there too, stays refused)
            # and reach Postgres and fakes on loopback: what an admin would allowlist.
            "RAYDECK_ALLOWED_ROOTS": str(tmp_path_factory.getbasetemp()),
            "RAYDECK_ALLOWED_PRIVATE_NETWORKS": "127.0.0.1/32",
        },
    )
    server.start()
    created: set[str] = set()
    try:
        yield server
        created.update(server.cluster_ids() if server.process else [])
    finally:
        server.stop()
        # Anything a failed test left behind: stop exactly those processes.
        for cluster_dir in (home / "clusters").glob("*"):
            created.add(cluster_dir.name)
        for cluster_id in created:
            for proc in find_cluster_processes(cluster_id):
                proc.kill()


@pytest.fixture(scope="session")
def live_client(live_server: LiveServer) -> Iterator[RaydeckClient]:
    with live_server.client() as client:
        yield client


@pytest.fixture
def local_ray() -> None:
    """Ray in the test process, started by the first test that needs it and kept for the next
    ones until a test that does not (see ``pytest_runtest_teardown``): starting Ray is most of
    what a module of Ray Data tests costs. ``address="local"``: always a private instance,
    never a cluster someone else started on this machine."""
    import ray  # here, not at the top: most test runs never start Ray in-process

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
        )


def _uses(item: pytest.Item | None, fixture: str) -> bool:
    return item is not None and fixture in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)  # after the module's own fixtures are torn down
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    ray = sys.modules.get("ray")
    if _uses(item, "local_ray") and not _uses(nextitem, "local_ray") and ray is not None:
        ray.shutdown()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that start Ray run after the fast ones so failures show up early; among them,
    # first those on the in-process Ray (one start for all of them), last those on the e2e
    # modules' shared cluster (tests/e2e/conftest.py), so it lives only while used.
    def order(item: pytest.Item) -> int:
        if item.get_closest_marker("ray") is None:
            return 0
        if _uses(item, "local_ray"):
            return 1
        return 3 if _uses(item, "shared_cluster") else 2

    items.sort(key=order)


__all__ = ["LiveServer", "Path"]
