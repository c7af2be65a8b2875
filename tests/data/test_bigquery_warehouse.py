"""The ``bigquery`` kind through a real (local) Ray against a wire-level FAKE of BigQuery's REST
API v2 (tests/bigquery_fake.py: a real HTTP server speaking BigQuery's JSON shapes, backed by
DuckDB) — not BigQuery itself. The unmodified google-cloud-bigquery client does the talking."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import ray

from raydeck.core.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from raydeck.core.models.warehouse import ConnectionKind, ResolvedConnection
from raydeck.data import open_warehouse, read_query, read_table, sql_transform, write_table
from raydeck.data.base import Warehouse
from tests.bigquery_fake import FakeBigQuery, running_fake_bigquery

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]

PROJECT = "demo-project"
ROWS = 120_000


@pytest.fixture
def fake() -> Iterator[FakeBigQuery]:
    with running_fake_bigquery(PROJECT) as server:
        server.create_dataset("sales")
        server.sql(
            f"CREATE TABLE `{PROJECT}.sales.orders` AS SELECT range AS id, range % 7 AS region, "
            f"CAST(range AS DOUBLE) * 0.5 AS total, 'o' || range AS note FROM range({ROWS})"
        )
        yield server


@pytest.fixture
def bq(fake: FakeBigQuery) -> Warehouse:
    return open_warehouse(
        ResolvedConnection(
            name="bq",
            kind=ConnectionKind.BIGQUERY,
            project=PROJECT,
            dataset="sales",
            api_endpoint=fake.url,
        )
    )


def _ranges(fake: FakeBigQuery, table: str) -> set[str]:
    """startIndex values of tabledata.list calls: one per parallel read range."""
    starts = set()
    for method, path in fake.requests:
        if method == "GET" and f"/tables/{table}/data" in path and "startIndex=" in path:
            starts.add(path.split("startIndex=")[1].split("&")[0])
    return starts


def test_browsing_datasets_tables_preview_and_queries(bq: Warehouse, fake: FakeBigQuery) -> None:
    assert [d.name for d in bq.list_datasets()] == ["sales"]
    (orders,) = bq.list_tables("sales")
    assert (orders.name, orders.row_count) == ("orders", ROWS)
    assert [(c.name, c.type) for c in orders.columns] == [
        ("id", "INTEGER"),
        ("region", "INTEGER"),
        ("total", "FLOAT"),
        ("note", "STRING"),
    ]
    assert bq.preview("sales", "orders", 2).to_pylist() == [
        {"id": 0, "region": 0, "total": 0.0, "note": "o0"},
        {"id": 1, "region": 1, "total": 0.5, "note": "o1"},
    ]
    result = bq.query("SELECT count(*) AS n FROM `sales.orders` WHERE region = 3", 10)
    assert result.to_pylist() == [{"n": ROWS // 7 + (1 if ROWS % 7 > 3 else 0)}]
    with pytest.raises(NotFoundError) as missing:
        bq.table_info("sales", "nope")
    assert missing.value.field == "table"
    with pytest.raises(NotFoundError):
        bq.list_tables("nope")
    with pytest.raises(InvalidArgumentError) as bad:
        bq.query("SELECT nope FROM `sales.orders`", 10)
    assert bad.value.field == "sql" and "nope" in bad.value.message
    with pytest.raises(InvalidArgumentError):
        bq.query("DROP TABLE `sales.orders`", 10)
    assert fake.tables("sales") == ["orders"]


def test_parallel_read_of_a_table_and_of_a_query(bq: Warehouse, fake: FakeBigQuery) -> None:
    ds = read_table("bq.sales.orders", warehouse=bq, parallelism=3)
    table = pa.concat_tables(ray.get(ds.to_arrow_refs()))
    assert table.num_rows == ROWS
    assert pc.sum(table["id"]).as_py() == ROWS * (ROWS - 1) // 2
    assert pc.count_distinct(table["id"]).as_py() == ROWS
    assert table.schema.field("total").type == pa.float64()
    assert _ranges(fake, "orders") == {"0", "40000", "80000"}  # three ranges, in parallel tasks

    by_region = read_query(
        bq, "SELECT region, count(*) AS n, sum(id) AS s FROM `sales.orders` GROUP BY region"
    )
    rows = sorted(by_region.take_all(), key=lambda r: r["region"])
    assert [r["region"] for r in rows] == list(range(7))
    assert sum(r["n"] for r in rows) == ROWS
    assert sum(r["s"] for r in rows) == ROWS * (ROWS - 1) // 2
    with pytest.raises(NotFoundError):
        read_query(bq, "SELECT * FROM `sales.missing`")


def _scored(batch: pa.Table) -> pa.Table:
    return pa.table(
        {"id": batch["id"], "score": pc.multiply(batch["total"], 2.0), "note": batch["note"]}
    )


def test_writes_are_staged_and_committed_in_one_statement(
    bq: Warehouse, fake: FakeBigQuery
) -> None:
    scored = read_table("bq.sales.orders", warehouse=bq).map_batches(
        _scored, batch_format="pyarrow"
    )
    result = write_table(scored, "bq.sales.scored", mode="create", warehouse=bq)
    assert result.rows_written == ROWS
    assert fake.sql("SELECT count(*), sum(id), sum(score) FROM `sales.scored`") == [
        (ROWS, ROWS * (ROWS - 1) // 2, float(ROWS * (ROWS - 1) // 2))
    ]
    assert fake.tables("sales") == ["orders", "scored"]  # staging tables are gone

    with pytest.raises(AlreadyExistsError):
        write_table(scored.limit(5), "bq.sales.scored", mode="create", warehouse=bq)
    write_table(scored.limit(10), "bq.sales.scored", mode="append", warehouse=bq)
    assert fake.sql("SELECT count(*) FROM `sales.scored`") == [(ROWS + 10,)]
    write_table(scored.limit(4), "bq.sales.scored", mode="overwrite", warehouse=bq)
    assert fake.sql("SELECT count(*) FROM `sales.scored`") == [(4,)]

    # Columns the table does not have: refused, table unchanged.
    wrong = scored.limit(5).map_batches(
        lambda b: b.rename_columns(["id", "other", "note"]), batch_format="pyarrow"
    )
    with pytest.raises(InvalidArgumentError) as mismatch:
        write_table(wrong, "bq.sales.scored", mode="append", warehouse=bq)
    assert mismatch.value.field == "schema" and "other" in mismatch.value.message
    assert fake.sql("SELECT count(*) FROM `sales.scored`") == [(4,)]
    assert fake.tables("sales") == ["orders", "scored"]


def test_a_write_failing_midway_changes_nothing(bq: Warehouse, fake: FakeBigQuery) -> None:
    before = fake.sql("SELECT count(*), sum(id) FROM `sales.orders`")

    def explode(batch: dict[str, Any]) -> dict[str, Any]:
        if (batch["id"] >= 100_000).any():
            raise RuntimeError("boom in the middle of the write")
        return batch

    failing = read_table("bq.sales.orders", warehouse=bq, parallelism=3).map_batches(
        explode, batch_size=4096
    )
    with pytest.raises(Exception, match="boom"):
        write_table(failing, "bq.sales.orders", mode="overwrite", warehouse=bq)
    assert fake.sql("SELECT count(*), sum(id) FROM `sales.orders`") == before
    assert fake.tables("sales") == ["orders"]  # staging tables dropped


def test_push_down_transform_into_a_table(bq: Warehouse, fake: FakeBigQuery) -> None:
    sql = "SELECT region, count(*) AS n FROM `sales.orders` GROUP BY region"
    result = sql_transform(bq, sql, into="bq.sales.by_region")
    assert result.rows_written == 7  # type: ignore[union-attr]
    assert fake.sql("SELECT sum(n) FROM `sales.by_region`") == [(ROWS,)]
    again = sql_transform(bq, sql, into="bq.sales.by_region", mode="append")
    assert again.rows_written == 7  # type: ignore[union-attr]
    with pytest.raises(AlreadyExistsError):
        sql_transform(bq, sql, into="bq.sales.by_region")
