"""A backend that keeps clusters in memory: for API tests that must not start Ray.

The real-Ray behaviour is covered by tests that use LocalClusterBackend; this fake only
lets the HTTP/auth/validation layer be tested fast, and it passes the same ABC.
"""

from __future__ import annotations

from collections.abc import Sequence

from raydeck.backends.base import (
    BackendError,
    ClusterBackend,
    ClusterEndpoints,
    ClusterObservation,
    ClusterSpec,
    NodeObservation,
)


class InMemoryClusterBackend(ClusterBackend):
    kind = "memory"

    def __init__(self) -> None:
        self.clusters: dict[str, dict[str, list[str]]] = {}
        self.fail_next_apply: str | None = None
        self.failing_applies = 1  # how many applies in a row fail_next_apply fails
        self.applied: list[ClusterSpec] = []

    def apply(self, spec: ClusterSpec, *, prefer_remove: Sequence[str] = ()) -> ClusterEndpoints:
        if self.fail_next_apply:
            message = self.fail_next_apply
            self.failing_applies -= 1
            if self.failing_applies <= 0:
                self.fail_next_apply, self.failing_applies = None, 1
            raise BackendError(message)
        self.applied.append(spec)
        pools = self.clusters.setdefault(spec.cluster_id, {})
        for pool in spec.worker_pools:
            nodes = pools.setdefault(pool.name, [])
            while len(nodes) < pool.replicas:
                nodes.append(f"{pool.name}-{len(nodes)}")
            for name in [n for n in prefer_remove if n in nodes][: len(nodes) - pool.replicas]:
                nodes.remove(name)
            del nodes[pool.replicas :]
        return self._endpoints(spec)

    def _endpoints(self, spec: ClusterSpec) -> ClusterEndpoints:
        return ClusterEndpoints(
            gcs_address="127.0.0.1:1",
            dashboard_url="http://127.0.0.1:9",
            ray_client_address="127.0.0.1:2",
            serve_port=3,
        )

    def observe(self, spec: ClusterSpec) -> ClusterObservation:
        pools = self.clusters.get(spec.cluster_id)
        if pools is None:
            return ClusterObservation(head_alive=False, endpoints=None)
        nodes = [NodeObservation("head", "head", True)] + [
            NodeObservation(name, pool, True) for pool, names in pools.items() for name in names
        ]
        return ClusterObservation(True, self._endpoints(spec), tuple(nodes))

    def delete(self, spec: ClusterSpec) -> None:
        self.clusters.pop(spec.cluster_id, None)
