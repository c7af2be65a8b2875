"""The ``sql`` warehouse on a real PostgreSQL server (started here) and on SQLite, through a real
(local) Ray: key-range parallel reads, staging-table writes committed in one transaction,
a write failing midway, schema mismatches, read-only queries, push-down transforms."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
import ray
import sqlalchemy as sa

from raydeck.core.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from raydeck.core.models.warehouse import ConnectionKind, ResolvedConnection
from raydeck.data import open_warehouse, read_table, write_table
from raydeck.data.base import Warehouse
from tests.postgres_server import running_postgres

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]

ROWS = 200_000


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with running_postgres() as url:
        yield url


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Warehouse]:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS shop CASCADE")
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS analytics CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA shop")
        conn.exec_driver_sql("CREATE SCHEMA analytics")
        conn.exec_driver_sql(
            "CREATE TABLE shop.orders (id bigint PRIMARY KEY, qty integer NOT NULL, "
            "price double precision, note text)"
        )
        conn.exec_driver_sql(
            "INSERT INTO shop.orders SELECT g, mod(g, 13), g * 0.25, 'n' || g "
            f"FROM generate_series(1, {ROWS}) AS g"
        )
    engine.dispose()
    # The password travels as the connection's secret (trust auth ignores its value here).
    resolved = ResolvedConnection(
        name="pg", kind=ConnectionKind.SQL, url=postgres_url, secret="unused"
    )
    yield open_warehouse(resolved)


def _scalar(warehouse: Warehouse, sql: str) -> object:
    return warehouse.query(sql, 1).to_pylist()[0]["v"]


def test_postgres_round_trip(pg: Warehouse) -> None:
    ds = read_table("pg.shop.orders", warehouse=pg, parallelism=4)
    assert ds.count() == ROWS
    assert int(ds.sum("id")) == ROWS * (ROWS + 1) // 2
    total = ds.map_batches(
        lambda b: b.append_column("total", pa.compute.multiply(b["price"], b["qty"])),
        batch_format="pyarrow",
    )
    result = write_table(total, "pg.analytics.order_totals", mode="create", warehouse=pg)
    assert result.rows_written == ROWS
    expected = _scalar(pg, "SELECT sum(price * qty) AS v FROM shop.orders")
    assert _scalar(pg, "SELECT sum(total) AS v FROM analytics.order_totals") == pytest.approx(
        expected
    )
    assert _scalar(pg, "SELECT count(DISTINCT id) AS v FROM analytics.order_totals") == ROWS
    info = pg.table_info("analytics", "order_totals")
    assert [c.name for c in info.columns] == ["id", "qty", "price", "note", "total"]
    leftovers = _scalar(
        pg, "SELECT count(*) AS v FROM pg_tables WHERE tablename LIKE '\\_rd\\_stage\\_%'"
    )
    assert leftovers == 0
    write_table(total.limit(10), "pg.analytics.order_totals", mode="append", warehouse=pg)
    assert pg.table_info("analytics", "order_totals").row_count == ROWS + 10
    write_table(total.limit(3), "pg.analytics.order_totals", mode="overwrite", warehouse=pg)
    assert pg.table_info("analytics", "order_totals").row_count == 3
    with pytest.raises(AlreadyExistsError):
        write_table(total, "pg.analytics.order_totals", mode="create", warehouse=pg)


def test_postgres_failed_write_changes_nothing(pg: Warehouse) -> None:
    before = pg.query("SELECT count(*) AS n, sum(id) AS s FROM shop.orders", 1).to_pylist()

    def explode_midway(batch: pa.Table) -> pa.Table:
        if pa.compute.max(batch["id"]).as_py() > ROWS // 2:
            raise RuntimeError("boom halfway")
        return batch

    ds = read_table("pg.shop.orders", warehouse=pg, parallelism=4).map_batches(
        explode_midway, batch_format="pyarrow", batch_size=5000
    )
    with pytest.raises(Exception, match="boom halfway"):
        write_table(ds, "pg.shop.orders", mode="overwrite", warehouse=pg)
    assert pg.query("SELECT count(*) AS n, sum(id) AS s FROM shop.orders", 1).to_pylist() == before
    leftovers = _scalar(
        pg, "SELECT count(*) AS v FROM pg_tables WHERE tablename LIKE '\\_rd\\_stage\\_%'"
    )
    assert leftovers == 0
    # a value the table's column cannot hold fails at commit, inside the transaction
    bad = ray.data.from_items([{"id": 1, "qty": None, "price": 1.0, "note": "x"}])
    with pytest.raises(InvalidArgumentError, match="table unchanged"):
        write_table(bad, "pg.shop.orders", mode="append", warehouse=pg)
    wrong = ray.data.from_items([{"id": 1, "colour": "red"}])
    with pytest.raises(InvalidArgumentError, match="missing column"):
        write_table(wrong, "pg.shop.orders", mode="append", warehouse=pg)
    assert pg.query("SELECT count(*) AS n, sum(id) AS s FROM shop.orders", 1).to_pylist() == before


def test_postgres_browse_and_read_only_queries(pg: Warehouse) -> None:
    assert {"shop", "analytics", "public"} <= {d.name for d in pg.list_datasets()}
    assert pg.default_dataset == "public"
    [orders] = pg.list_tables("shop")
    assert (orders.name, orders.row_count) == ("orders", ROWS)
    with pytest.raises(NotFoundError, match=r"pg\.shop\.nope"):
        pg.table_info("shop", "nope")
    # a data-modifying CTE passes the first-word check; the read-only transaction stops it
    with pytest.raises(InvalidArgumentError, match="read-only"):
        pg.query("WITH d AS (DELETE FROM shop.orders RETURNING id) SELECT count(*) FROM d", 5)
    with pytest.raises(InvalidArgumentError):
        pg.query("UPDATE shop.orders SET qty = 0", 5)
    with pytest.raises(InvalidArgumentError, match="failed in the database"):
        pg.query("SELECT nope FROM shop.orders", 5)
    assert pg.table_info("shop", "orders").row_count == ROWS
    # user SQL goes to the driver verbatim: '%' and '::' casts need no escaping by the user
    assert _scalar(pg, "SELECT count(*) AS v FROM shop.orders WHERE note LIKE 'n1%'") == 111111
    assert pg.read_query("SELECT '7'::int AS v, 5 % 3 AS m").take_all() == [{"v": 7, "m": 2}]
    result = pg.create_table_as(
        "SELECT qty, count(*) AS n FROM shop.orders GROUP BY qty", "analytics", "by_qty", "create"
    )
    assert result.rows_written == 13
    rows = pg.read_query("SELECT sum(n) AS n FROM analytics.by_qty").take_all()
    assert rows == [{"n": ROWS}]


def test_sqlite_round_trip(tmp_path: Path) -> None:
    wh = open_warehouse(
        ResolvedConnection(name="lite", kind=ConnectionKind.SQL, url=f"sqlite:///{tmp_path}/x.db")
    )
    ds = ray.data.from_items([{"id": i, "name": f"n{i}"} for i in range(1000)])
    write_table(ds, "lite.main.people", mode="create", warehouse=wh)
    back = read_table("lite.people", warehouse=wh)
    assert sorted(r["id"] for r in back.take_all()) == list(range(1000))
    with pytest.raises(Exception, match="nope"):
        write_table(
            ds.map_batches(lambda b: (_ for _ in ()).throw(ValueError("nope"))),
            "lite.main.people",
            mode="overwrite",
            warehouse=wh,
        )
    assert wh.table_info("main", "people").row_count == 1000


TYPED = pa.table(
    {
        "i": [1, 2, None],
        "f": [0.5, None, 2.5],
        "s": ["a", None, "c"],
        "b": [True, False, None],
        "ts": [dt.datetime(2024, 1, 2, 3, 4, 5, 6), None, dt.datetime(2025, 6, 7)],
        "d": [dt.date(2024, 1, 2), None, dt.date(2020, 2, 29)],
        "dec": pa.array([Decimal("1.25"), None, Decimal("3.50")], pa.decimal128(10, 2)),
        "bin": [b"x", None, b"\x00\x01"],
    }
)


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_typed_columns_round_trip(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Writes go through the driver (COPY on psycopg, executemany elsewhere) with each
    column's SQL bind conversion; every type comes back as written, nulls included."""
    url = (
        f"sqlite:///{tmp_path}/t.db"
        if database == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    dataset = "main" if database == "sqlite" else "public"
    wh = open_warehouse(ResolvedConnection(name="wh", kind=ConnectionKind.SQL, url=url))
    result = write_table(ray.data.from_arrow(TYPED), f"wh.{dataset}.typed", "create", warehouse=wh)
    assert result.rows_written == 3
    back = sorted(
        read_table(f"wh.{dataset}.typed", warehouse=wh).take_all(),
        key=lambda row: (row["i"] is None, row["i"] or 0),
    )
    expected = TYPED.to_pylist()
    if database == "sqlite":  # SQLite has no exact decimal type: REAL comes back
        for row in expected:
            row["dec"] = None if row["dec"] is None else float(row["dec"])
    assert back == expected
