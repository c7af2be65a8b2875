"""Starting, finding and stopping the Ray nodes one host agent runs (the local backend's parts).

Each node's processes carry its placement id as ``RAYDECK_CLUSTER_ID`` (and its node name as
``RAYDECK_NODE``), so the local backend's process finding (markers, descendants, orphaned
sessions) finds exactly one node's processes, whichever cluster or host it belongs to.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from raydeck.backends.base import BackendError, PoolSpec
from raydeck.backends.local.planning import HEAD, MAX_TEMP_DIR_LEN
from raydeck.backends.local.ports import SLOT_SIZE, NodePorts
from raydeck.backends.local.processes import (
    cluster_processes,
    live_daemons,
    many_clusters_processes,
    runs_client_server,
    terminate,
)
from raydeck.backends.local.raystart import (
    CLIENT_SERVER_LOG,
    NodeLaunch,
    log_tail,
    run_ray_start,
    start_client_server,
)
from raydeck.backends.local.readiness import wait_for_port
from raydeck.core.models.hosts import NodeAssignment

__all__ = ["NodeRunner", "RunningNode", "validate_assignment"]

_ID = re.compile(r"^[a-z]{1,8}-[0-9a-f]{8,40}$")
_NODE = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")
_CLIENT_SERVER_WAIT_SECONDS = 60.0


@dataclass
class RunningNode:
    """What the agent remembers of one node it started (its state file holds these)."""

    id: str
    cluster_id: str
    node: str
    port_base: int
    temp_dir: str
    node_ip: str | None = None

    @property
    def is_head(self) -> bool:
        return self.node == HEAD


def validate_assignment(a: NodeAssignment) -> None:
    """The agent runs `ray start` for what the server names, but only in this shape."""
    if not _ID.match(a.id) or not _NODE.match(a.node):
        raise BackendError(f"refusing node {a.node!r} ({a.id!r}): malformed name", retryable=False)
    for base in (a.port_base, a.head_port_base):
        if not 1024 <= base <= 65535 - SLOT_SIZE + 1:
            raise BackendError(f"refusing node {a.node!r}: port slot {base} out of range")


class NodeRunner:
    def __init__(self, data_dir: Path, address: str) -> None:
        self.address = address
        preferred = data_dir / "ray"
        if len(str(preferred)) + len("/n65535") <= MAX_TEMP_DIR_LEN:
            self.base_dir = preferred
        else:  # Ray's socket paths must stay short
            digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:10]
            self.base_dir = Path("/tmp") / f"rdh-{digest}"

    def record(self, a: NodeAssignment) -> RunningNode:
        temp_dir = self.base_dir / f"n{a.port_base}"
        return RunningNode(a.id, a.cluster_id, a.node, a.port_base, str(temp_dir))

    def start(self, a: NodeAssignment, record: RunningNode) -> str:
        """Blocking: `ray start` (plus the Ray Client proxy on a head); returns the node IP."""
        validate_assignment(a)
        launch = self._launch(a, record)
        shutil.rmtree(launch.temp_dir, ignore_errors=True)  # a previous run's sockets
        self._kill(record)  # leftovers of an earlier attempt under the same id
        try:
            node_ip = run_ray_start(launch)
        except (OSError, subprocess.SubprocessError) as exc:
            raise BackendError(f"ray start for node {a.node!r} failed: {exc}") from exc
        if launch.is_head:
            self._start_client_server(launch)
        return node_ip

    def ensure_client_server(self, a: NodeAssignment, record: RunningNode) -> None:
        """A restarted agent finds the head alive but its Ray Client proxy maybe gone."""
        if record.is_head and not runs_client_server(cluster_processes(record.id)):
            self._start_client_server(self._launch(a, record))

    def alive(self, record: RunningNode) -> bool:
        return self.alive_many([record])[record.id]

    def alive_many(self, records: list[RunningNode]) -> dict[str, bool]:
        """Whether each node's core daemons run, from one scan of the process table."""
        found = many_clusters_processes(r.id for r in records)
        alive = {}
        for record in records:
            daemons = live_daemons(found[record.id]).get(record.node, set())
            needed = {"gcs_server", "raylet"} if record.is_head else {"raylet"}
            alive[record.id] = needed <= daemons
        return alive

    def stop(self, record: RunningNode) -> None:
        self._kill(record)
        shutil.rmtree(record.temp_dir, ignore_errors=True)

    def _kill(self, record: RunningNode) -> None:
        terminate([cp.process for cp in cluster_processes(record.id)], grace_seconds=3)

    def _launch(self, a: NodeAssignment, record: RunningNode) -> NodeLaunch:
        return NodeLaunch(
            cluster_id=a.id,  # the process marker: one node, not the whole cluster
            node=a.node,
            pool=PoolSpec(
                name=a.pool,
                replicas=1,
                num_cpus=a.num_cpus,
                num_gpus=a.num_gpus,
                memory=a.memory,
                resources=dict(a.resources),
            ),
            ports=NodePorts(a.port_base, head=a.node == HEAD),
            temp_dir=Path(record.temp_dir),
            bind_host=self.address,
            auth_token=a.ray_auth_token,
            extra_env=a.env,
            gcs_port=NodePorts(a.head_port_base, head=True).gcs,
            gcs_host=a.head_address,
        )

    def _start_client_server(self, launch: NodeLaunch) -> None:
        process = start_client_server(launch)
        port = launch.ports.ray_client
        if wait_for_port(self.address, port, _CLIENT_SERVER_WAIT_SECONDS, process.poll):
            return
        process.kill()
        tail = log_tail(launch.temp_dir / CLIENT_SERVER_LOG)
        raise BackendError(
            f"the Ray Client server of node {launch.node!r} did not listen on port {port}: "
            + (tail.splitlines()[-1] if tail else "no output")
        )
