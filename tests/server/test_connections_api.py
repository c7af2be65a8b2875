"""/api/v1/connections in-process: registry, secrets never returned, browsing, bad input."""

from __future__ import annotations

import stat
from pathlib import Path

import duckdb
import pytest

from raydeck.core.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError
from raydeck.core.models.warehouse import ConnectionCreate, ConnectionUpdate
from raydeck.db.models import ConnectionRow
from tests.bigquery_fake import running_fake_bigquery
from tests.conftest import Api


def _create(api: Api, body: dict[str, object], role: str = "admin") -> tuple[int, dict]:
    response = api.http.post("/api/v1/connections", json=body, headers=api.headers(role))
    return response.status_code, response.json()


def test_duckdb_connection_defaults_under_home_and_browses(static_api: Api) -> None:
    status, created = _create(static_api, {"name": "wh", "kind": "duckdb"})
    assert status == 201, created
    path = Path(created["path"])
    assert path == static_api.settings.home / "warehouse" / "wh.duckdb"
    assert created["has_secret"] is False
    path.parent.mkdir(parents=True)  # the file is created on first use; here we fill it
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t AS SELECT range AS id, 'x' || range AS s FROM range(25)")
    con.close()
    sdk = static_api.sdk()
    assert [d.name for d in sdk.connections.datasets("wh")] == ["main"]
    [table] = sdk.connections.tables("wh")
    assert (table.name, table.row_count, [c.name for c in table.columns]) == ("t", 25, ["id", "s"])
    assert sdk.connections.table("wh.main.t").row_count == 25
    preview = sdk.connections.preview("wh.t", limit=3)
    assert preview.rows == [[0, "x0"], [1, "x1"], [2, "x2"]] and preview.truncated
    result = sdk.connections.query("wh", "SELECT count(*) AS n FROM t")
    assert result.rows == [[25]] and [c.name for c in result.columns] == ["n"]
    viewer = static_api.sdk("viewer")
    assert viewer.connections.tables("wh")[0].row_count == 25  # viewers browse
    with pytest.raises(PermissionDeniedError):
        viewer.connections.query("wh", "SELECT 1")
    with pytest.raises(PermissionDeniedError):
        viewer.connections.resolve("wh")


def test_sql_password_is_encrypted_and_never_returned(static_api: Api) -> None:
    url = "postgresql+psycopg://alice:s3cr3t-pw@db.example:5432/analytics"
    status, created = _create(static_api, {"name": "pg", "kind": "sql", "url": url})
    assert status == 201, created
    assert created["url"] == "postgresql+psycopg://alice@db.example:5432/analytics"
    assert created["has_secret"] is True
    listed = static_api.http.get("/api/v1/connections", headers=static_api.headers())
    assert "s3cr3t-pw" not in listed.text and "s3cr3t-pw" not in str(created)
    with static_api.app.state.raydeck.db.session() as session:
        row = session.query(ConnectionRow).one()
        assert row.secret_ciphertext and "s3cr3t-pw" not in row.secret_ciphertext
        assert "s3cr3t-pw" not in str(row.config)
    key_file = static_api.settings.home / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    resolved = static_api.sdk().connections.resolve("pg")
    assert resolved.secret is not None and resolved.secret.get_secret_value() == "s3cr3t-pw"
    assert "s3cr3t-pw" not in repr(resolved)
    # rotate through the SDK: the new secret is stored encrypted, still never returned
    updated = static_api.sdk().connections.update("pg", ConnectionUpdate(secret="n3w"))
    assert updated.has_secret
    assert static_api.sdk().connections.resolve("pg").secret.get_secret_value() == "n3w"  # type: ignore[union-attr]


def test_secret_by_reference(static_api: Api) -> None:
    sdk = static_api.sdk()
    body = {"name": "pg2", "kind": "sql", "url": "sqlite://", "secret_env": "PG_PASSWORD"}
    created = sdk.connections.create(ConnectionCreate.model_validate(body))
    assert (created.secret_env, created.has_secret) == ("PG_PASSWORD", False)
    resolved = sdk.connections.resolve("pg2")
    assert resolved.secret_value({"PG_PASSWORD": "from-env"}) == "from-env"
    with pytest.raises(InvalidArgumentError, match="PG_PASSWORD"):
        resolved.secret_value({})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Bad_Name", "kind": "duckdb"}, "name"),
        ({"name": "x", "kind": "oracle"}, "kind"),
        ({"name": "x", "kind": "sql"}, "url"),
        ({"name": "x", "kind": "sql", "url": "not a url"}, "url"),
        ({"name": "x", "kind": "sql", "url": "nosuchdb://h/d"}, "url"),
        ({"name": "x", "kind": "files"}, "root"),
        ({"name": "x", "kind": "duckdb", "url": "sqlite://"}, "url"),
        ({"name": "x", "kind": "duckdb", "secret": "pw"}, "secret"),
        ({"name": "x", "kind": "bigquery"}, "project"),
        ({"name": "x", "kind": "bigquery", "project": "p-1234", "dataset": "a.b"}, "dataset"),
        (
            {"name": "x", "kind": "sql", "url": "sqlite://", "secret": "a", "secret_env": "B"},
            "secret_env",
        ),
        ({"name": "x", "kind": "sql", "url": "postgresql://u:p@h/d", "secret": "q"}, "secret"),
        ({"name": "x", "kind": "duckdb", "extra": 1}, "extra"),
    ],
)
def test_bad_input_names_the_field_and_stores_nothing(
    static_api: Api, body: dict[str, object], field: str
) -> None:
    status, payload = _create(static_api, body)
    assert status == 400, payload
    assert payload["error"]["field"] == field, payload
    listed = static_api.http.get("/api/v1/connections", headers=static_api.headers()).json()
    assert listed["items"] == []


