"""Cluster backends: where Ray processes actually run (local, hosts, kuberay)."""

from raydeck.backends.base import (
    BackendError,
    ClusterBackend,
    ClusterEndpoints,
    ClusterObservation,
    ClusterSpec,
    NodeObservation,
    PoolSpec,
)

__all__ = [
    "BackendError",
    "ClusterBackend",
    "ClusterEndpoints",
    "ClusterObservation",
    "ClusterSpec",
    "NodeObservation",
    "PoolSpec",
]
