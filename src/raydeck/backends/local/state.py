"""What the local backend remembers about each cluster, as one JSON file per cluster.

The processes themselves are the truth about what is alive; the file only records what cannot
be read back from them cheaply: each node's port slot, temp dir and the IP Ray registered it
under. Writes are atomic (write + rename) so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from raydeck.backends.local.ports import NodePorts

__all__ = ["ClusterState", "NodeRecord", "StateStore"]

_STATE_FILE = "state.json"
_VERSION = 1


@dataclass
class NodeRecord:
    name: str  # "head" or "<pool>-<n>"
    pool: str  # "head" for the head
    port_base: int
    temp_dir: str
    node_ip: str | None = None  # as registered in Ray (Ray rewrites loopback to the host IP)

    @property
    def ports(self) -> NodePorts:
        return NodePorts(self.port_base, head=self.pool == "head")


@dataclass
class ClusterState:
    cluster_id: str
    base_dir: str  # parent of the nodes' Ray temp dirs
    nodes: dict[str, NodeRecord] = field(default_factory=dict)

    @property
    def head(self) -> NodeRecord | None:
        return self.nodes.get("head")

    def workers(self) -> list[NodeRecord]:
        return [n for n in self.nodes.values() if n.pool != "head"]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": _VERSION,
            "cluster_id": self.cluster_id,
            "base_dir": self.base_dir,
            "nodes": [asdict(n) for n in self.nodes.values()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterState:
        nodes = [NodeRecord(**n) for n in data.get("nodes", [])]
        return cls(
            cluster_id=str(data["cluster_id"]),
            base_dir=str(data["base_dir"]),
            nodes={n.name: n for n in nodes},
        )


class StateStore:
    """``<state_dir>/<cluster_id>/state.json`` for every cluster of one backend."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def cluster_dir(self, cluster_id: str) -> Path:
        return self.state_dir / cluster_id

    def load(self, cluster_id: str) -> ClusterState | None:
        path = self.cluster_dir(cluster_id) / _STATE_FILE
        try:
            return ClusterState.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            # Unreadable state must not wedge the cluster: callers fall back to the markers
            # on the processes and start over.
            return None

    def save(self, state: ClusterState) -> None:
        directory = self.cluster_dir(state.cluster_id)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{_STATE_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(state.to_json(), indent=1))
        os.replace(tmp, directory / _STATE_FILE)

    def remove(self, cluster_id: str) -> None:
        shutil.rmtree(self.cluster_dir(cluster_id), ignore_errors=True)

    def used_port_bases(self, *, exclude: str) -> set[int]:
        """Slots held by every other cluster of this state dir."""
        used: set[int] = set()
        if not self.state_dir.is_dir():
            return used
        for entry in self.state_dir.iterdir():
            if entry.name == exclude or not entry.is_dir():
                continue
            if (state := self.load(entry.name)) is not None:
                used.update(n.port_base for n in state.nodes.values())
        return used