def test_duplicates_unknowns_auth_and_delete(static_api: Api, tmp_path: Path) -> None:
    assert _create(static_api, {"name": "wh", "kind": "duckdb"})[0] == 201
    status, payload = _create(static_api, {"name": "wh", "kind": "duckdb"})
    assert (status, payload["error"]["field"]) == (409, "name")
    assert static_api.http.get("/api/v1/connections").status_code == 401
    assert _create(static_api, {"name": "v", "kind": "duckdb"}, role="viewer")[0] == 403
    sdk = static_api.sdk()
    with pytest.raises(NotFoundError, match="nope"):
        sdk.connections.get("nope")
    with pytest.raises(NotFoundError, match=r"wh\.main\.missing"):
        sdk.connections.table("wh.main.missing")
    with pytest.raises(NotFoundError, match="dataset"):
        sdk.connections.tables("wh", "nodataset")
    with pytest.raises(InvalidArgumentError, match=r"connection\.dataset\.table"):
        sdk.connections.preview("justaname")
    bad = static_api.http.get(
        "/api/v1/connections/wh/tables/x", params={"dataset": "a;b"}, headers=static_api.headers()
    )
    assert (bad.status_code, bad.json()["error"]["field"]) == (400, "dataset")
    for sql, message in [
        ("DROP TABLE t", "read-only"),
        ("SELECT 1; SELECT 2", "one statement"),
        ("SELECT nope FROM nowhere", "failed"),
    ]:
        response = static_api.http.post(
            "/api/v1/connections/wh:query", json={"sql": sql}, headers=static_api.headers()
        )
        assert response.status_code == 400 and message in response.json()["error"]["message"]
        assert response.json()["error"]["field"] == "sql"
    deleted = sdk.connections.delete("wh")
    assert deleted.name == "wh"
    assert sdk.connections.list().items == []


def test_files_connection_lists_tables(static_api: Api) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    lake = static_api.settings.warehouse_root / "lake"  # the project's own warehouse area
    (lake / "raw" / "events").mkdir(parents=True)
    pq.write_table(pa.table({"a": [1, 2, 3]}), lake / "raw" / "events" / "p.parquet")
    pq.write_table(pa.table({"b": ["x"]}), lake / "raw" / "single.parquet")
    sdk = static_api.sdk()
    sdk.connections.create(  # a relative root is inside the project's warehouse directory
        ConnectionCreate.model_validate({"name": "lake", "kind": "files", "root": "lake"})
    )
    assert sdk.connections.get("lake").root == str(lake)
    tables = {t.name: t.row_count for t in sdk.connections.tables("lake", "raw")}
    assert tables == {"events": 3, "single": 1}
    assert sdk.connections.query("lake", "SELECT sum(a) AS s FROM raw.events").rows == [[6]]
    assert [k.value for k in (sdk.connections.list(kind="files").items[0].kind,)] == ["files"]


def test_bigquery_connection_browses_through_the_rest_api(static_api: Api) -> None:
    """Against a wire-level FAKE of BigQuery's REST API (tests/bigquery_fake.py), not BigQuery."""
    static_api.settings.allowed_private_networks = "127.0.0.1"  # the fake listens on loopback
    with running_fake_bigquery("my-project") as fake:
        fake.create_dataset("sales")
        fake.sql(
            "CREATE TABLE `my-project.sales.orders` AS SELECT range AS id, "
            "'r' || (range % 3) AS region FROM range(25)"
        )
        body = {
            "name": "bq",
            "kind": "bigquery",
            "project": "my-project",
            "dataset": "sales",
            "api_endpoint": fake.url,
        }
        status, created = _create(static_api, body)
        assert status == 201 and created["project"] == "my-project"
        headers = static_api.headers()
        datasets = static_api.http.get("/api/v1/connections/bq/datasets", headers=headers)
        assert datasets.status_code == 200, datasets.text
        assert [d["name"] for d in datasets.json()] == ["sales"]
        tables = static_api.http.get("/api/v1/connections/bq/tables", headers=headers).json()
        assert [(t["name"], t["row_count"]) for t in tables] == [("orders", 25)]
        assert [(c["name"], c["type"]) for c in tables[0]["columns"]] == [
            ("id", "INTEGER"),
            ("region", "STRING"),
        ]
        query = static_api.http.post(
            "/api/v1/connections/bq:query",
            json={
                "sql": "SELECT region, count(*) AS n FROM `sales.orders` GROUP BY region "
                "ORDER BY region",
                "limit": 2,
            },
            headers=headers,
        )
        assert query.status_code == 200, query.text
        assert query.json()["rows"] == [["r0", 9], ["r1", 8]] and query.json()["truncated"]
        preview = static_api.http.get(
            "/api/v1/connections/bq/tables/orders:preview?limit=3", headers=headers
        )
        assert preview.status_code == 200, preview.text
        assert preview.json()["rows"] == [[0, "r0"], [1, "r1"], [2, "r2"]]
        missing = static_api.http.get(
            "/api/v1/connections/bq/tables/nope?dataset=sales", headers=headers
        )
        assert missing.status_code == 404
        assert missing.json()["error"]["field"] == "table"
        assert any("/tables/orders/data" in path for _, path in fake.requests)
