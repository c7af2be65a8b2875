"""``duckdb`` connections: one DuckDB database file (the embedded default warehouse).

DuckDB lets one process write a database file, or several processes read it, never both.
So, across a cluster:

- reads: each Ray Data read task opens the file read-only for the length of its range scan
  (``rowid`` ranges split the table evenly), so reads run in parallel;
- writes: write tasks never open the file. They stream their blocks into Parquet part files
  in a staging directory next to it (``<file>.staging/<write id>/``); one committer in the
  driver then opens the file read-write once and loads every part in one transaction
  (``INSERT … SELECT * FROM read_parquet([...])`` or ``CREATE OR REPLACE TABLE … AS``).
  A failed task or a failed commit (schema mismatch, bad cast) leaves the table unchanged.

Connections are opened briefly and closed; a file held by another writer is retried until
``LOCK_TIMEOUT`` seconds, then reported as unavailable.
"""

from __future__ import annotations

import functools
import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, cast

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]
import ray.data
from ray.data import Dataset
from ray.data.block import Block, BlockMetadata
from ray.data.datasource.datasource import Datasource, ReadTask

from raydeck.core.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from raydeck.core.models.warehouse import (
    ColumnInfo,
    ConnectionKind,
    DatasetInfo,
    FileFormat,
    TableInfo,
    WriteMode,
    WriteResult,
)
from raydeck.data.base import (
    Warehouse,
    check_columns,
    new_write_id,
    quote,
    require_read_only_sql,
)
from raydeck.data.staging import StagedFilesDatasink

__all__ = [
    "DuckDBQueryDatasource",
    "DuckDBWarehouse",
    "arrow_reader",
    "connect_duckdb",
    "run_duckdb_query",
]

LOCK_TIMEOUT = 60.0
MIN_ROWS_PER_READ_TASK = 50_000
ROWS_PER_BLOCK = 131_072
_READ_ONLY_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_SYSTEM_SCHEMAS = ("information_schema", "pg_catalog")
# DuckDB 2.0's option names. A sandboxed connection opens its own database file only: no
# other file, no extension installed or loaded (a SQLite file would make DuckDB fetch its
# scanner), and the configuration cannot be changed back from SQL.
SANDBOX_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,
}


def connect_duckdb(
    path: str, *, read_only: bool, timeout: float = LOCK_TIMEOUT, sandboxed: bool = False
) -> duckdb.DuckDBPyConnection:
    """Open ``path`` (created on first read-write use), retrying while another process holds
    the lock. ``sandboxed``: ``SANDBOX_CONFIG`` (queries users type; every open by the control
    plane). A file DuckDB cannot open is a 4xx naming ``path``."""
    if read_only and not Path(path).exists():
        connect_duckdb(path, read_only=False, timeout=timeout, sandboxed=sandboxed).close()
    config = dict(SANDBOX_CONFIG) if sandboxed else {}
    deadline = time.monotonic() + timeout
    while True:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            return duckdb.connect(path, read_only=read_only, config=config)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise _unreadable(path, exc) from exc
            if time.monotonic() > deadline:
                raise UnavailableError(f"DuckDB file {path} is busy: {exc}") from exc
            time.sleep(0.05)
        except duckdb.Error as exc:  # e.g. a file that needs an extension the sandbox refuses
            raise _unreadable(path, exc) from exc


def _unreadable(path: str, exc: Exception) -> FailedPreconditionError:
    return FailedPreconditionError(
        f"{path} cannot be opened as a DuckDB database: {exc}"[:500], field="path"
    )


@contextmanager
def _opened(
    path: str, *, read_only: bool, sandboxed: bool = False
) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect_duckdb(path, read_only=read_only, sandboxed=sandboxed)
    try:
        yield con
    finally:
        con.close()


