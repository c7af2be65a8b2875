"""Alembic: 0002 (model registry) upgrades a database created at 0001 and keeps its rows."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from raydeck.db.models import Base
from raydeck.db.session import _MIGRATIONS, make_engine


def _run(engine: object, action: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as connection:  # type: ignore[attr-defined]
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


def test_registry_migration_upgrades_an_existing_database(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'raydeck.db'}")
    _run(engine, "upgrade", "0001")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO tokens (id, name, role, prefix, secret_hash, created_at) "
                "VALUES ('tok-1', 'old', 'admin', 'rdk_x', 'h', '2026-01-01 00:00:00')"
            )
        )
    assert "models" not in inspect(engine).get_table_names()
    _run(engine, "upgrade", "head")
    tables = set(inspect(engine).get_table_names())
    assert {"models", "model_versions", "model_version_aliases", "tokens"} <= tables
    with engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM tokens")).scalars().all() == ["old"]
        # The migrated schema is exactly what the ORM models describe.
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    _run(engine, "downgrade", "0001")
    assert "models" not in inspect(engine).get_table_names()
    engine.dispose()
