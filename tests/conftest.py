"""Shared fixtures. Real-Ray fixtures live in tests/ray_fixtures.py (session-scoped)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
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
from raydeck.db.session import Database
from raydeck.server.app import create_app
from raydeck.server.services.tokens import create_token
from tests.fakes import InMemoryClusterBackend

pytest_plugins = ["tests.ray_fixtures"]


_DB_FILE = "raydeck.db"  # where Settings puts the SQLite DB under RAYDECK_HOME
_template: tuple[Path, dict[str, str]] | None = None


def _role_tokens(db: Database) -> dict[str, str]:
    with db.session() as session:
        return {
            role.value: create_token(
                session, TokenCreate(name=f"{role.value}-t", role=role.value)
            ).secret
            for role in Role
        }


def _fresh_db(home: Path) -> dict[str, str]:
    """Put a migrated SQLite DB holding one token per role into ``home``; return the tokens.

    Migrating is most of an in-process server's start-up, so it happens once per test process,
    into a template that every server then starts from a copy of (the server still runs its
    migrations at start; they find the schema at head). Tokens are the same in every copy.
    """
    global _template
    if _template is None:
        root = Path(tempfile.mkdtemp(prefix="raydeck-db-template-"))
        atexit.register(shutil.rmtree, root, True)
        db = Database(f"sqlite:///{root / _DB_FILE}")
        db.migrate()
        tokens = _role_tokens(db)
        db.dispose()  # the last connection closing folds the WAL into the file
        assert not (root / f"{_DB_FILE}-wal").exists()
        _template = (root / _DB_FILE, tokens)
    template, tokens = _template
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, home / _DB_FILE)
    return dict(tokens)


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
        settings.setdefault("ray_os_user", "off")  # no Ray here: no OS users, no data area
        self.settings = Settings(
            home=home,
            reconcile_interval=0.05,
            default_backend="memory",
            database_url=database_url,
            **settings,
        )
        db_file = self.settings.home / _DB_FILE
        if self.settings.db_url == f"sqlite:///{db_file}" and not tokens and not db_file.exists():
            tokens = _fresh_db(self.settings.home)
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
        # Given (a template's copy, or a restart on the same home): the tokens exist already.
        self.tokens: dict[str, str] = dict(tokens) if tokens else _role_tokens(state.db)

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
