"""Process-wide server state handed to routers through a dependency."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version

from fastapi import Request

from raydeck.backends.base import ClusterBackend
from raydeck.core.errors import InvalidArgumentError
from raydeck.core.models.operations import PriceCatalog
from raydeck.core.settings import Settings
from raydeck.db.models import utcnow
from raydeck.db.session import Database
from raydeck.server.metrics import ServerMetrics
from raydeck.server.services.pricing import DEFAULT_CATALOG

__all__ = ["RAY_VERSION", "ServerState", "get_state"]

RAY_VERSION = version("ray")


@dataclass
class ServerState:
    settings: Settings
    db: Database
    backends: dict[str, ClusterBackend] = field(default_factory=dict)
    wake_callbacks: list[Callable[[], None]] = field(default_factory=list)
    # Called after the cluster reconciler records what a backend observed (cost metering).
    observation_callbacks: list[Callable[[], None]] = field(default_factory=list)
    # Injected in tests so cost accrual can be checked against exact node-seconds.
    clock: Callable[[], datetime] = utcnow
    metrics: ServerMetrics = field(init=False)
    price_catalog: PriceCatalog = field(default_factory=lambda: DEFAULT_CATALOG)

    def __post_init__(self) -> None:
        self.metrics = ServerMetrics(self.db)

    def wake_reconcilers(self) -> None:
        """Thread-safe nudge: desired state changed, reconcile now instead of at the next tick."""
        for callback in self.wake_callbacks:
            callback()

    def cluster_observed(self) -> None:
        for callback in self.observation_callbacks:
            callback()

    def backend(self, kind: str) -> ClusterBackend:
        try:
            return self.backends[kind]
        except KeyError:
            known = ", ".join(sorted(self.backends)) or "none"
            raise InvalidArgumentError(
                f"unknown backend {kind!r} (configured: {known})", field="backend"
            ) from None


def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.raydeck
    return state
