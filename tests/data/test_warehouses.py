"""DuckDB and file warehouses through a real (local) Ray: parallel reads, staged all-or-nothing
writes, schema checks, push-down transforms, browsing and read-only queries."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from raydeck.core.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from raydeck.core.models.warehouse import ConnectionKind, FileFormat, ResolvedConnection
from raydeck.data import open_warehouse, read_table, transform_batches, write_table
from raydeck.data.base import Warehouse

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]


@pytest.fixture
def duck(tmp_path: Path) -> Warehouse:
    path = tmp_path / "wh.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA sales")
    con.execute(
        "CREATE TABLE sales.orders AS SELECT range AS id, range % 7 AS region, "
        "range * 0.5 AS total, 'o' || range AS note FROM range(120000)"
    )
    con.close()
    return open_warehouse(ResolvedConnection(name="wh", kind=ConnectionKind.DUCKDB, path=str(path)))


@pytest.fixture
def files(tmp_path: Path) -> Warehouse:
    root = tmp_path / "lake"
    (root / "raw" / "events").mkdir(parents=True)
    for part in range(3):
        table = pa.table({"id": list(range(part * 100, part * 100 + 100)), "kind": ["a", "b"] * 50})
        pq.write_table(table, root / "raw" / "events" / f"part-{part}.parquet")
    return open_warehouse(
        ResolvedConnection(
            name="lake", kind=ConnectionKind.FILES, root=str(root), format=FileFormat.PARQUET
        )
    )


def _sum(ds: ray.data.Dataset, column: str) -> int:
    return int(ds.sum(column))


def test_duckdb_parallel_read_and_staged_write(duck: Warehouse) -> None:
    ds = read_table("wh.sales.orders", warehouse=duck, parallelism=2)
    assert ds.count() == 120000
    assert _sum(ds, "id") == sum(range(120000))
    doubled = ds.map_batches(
        lambda b: b.append_column("double", pa.compute.multiply(b["id"], 2)),
        batch_format="pyarrow",
    )
    result = write_table(doubled, "wh.sales.doubled", mode="create", warehouse=duck)
    assert result.rows_written == 120000
    info = duck.table_info("sales", "doubled")
    assert info.row_count == 120000
    assert [c.name for c in info.columns] == ["id", "region", "total", "note", "double"]
    # append adds, overwrite replaces, create refuses an existing table
    write_table(doubled.limit(10), "wh.sales.doubled", mode="append", warehouse=duck)
    assert duck.table_info("sales", "doubled").row_count == 120010
    write_table(doubled.limit(5), "wh.sales.doubled", mode="overwrite", warehouse=duck)
    assert duck.table_info("sales", "doubled").row_count == 5
    with pytest.raises(AlreadyExistsError):
        write_table(doubled, "wh.sales.doubled", mode="create", warehouse=duck)


def test_duckdb_failed_write_leaves_target_unchanged(duck: Warehouse) -> None:
    before = duck.query("SELECT count(*) AS n, sum(id) AS s FROM sales.orders", 10).to_pylist()

    def explode_midway(batch: pa.Table) -> pa.Table:
        if pa.compute.max(batch["id"]).as_py() >= 60000:
            raise RuntimeError("boom at row 60000")
        return batch

    ds = read_table("wh.sales.orders", warehouse=duck).map_batches(
        explode_midway, batch_format="pyarrow", batch_size=10000
    )
    with pytest.raises(Exception, match="boom at row 60000"):
        write_table(ds, "wh.sales.orders", mode="overwrite", warehouse=duck)
    after = duck.query("SELECT count(*) AS n, sum(id) AS s FROM sales.orders", 10).to_pylist()
    assert after == before
    staging = Path(f"{duck.connection.path}.staging")
    assert not staging.exists() or not any(staging.iterdir())


def test_duckdb_schema_mismatch_and_bad_cast_change_nothing(duck: Warehouse) -> None:
    wrong = ray.data.from_items([{"id": 1, "colour": "red"}])
    with pytest.raises(InvalidArgumentError, match="missing column"):
        write_table(wrong, "wh.sales.orders", mode="append", warehouse=duck)
    bad_type = ray.data.from_items([{"id": "not-a-number", "region": 1, "total": 1.0, "note": "x"}])
    with pytest.raises(InvalidArgumentError, match="table unchanged"):
        write_table(bad_type, "wh.sales.orders", mode="append", warehouse=duck)
    assert duck.table_info("sales", "orders").row_count == 120000


def test_duckdb_browse_query_and_pushdown(duck: Warehouse) -> None:
    assert [d.name for d in duck.list_datasets()] == ["main", "sales"]
    [orders] = duck.list_tables("sales")
    assert orders.row_count == 120000
    assert [(c.name, c.type) for c in orders.columns][:2] == [
        ("id", "BIGINT"),
        ("region", "BIGINT"),
    ]
    with pytest.raises(NotFoundError, match=r"wh\.sales\.nope"):
        duck.table_info("sales", "nope")
    assert duck.preview("sales", "orders", 3).num_rows == 3
    assert duck.query("SELECT 1 AS x", 5).to_pylist() == [{"x": 1}]
    for statement in ("DELETE FROM sales.orders", "SELECT 1; DROP TABLE sales.orders"):
        with pytest.raises(InvalidArgumentError):
            duck.query(statement, 5)
    with pytest.raises(InvalidArgumentError, match="failed in DuckDB"):
        duck.query("SELECT no_such_column FROM sales.orders", 5)
    with pytest.raises(InvalidArgumentError):  # the sandbox keeps other files out of reach
        duck.query("SELECT * FROM read_csv('/etc/passwd')", 5)
    result = duck.create_table_as(
        "SELECT region, count(*) AS n FROM sales.orders GROUP BY region",
        "sales",
        "by_region",
        "create",
    )
    assert result.rows_written == 7
    rows = duck.read_query("SELECT sum(n) AS n FROM sales.by_region").take_all()
    assert rows == [{"n": 120000}]


def test_files_read_write_and_query(files: Warehouse, tmp_path: Path) -> None:
    ds = read_table("lake.raw.events", warehouse=files)
    assert ds.count() == 300
    info = files.table_info("raw", "events")
    assert info.row_count == 300
    filtered = transform_batches(ds, "SELECT id, kind FROM batch WHERE kind = 'a'")
    write_table(filtered, "lake.curated.events_a", mode="create", warehouse=files)
    assert files.table_info("curated", "events_a").row_count == 150
    assert [d.name for d in files.list_datasets()] == ["curated", "raw"]
    rows = files.query("SELECT count(*) AS n FROM curated.events_a WHERE id >= 100", 5)
    assert rows.to_pylist() == [{"n": 100}]
    streamed = files.read_query("SELECT kind, count(*) AS n FROM raw.events GROUP BY kind")
    assert sorted(streamed.take_all(), key=str) == [
        {"kind": "a", "n": 150},
        {"kind": "b", "n": 150},
    ]
    with pytest.raises(InvalidArgumentError):
        files.query("SELECT * FROM read_parquet('/etc/hostname')", 5)

    # a failing write leaves the existing table and no staging directory behind
    def fail(batch: pa.Table) -> pa.Table:
        raise ValueError("bad batch")

    with pytest.raises(Exception, match="bad batch"):
        write_table(
            ds.map_batches(fail, batch_format="pyarrow"),
            "lake.curated.events_a",
            mode="overwrite",
            warehouse=files,
        )
    assert files.table_info("curated", "events_a").row_count == 150
    assert sorted(p.name for p in (tmp_path / "lake" / "curated").iterdir()) == ["events_a"]
    write_table(ds, "lake.curated.events_a", mode="overwrite", warehouse=files)
    assert files.table_info("curated", "events_a").row_count == 300


def test_files_csv_and_jsonl_tables(tmp_path: Path) -> None:
    for fmt in (FileFormat.CSV, FileFormat.JSONL):
        root = tmp_path / fmt.value
        wh = open_warehouse(
            ResolvedConnection(name="f", kind=ConnectionKind.FILES, root=str(root), format=fmt)
        )
        ds = ray.data.from_items([{"id": i, "name": f"n{i}"} for i in range(50)])
        write_table(ds, "f.d.people", mode="create", warehouse=wh)
        back = read_table("f.d.people", warehouse=wh)
        assert sorted(r["id"] for r in back.take_all()) == list(range(50))
        assert [c.name for c in wh.table_info("d", "people").columns] == ["id", "name"]
        assert wh.preview("d", "people", 3).num_rows == 3
        if fmt is FileFormat.JSONL:
            first = next((root / "d" / "people").iterdir()).read_text().splitlines()[0]
            assert set(json.loads(first)) == {"id", "name"}
