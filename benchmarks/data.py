"""Warehouse data (issue 6): read and write rows/s through ``raydeck.data`` against the same
table read and written by hand with ``ray.data.read_sql`` / ``Dataset.write_sql``, and against
plain DuckDB in one process. All on one local Ray (2 CPUs), measured in the same run.

- DuckDB read: ``read_table`` vs ``ray.data.read_sql`` over a DuckDB DB-API connection
  (the hand-written Ray Data path), and vs DuckDB reading the table into Arrow in-process.
- SQL read/write (SQLite file, a real DB-API database every machine has): the ``sql``
  warehouse vs ``read_sql`` / ``write_sql`` of the same rows.
- DuckDB write: ``write_table`` vs plain DuckDB inserting the same Arrow table in-process
  (``write_sql`` cannot write DuckDB from parallel tasks: one writer per file).
- Postgres read/write, when Debian's PostgreSQL server binaries are installed: a throwaway
  server (tests/postgres_server.py), the ``sql`` warehouse vs ``read_sql`` / ``write_sql``
  over psycopg.

Figures are seconds for the whole table (lower is better); the report's ratio is
raydeck/raw, so the issue's "≥ 0.9× the rows/s of the hand-written path" is ratio ≤ 1.11.
"""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import psycopg
import pyarrow as pa
import ray
import sqlalchemy as sa

from benchmarks.report import Figure
from raydeck.core.models.warehouse import ConnectionKind, ResolvedConnection
from raydeck.data import open_warehouse, read_table, write_table
from tests.postgres_server import PG_BIN, running_postgres

__all__ = ["bench_data"]

DUCKDB_ROWS = 1_000_000
SQL_ROWS = 100_000
ROUNDS = 3
TARGET = round(1 / 0.9, 2)


def _timed(action: Callable[[], object]) -> float:
    begin = time.perf_counter()
    action()
    return time.perf_counter() - begin


def _medians(*actions: Callable[[], object]) -> list[float]:
    """Median seconds of each action over ROUNDS rounds that run them in turn, so background
    noise on a shared machine hits every contender alike."""
    samples: list[list[float]] = [[] for _ in actions]
    for _ in range(ROUNDS):
        for action, times in zip(actions, samples, strict=True):
            times.append(_timed(action))
    return [statistics.median(times) for times in samples]


def _consume(ds: ray.data.Dataset, rows: int) -> None:
    seen = sum(batch.num_rows for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None))
    assert seen == rows, (seen, rows)


def _rows_per_s(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f} rows/s"


def _duckdb_figures(home: Path) -> list[Figure]:
    path = str(home / "bench.duckdb")
    con = duckdb.connect(path)
    con.execute(
        "CREATE TABLE t AS SELECT range AS id, range % 97 AS k, range * 0.5 AS v, "
        f"'row-' || range AS s FROM range({DUCKDB_ROWS})"
    )
    con.close()
    wh = open_warehouse(ResolvedConnection(name="wh", kind=ConnectionKind.DUCKDB, path=path))

    def raydeck_read() -> None:
        _consume(read_table("wh.main.t", warehouse=wh), DUCKDB_ROWS)

    def raw_read() -> None:
        ds = ray.data.read_sql("SELECT * FROM t", lambda: duckdb.connect(path, read_only=True))
        _consume(ds, DUCKDB_ROWS)

    def plain_read() -> None:
        local = duckdb.connect(path, read_only=True)
        assert local.sql("SELECT * FROM t").to_arrow_table().num_rows == DUCKDB_ROWS
        local.close()

    raydeck, raw, plain = _medians(raydeck_read, raw_read, plain_read)
    print(
        f"  duckdb read: raydeck {_rows_per_s(DUCKDB_ROWS, raydeck)}, read_sql "
        f"{_rows_per_s(DUCKDB_ROWS, raw)}, in-process {_rows_per_s(DUCKDB_ROWS, plain)}"
    )

    source = duckdb.connect(path, read_only=True)
    table: pa.Table = source.sql("SELECT * FROM t").to_arrow_table()
    source.close()
    ds = ray.data.from_arrow(table).materialize()
    counter = iter(range(100))

    def raydeck_write() -> None:
        result = write_table(ds, f"wh.main.copy_{next(counter)}", mode="create", warehouse=wh)
        assert result.rows_written == DUCKDB_ROWS

    def plain_write() -> None:
        local = duckdb.connect(path)
        local.register("incoming", table)
        local.execute(f"CREATE TABLE plain_{next(counter)} AS SELECT * FROM incoming")
        local.close()

    raydeck_w, plain_w = _medians(raydeck_write, plain_write)
    print(
        f"  duckdb write: raydeck {_rows_per_s(DUCKDB_ROWS, raydeck_w)}, in-process "
        f"{_rows_per_s(DUCKDB_ROWS, plain_w)}"
    )
    label = f"{DUCKDB_ROWS:,} rows"
    return [
        Figure(
            f"data: DuckDB table read, {label}, vs ray.data.read_sql", "s", raydeck, raw, TARGET
        ),
        Figure(
            f"data: DuckDB table read, {label}, vs plain DuckDB in-process",
            "s",
            raydeck,
            plain,
            50.0,
        ),
        Figure(
            f"data: DuckDB table write, {label}, vs plain DuckDB in-process",
            "s",
            raydeck_w,
            plain_w,
            50.0,
        ),
    ]