def run_duckdb_query(con: duckdb.DuckDBPyConnection, sql: str, limit: int) -> pa.Table:
    """One read-only statement (checked by DuckDB's own parser), at most ``limit + 1`` rows."""
    body = require_read_only_sql(sql)
    try:
        statements = con.extract_statements(body)
    except duckdb.Error as exc:
        raise InvalidArgumentError(f"query failed: {exc}", field="sql") from exc
    if len(statements) != 1 or statements[0].type not in _READ_ONLY_STATEMENTS:
        raise InvalidArgumentError("queries here are read-only (SELECT or WITH)", field="sql")
    try:
        reader = arrow_reader(con, body, limit + 1)
        batches = []
        rows = 0
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            if rows > limit:
                break
        table = pa.Table.from_batches(batches, schema=reader.schema)
    except duckdb.Error as exc:
        raise InvalidArgumentError(f"query failed in DuckDB: {exc}", field="sql") from exc
    return table.slice(0, limit + 1)


class _RowidRangeDatasource(Datasource):
    """Parallel table reads: contiguous ``rowid`` ranges, one read-only scan per task."""

    def __init__(self, path: str, relation: str, low: int, high: int, rows: int) -> None:
        self.path, self.relation = path, relation
        self.low, self.high, self.rows = low, high, rows

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        if self.rows == 0:
            return [ReadTask(self._read_fn(0, -1), BlockMetadata(0, None, None, None))]
        tasks = max(1, min(parallelism, math.ceil(self.rows / MIN_ROWS_PER_READ_TASK)))
        span = self.high - self.low + 1
        bounds = [self.low + span * i // tasks for i in range(tasks + 1)]
        return [
            ReadTask(
                self._read_fn(bounds[i], bounds[i + 1] - 1),
                BlockMetadata(None, None, None, None),
                per_task_row_limit=per_task_row_limit,
            )
            for i in range(tasks)
        ]

    def _read_fn(self, first: int, last: int) -> Any:
        path, relation = self.path, self.relation

        def read() -> Iterator[Block]:
            with _opened(path, read_only=True) as con:
                sql = f"SELECT * FROM {relation} WHERE rowid BETWEEN {first} AND {last}"
                reader = arrow_reader(con, sql, ROWS_PER_BLOCK)
                emitted = False
                for batch in reader:
                    emitted = True
                    yield pa.Table.from_batches([batch])
                if not emitted:
                    yield reader.schema.empty_table()

        return read


class DuckDBQueryDatasource(Datasource):
    """A query's result streamed by one task (arbitrary SQL has no safe split), over a DuckDB
    connection that ``connect`` opens inside the task and the task closes. ``connect`` is
    pickled to the task: a module-level function, a ``functools.partial`` or a bound method."""

    def __init__(self, connect: Callable[[], duckdb.DuckDBPyConnection], sql: str) -> None:
        self.connect, self.sql = connect, sql

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        connect, sql = self.connect, self.sql

        def read() -> Iterator[Block]:
            con = connect()
            try:
                for batch in arrow_reader(con, sql, ROWS_PER_BLOCK):
                    yield pa.Table.from_batches([batch])
            finally:
                con.close()

        return [ReadTask(read, BlockMetadata(None, None, None, None))]


class DuckDBWarehouse(Warehouse):
    kind = ConnectionKind.DUCKDB

    @property
    def path(self) -> str:
        if not self.connection.path:
            raise InvalidArgumentError(f"connection {self.name!r} has no path", field="path")
        return self.connection.path

    @property
    def default_dataset(self) -> str:
        return "main"

    # Browsing ---------------------------------------------------------------------------

    def _browse(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        """A read-only connection for browsing; locked down when the server opens it."""
        return _opened(self.path, read_only=True, sandboxed=self.server_side)

    def list_datasets(self) -> list[DatasetInfo]:
        with self._browse() as con:
            rows = con.execute(
                "SELECT schema_name FROM information_schema.schemata "
                "WHERE catalog_name = current_database() ORDER BY schema_name"
            ).fetchall()
        return [DatasetInfo(name=r[0]) for r in rows if r[0] not in _SYSTEM_SCHEMAS]

    def list_tables(self, dataset: str) -> list[TableInfo]:
        with self._browse() as con:
            self._require_dataset(con, dataset)
            names = con.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_catalog = current_database() AND table_schema = ? "
                "ORDER BY table_name",
                [dataset],
            ).fetchall()
            return [self._info(con, dataset, name) for (name,) in names]

    def table_info(self, dataset: str, table: str) -> TableInfo:
        with self._browse() as con:
            return self._info(con, dataset, table)

    def _require_dataset(self, con: duckdb.DuckDBPyConnection, dataset: str) -> None:
        found = con.execute(
            "SELECT 1 FROM information_schema.schemata "
            "WHERE catalog_name = current_database() AND schema_name = ?",
            [dataset],
        ).fetchall()
        if not found:
            raise NotFoundError(f"dataset {self.name}.{dataset} not found", field="dataset")

    def _columns(
        self, con: duckdb.DuckDBPyConnection, dataset: str, table: str
    ) -> list[ColumnInfo]:
        rows = con.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ? "
            "ORDER BY ordinal_position",
            [dataset, table],
        ).fetchall()
        return [ColumnInfo(name=n, type=t, nullable=nullable == "YES") for n, t, nullable in rows]

    def _info(self, con: duckdb.DuckDBPyConnection, dataset: str, table: str) -> TableInfo:
        columns = self._columns(con, dataset, table)
        if not columns:
            raise NotFoundError(f"table {self.ref(dataset, table)} not found", field="table")
        count = _count(con, f"{quote(dataset)}.{quote(table)}")
        return TableInfo(
            connection=self.name,
            dataset=dataset,
            name=table,
            columns=columns,
            row_count=count,
        )

    def preview(self, dataset: str, table: str, limit: int) -> pa.Table:
        with self._browse() as con:
            self._info(con, dataset, table)
            relation = f"{quote(dataset)}.{quote(table)}"
            return con.sql(f"SELECT * FROM {relation} LIMIT {int(limit)}").to_arrow_table()

    def query(self, sql: str, limit: int) -> pa.Table:
        con = connect_duckdb(self.path, read_only=True, sandboxed=True)
        try:
            return run_duckdb_query(con, sql, limit)
        finally:
            con.close()

    # Ray Data ---------------------------------------------------------------------------

    def read_table(self, dataset: str, table: str, *, parallelism: int = -1) -> Dataset:
        relation = f"{quote(dataset)}.{quote(table)}"
        with _opened(self.path, read_only=True) as con:
            self._info(con, dataset, table)
            low, high, rows = con.execute(
                "SELECT coalesce(min(rowid), 0), coalesce(max(rowid), -1), count(*) "
                f"FROM {relation}"
            ).fetchall()[0]
        source = _RowidRangeDatasource(self.path, relation, int(low), int(high), int(rows))
        return cast(
            Dataset, ray.data.read_datasource(source, override_num_blocks=_blocks(parallelism))
        )

    def read_query(self, sql: str, *, parallelism: int = -1) -> Dataset:
        body = require_read_only_sql(sql)
        with _opened(self.path, read_only=True) as con:
            try:
                con.execute(f"DESCRIBE {body}")  # a bad query fails here, in the driver
            except duckdb.Error as exc:
                raise InvalidArgumentError(f"query failed in DuckDB: {exc}", field="sql") from exc
        connect = functools.partial(connect_duckdb, self.path, read_only=True)
        return cast(Dataset, ray.data.read_datasource(DuckDBQueryDatasource(connect, body)))

    def table_sink(self, dataset: str, table: str, mode: WriteMode) -> StagedFilesDatasink:
        ref = self.ref(dataset, table)
        exists = self.table_exists(dataset, table)
        if mode is WriteMode.CREATE and exists:
            raise AlreadyExistsError(f"table {ref} already exists (mode=create)", field="table")
        expected = None
        if exists and mode is WriteMode.APPEND:
            expected = [c.name for c in self.table_info(dataset, table).columns]
        staging = Path(f"{self.path}.staging") / new_write_id()
        sink = StagedFilesDatasink(
            ref=ref,
            staging_uri=str(staging),
            fmt=FileFormat.PARQUET,
            expected_columns=expected,
            commit=lambda files, schema, _rows: self._commit(files, schema, dataset, table, mode),
            abort=lambda: shutil.rmtree(staging, ignore_errors=True),
        )
        return sink

    def _commit(
        self, files: list[str], schema: pa.Schema | None, dataset: str, table: str, mode: WriteMode
    ) -> None:
        ref = self.ref(dataset, table)
        relation = f"{quote(dataset)}.{quote(table)}"
        with _opened(self.path, read_only=False) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                if files:
                    listed = ", ".join(_literal(f) for f in files)
                    con.execute(
                        f"CREATE TEMP VIEW staged AS SELECT * FROM read_parquet([{listed}])"
                    )
                else:  # nothing to load, but a new table still gets the data's schema
                    empty = (schema or pa.schema([])).empty_table()
                    con.register("staged_empty", empty)
                    con.execute("CREATE TEMP VIEW staged AS SELECT * FROM staged_empty")
                exists = bool(self._columns(con, dataset, table))
                if exists and mode is WriteMode.CREATE:
                    raise AlreadyExistsError(
                        f"table {ref} already exists (mode=create)", field="table"
                    )
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(dataset)}")
                if exists and mode is WriteMode.APPEND:
                    staged_columns = [r[0] for r in con.execute("DESCRIBE staged").fetchall()]
                    check_columns(
                        ref, [c.name for c in self._columns(con, dataset, table)], staged_columns
                    )
                    con.execute(f"INSERT INTO {relation} BY NAME SELECT * FROM staged")
                else:
                    con.execute(f"CREATE OR REPLACE TABLE {relation} AS SELECT * FROM staged")
                con.execute("DROP VIEW staged")
                con.execute("COMMIT")
            except duckdb.Error as exc:
                con.execute("ROLLBACK")
                raise InvalidArgumentError(
                    f"write to {ref} failed in DuckDB, table unchanged: {exc}", field="schema"
                ) from exc
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def create_table_as(self, sql: str, dataset: str, table: str, mode: WriteMode) -> WriteResult:
        ref = self.ref(dataset, table)
        body = require_read_only_sql(sql)
        relation = f"{quote(dataset)}.{quote(table)}"
        with _opened(self.path, read_only=False) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                exists = bool(self._columns(con, dataset, table))
                if exists and mode is WriteMode.CREATE:
                    raise AlreadyExistsError(
                        f"table {ref} already exists (mode=create)", field="table"
                    )
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(dataset)}")
                before = 0
                if exists and mode is WriteMode.APPEND:
                    con.execute(f"CREATE TEMP VIEW result AS {body}")
                    result_columns = [r[0] for r in con.execute("DESCRIBE result").fetchall()]
                    check_columns(
                        ref, [c.name for c in self._columns(con, dataset, table)], result_columns
                    )
                    before = _count(con, relation)
                    con.execute(f"INSERT INTO {relation} BY NAME SELECT * FROM result")
                    con.execute("DROP VIEW result")
                else:
                    con.execute(f"CREATE OR REPLACE TABLE {relation} AS {body}")
                rows = _count(con, relation) - before
                con.execute("COMMIT")
            except duckdb.Error as exc:
                con.execute("ROLLBACK")
                raise InvalidArgumentError(
                    f"transform into {ref} failed in DuckDB: {exc}", field="sql"
                ) from exc
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return WriteResult(table=ref, mode=mode, rows_written=rows)


def _count(con: duckdb.DuckDBPyConnection, relation: str) -> int:
    rows = con.execute(f"SELECT count(*) FROM {relation}").fetchall()
    return int(rows[0][0])


def arrow_reader(con: duckdb.DuckDBPyConnection, sql: str, batch_rows: int) -> Any:
    """A pyarrow RecordBatchReader over ``sql``'s result, ``batch_rows`` rows a batch."""
    return con.sql(sql).to_arrow_reader(batch_rows)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _blocks(parallelism: int) -> int | None:
    return None if parallelism <= 0 else parallelism
