"""Shared fixtures. Real-Ray fixtures live in tests/ray_fixtures.py (session-scoped)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from raydeck.client import RaydeckClient
from raydeck.core.models import Role, TokenCreate
from raydeck.core.settings import Settings
from raydeck.db.models import utcnow
from raydeck.server.app import create_app
from raydeck.server.services.tokens import create_token
from tests.fakes import InMemoryClusterBackend

pytest_plugins = ["tests.ray_fixtures"]


class Api:
    """An in-process server with one token per role."""

    def __init__(
        self,
        home: Path,
        *,
        run_reconcilers: bool,
        database_url: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        backend: InMemoryClusterBackend | None = None,
        tokens: dict[str, str] | None = None,
        **settings: Any,
    ) -> None:
        self.settings = Settings(
            home=home,
            reconcile_interval=0.05,
            default_backend="memory",
            database_url=database_url,
            **settings,
        )
        self.backend = backend or InMemoryClusterBackend()
        self.app = create_app(
            self.settings,
            backends={"memory": self.backend},
            run_reconcilers=run_reconcilers,
            clock=clock,
        )
        self.http = TestClient(self.app, raise_server_exceptions=False)
        self.http.__enter__()  # runs the lifespan (reconcilers)
        state = self.app.state.raydeck
        self.tokens: dict[str, str] = dict(tokens or {})
        if tokens:  # a restart on the same home: the tokens already exist
            return
        with state.db.session() as session:
            for role in Role:
                request = TokenCreate(name=f"{role.value}-t", role=role.value)
                created = create_token(session, request)
                self.tokens[role.value] = created.secret

    def headers(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def sdk(self, role: str = "admin") -> RaydeckClient:
        return RaydeckClient("http://testserver", self.tokens[role], transport=self.http._transport)

    def close(self) -> None:
        self.http.__exit__(None, None, None)
        self.app.state.raydeck.db.dispose()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """API with reconcilers running against the in-memory backend."""
    server = Api(tmp_path / "home", run_reconcilers=True)
    yield server
    server.close()


@pytest.fixture
def static_api(tmp_path: Path) -> Iterator[Api]:
    """API with no reconcilers: rows stay in the state the request left them."""
    server = Api(tmp_path / "home", run_reconcilers=False)
    yield server
    server.close()