def _sql_figures(home: Path) -> list[Figure]:
    path = str(home / "bench.sqlite")
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, v REAL, s TEXT)")
    con.executemany(
        "INSERT INTO t VALUES (?, ?, ?, ?)",
        ((i, i % 97, i * 0.5, f"row-{i}") for i in range(SQL_ROWS)),
    )
    con.commit()
    con.close()
    wh = open_warehouse(
        ResolvedConnection(name="lite", kind=ConnectionKind.SQL, url=f"sqlite:///{path}")
    )

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(path, timeout=60)

    raydeck_r, raw_r = _medians(
        lambda: _consume(read_table("lite.main.t", warehouse=wh), SQL_ROWS),
        lambda: _consume(ray.data.read_sql("SELECT * FROM t", connect), SQL_ROWS),
    )
    ds = read_table("lite.main.t", warehouse=wh).materialize()
    counter = iter(range(100))

    def raydeck_write() -> None:
        result = write_table(ds, f"lite.main.copy_{next(counter)}", mode="create", warehouse=wh)
        assert result.rows_written == SQL_ROWS

    def raw_write() -> None:
        name = f"raw_{next(counter)}"
        with connect() as local:
            local.execute(
                f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, k INTEGER, v REAL, s TEXT)"
            )
        ds.write_sql(f"INSERT INTO {name} VALUES (?, ?, ?, ?)", connect)

    raydeck_w, raw_w = _medians(raydeck_write, raw_write)
    rates = {k: _rows_per_s(SQL_ROWS, v) for k, v in (("r", raydeck_r), ("rr", raw_r))}
    print(f"  sql read: raydeck {rates['r']}, read_sql {rates['rr']}")
    rates = {k: _rows_per_s(SQL_ROWS, v) for k, v in (("w", raydeck_w), ("rw", raw_w))}
    print(f"  sql write: raydeck {rates['w']}, write_sql {rates['rw']}")
    return _sql_table_figures("SQLite", (raydeck_r, raw_r), (raydeck_w, raw_w))


def _postgres_figures() -> list[Figure]:
    if PG_BIN is None or not (PG_BIN / "initdb").exists():
        print("  postgres: no server binaries here, skipped")
        return []
    with running_postgres() as url:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE t (id BIGINT PRIMARY KEY, k BIGINT, v DOUBLE PRECISION, s TEXT)"
            )
            conn.exec_driver_sql(
                "INSERT INTO t SELECT i, mod(i, 97), i * 0.5, 'row-' || i "
                f"FROM generate_series(0, {SQL_ROWS - 1}) AS i"
            )
        engine.dispose()
        wh = open_warehouse(ResolvedConnection(name="pg", kind=ConnectionKind.SQL, url=url))
        dsn = url.replace("postgresql+psycopg://", "postgresql://")

        def connect() -> psycopg.Connection[tuple[object, ...]]:
            return psycopg.connect(dsn)

        raydeck_r, raw_r = _medians(
            lambda: _consume(read_table("pg.public.t", warehouse=wh), SQL_ROWS),
            lambda: _consume(ray.data.read_sql("SELECT * FROM t", connect), SQL_ROWS),
        )
        ds = read_table("pg.public.t", warehouse=wh).materialize()
        counter = iter(range(100))

        def raydeck_write() -> None:
            result = write_table(ds, f"pg.public.copy_{next(counter)}", "create", warehouse=wh)
            assert result.rows_written == SQL_ROWS

        def raw_write() -> None:
            name = f"raw_{next(counter)}"
            with connect() as local:
                local.execute(
                    f"CREATE TABLE {name} (id BIGINT PRIMARY KEY, k BIGINT, "
                    "v DOUBLE PRECISION, s TEXT)"
                )
            ds.write_sql(f"INSERT INTO {name} VALUES (%s, %s, %s, %s)", connect)

        raydeck_w, raw_w = _medians(raydeck_write, raw_write)
    print(
        f"  postgres read: raydeck {_rows_per_s(SQL_ROWS, raydeck_r)}, read_sql "
        f"{_rows_per_s(SQL_ROWS, raw_r)}; write: raydeck {_rows_per_s(SQL_ROWS, raydeck_w)}, "
        f"write_sql {_rows_per_s(SQL_ROWS, raw_w)}"
    )
    return _sql_table_figures("Postgres", (raydeck_r, raw_r), (raydeck_w, raw_w))


def _sql_table_figures(
    database: str, read: tuple[float, float], write: tuple[float, float]
) -> list[Figure]:
    """Raydeck's table read and write against Ray's read_sql / write_sql: (raydeck, raw) s."""
    label = f"{SQL_ROWS:,} rows ({database})"
    return [
        Figure(f"data: SQL table read, {label}, vs ray.data.read_sql", "s", *read, TARGET),
        Figure(f"data: SQL table write, {label}, vs Dataset.write_sql", "s", *write, TARGET),
    ]


def bench_data() -> list[Figure]:
    """Runs on its own local Ray; returns the figures for the report."""
    home = Path(tempfile.mkdtemp(prefix="raydeck-bench-data-"))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        return _duckdb_figures(home) + _sql_figures(home) + _postgres_figures()
    finally:
        ray.shutdown()
