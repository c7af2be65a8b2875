"""The control plane on a real PostgreSQL server (Debian's postgresql, started here).

Skipped only when no PostgreSQL binaries exist on the machine.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from raydeck.core.errors import AlreadyExistsError
from raydeck.core.models import ClusterCreate
from raydeck.db.models import Base
from raydeck.db.session import upgrade_schema
from tests.conftest import Api
from tests.postgres_server import running_postgres

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with running_postgres() as url:
        yield url


@pytest.fixture
def pg_api(tmp_path: Path, postgres_url: str) -> Iterator[Api]:
    engine = create_engine(postgres_url)
    with engine.begin() as connection:  # each test starts from an empty schema
        Base.metadata.drop_all(connection)  # every table the ORM knows, in FK order
        connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    engine.dispose()
    server = Api(tmp_path / "home", run_reconcilers=True, database_url=postgres_url)
    yield server
    server.close()


def test_migrations_create_the_schema(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    upgrade_schema(engine)
    upgrade_schema(engine)  # idempotent
    assert {"clusters", "jobs", "tokens", "models", "model_versions", "alembic_version"} <= set(
        inspect(engine).get_table_names()
    )
    engine.dispose()


def test_cluster_lifecycle_on_postgres(pg_api: Api) -> None:
    sdk = pg_api.sdk()
    spec = {"name": "pg", "worker_pools": [{"name": "w", "replica_count": 2}]}
    sdk.clusters.create(ClusterCreate.model_validate(spec))
    with pytest.raises(AlreadyExistsError):
        sdk.clusters.create(ClusterCreate.model_validate(spec))
    running = sdk.clusters.wait("pg", timeout=20)
    assert running.worker_pools[0].current_replica_count == 2
    assert running.created_at.tzinfo is not None
    sdk.clusters.scale("pg", "w", 1)
    assert sdk.clusters.wait("pg", timeout=20).worker_pools[0].current_replica_count == 1
    sdk.clusters.delete("pg")
    sdk.clusters.wait_deleted("pg", timeout=20)


def test_auth_and_paging_on_postgres(pg_api: Api) -> None:
    assert pg_api.http.get("/api/v1/clusters").status_code == 401
    viewer = pg_api.http.post(
        "/api/v1/clusters", json={"name": "x"}, headers=pg_api.headers("viewer")
    )
    assert viewer.status_code == 403
    sdk = pg_api.sdk()
    for i in range(3):
        sdk.clusters.create(ClusterCreate(name=f"p{i}"))
    first = sdk.clusters.list(page_size=2)
    second = sdk.clusters.list(page_size=2, page_token=first.next_page_token)
    assert [c.name for c in first.items + second.items] == ["p0", "p1", "p2"]
    assert second.next_page_token is None
    deadline = time.monotonic() + 20
    while any(c.state != "RUNNING" for c in sdk.clusters.list().items):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_model_registry_on_postgres(pg_api: Api, tmp_path: Path) -> None:
    import joblib
    from sklearn.linear_model import LinearRegression

    artifact = tmp_path / "artifact"
    artifact.mkdir()
    joblib.dump(LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]), artifact / "model.joblib")
    sdk = pg_api.sdk()
    sdk.models.upload("a", artifact, "sklearn", labels={"team": "x"}, aliases=["prod"])
    sdk.models.upload("a", artifact, "sklearn", parent_model="a")
    sdk.models.upload("b", artifact, "sklearn", labels={"team": "y"})
    assert [m.display_name for m in sdk.models.list(label="team=y").items] == ["b"]
    assert [m.display_name for m in sdk.models.list(framework="sklearn").items] == ["a", "b"]
    assert sdk.models.get("a").default_version_id == "2"
    assert sdk.models.add_alias("a@2", "prod").aliases == ["default", "prod"]
    sdk.models.delete("a")
    assert [m.display_name for m in sdk.models.list().items] == ["b"]
