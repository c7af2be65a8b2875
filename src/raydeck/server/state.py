"""Process-wide server state handed to routers through a dependency."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version

from fastapi import Request

from raydeck.backends.base import ClusterBackend
from raydeck.core.errors import InvalidArgumentError
from raydeck.core.settings import Settings
from raydeck.db.session import Database

__all__ = ["RAY_VERSION", "ServerState", "get_state"]

RAY_VERSION = version("ray")


@dataclass
class ServerState:
    settings: Settings
    db: Database
    backends: dict[str, ClusterBackend] = field(default_factory=dict)
    wake_callbacks: list[Callable[[], None]] = field(default_factory=list)

    def wake_reconcilers(self) -> None:
        """Thread-safe nudge: desired state changed, reconcile now instead of at the next tick."""
        for callback in self.wake_callbacks:
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
