"""Real-Ray fixtures: one real ``raydeck server`` subprocess per test session.

Clusters it starts are real ``ray start`` processes; every fixture deletes what it created,
and the session finalizer kills anything left of this server's clusters (never `ray stop`).
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Run tests that start Ray after the fast ones so failures show up early.
    items.sort(key=lambda item: item.get_closest_marker("ray") is not None)


__all__ = ["LiveServer", "Path"]
