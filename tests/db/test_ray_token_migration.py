"""Alembic 0009: clusters' Ray auth tokens, stored in clear before, are encrypted at rest."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from raydeck.core.settings import Settings
from raydeck.db.session import _MIGRATIONS, Database, SecretCipher
from raydeck.server.secret_box import SecretBox
from raydeck.server.services.clusters import cluster_credentials, ray_token

CLEAR_TOKEN = "0123456789abcdef" * 4


def _run(db: Database, action: str, revision: str, cipher: SecretCipher | None) -> None:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        config.attributes["secret_cipher"] = cipher
        getattr(command, action)(config, revision)


def _old_cluster(db: Database) -> None:
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO clusters (id, project, name, state, backend, ray_version, spec, "
                "labels, ray_auth_token, generation, created_at, updated_at) VALUES ('cl-1', "
                "'default', 'old', 'RUNNING', 'local', '2.60.0', '{}', '{}', :token, 1, "
                "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            ),
            {"token": CLEAR_TOKEN},
        )


def test_upgrade_encrypts_existing_tokens_and_they_stay_usable(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    db = Database(settings.db_url)
    _run(db, "upgrade", "0008", None)
    _old_cluster(db)
    box = SecretBox.from_key_file(settings.secret_key_path)
    db.migrate(box)  # what `raydeck server` does at start

    columns = {c["name"] for c in inspect(db.engine).get_columns("clusters")}
    assert "ray_auth_token" not in columns
    with db.engine.connect() as connection:
        stored = connection.execute(text("SELECT ray_auth_token_encrypted FROM clusters")).scalar()
    assert stored and CLEAR_TOKEN not in stored and box.decrypt(stored) == CLEAR_TOKEN
    with db.session() as session:  # the credentials endpoint's service, and every reconciler's
        assert cluster_credentials(session, settings, "old", "default")["ray_auth_token"] == (
            CLEAR_TOKEN
        )
    db.dispose()

    db = Database(settings.db_url)
    _run(db, "downgrade", "0008", box)  # and back: the clear token again
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT ray_auth_token FROM clusters")).scalar() == (
            CLEAR_TOKEN
        )
    db.dispose()


def test_upgrade_of_a_database_with_clusters_needs_the_key(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'raydeck.db'}")
    _run(db, "upgrade", "0008", None)
    _old_cluster(db)
    with pytest.raises(RuntimeError, match="secret key"):
        _run(db, "upgrade", "head", None)
    with db.engine.connect() as connection:  # nothing half-done: still 0008, token in clear
        assert connection.execute(text("SELECT ray_auth_token FROM clusters")).scalar() == (
            CLEAR_TOKEN
        )
    db.dispose()


def test_new_clusters_store_only_ciphertext(tmp_path: Path) -> None:
    from raydeck.core.models import ClusterCreate
    from raydeck.server.services.clusters import create_cluster, get_cluster_row
    from tests.fakes import InMemoryClusterBackend

    settings = Settings(home=tmp_path)
    db = Database(settings.db_url)
    db.migrate(SecretBox.from_key_file(settings.secret_key_path))
    with db.session() as session:
        create_cluster(
            session,
            ClusterCreate(name="fresh"),
            backend="local",
            ray_version="2.60.0",
            capacity=InMemoryClusterBackend(),
            settings=settings,
        )
    with db.session() as session:
        row = get_cluster_row(session, "fresh")
        token = ray_token(settings, row)
        assert len(token) == 64 and token not in row.ray_auth_token_ciphertext
    db.dispose()
