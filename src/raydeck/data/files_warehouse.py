"""``files`` connections: Parquet, CSV or JSONL files under a root (local path or fsspec URI).

Layout: ``<root>/<dataset>/<table>/`` holds a table's part files (or ``<table>.<ext>`` is a
single-file table); names starting with ``_`` or ``.`` are bookkeeping, never data. Reads are
one Ray Data task per file. Writes stage part files in ``<root>/<dataset>/_staging-<id>/``
and the driver publishes them at the end: a new table is one directory rename (atomic on a
local or POSIX file system), ``overwrite`` swaps directories, ``append`` moves the staged
files in. Until that step the table is untouched, so a failed write changes nothing. On
object stores a rename is a copy, so there the final step is not atomic.

Queries (browse and ``read_query``) run in an in-memory DuckDB where every table is a view
``dataset.table`` over its files; that DuckDB cannot open any other file nor load extensions.
On a local root, entries whose real path (symlinks followed) leaves the root are ignored, and
files that are not of the connection's format are a 4xx naming the table, never a 500.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import duckdb
import fsspec
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.dataset as pa_ds  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import ray.data
from pyarrow.fs import FSSpecHandler, PyFileSystem  # type: ignore[import-untyped]
from ray.data import Dataset

from raydeck.core.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    RaydeckError,
)
from raydeck.core.models.warehouse import (
    IDENTIFIER_PATTERN,
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
)
from raydeck.data.duckdb_warehouse import SANDBOX_CONFIG, DuckDBQueryDatasource, run_duckdb_query
from raydeck.data.staging import StagedFilesDatasink, part_writer

__all__ = ["FilesWarehouse"]

_EXTENSIONS = {
    FileFormat.PARQUET: (".parquet", ".pq"),
    FileFormat.CSV: (".csv",),
    FileFormat.JSONL: (".jsonl", ".ndjson", ".json"),
}
_ARROW_FORMAT = {FileFormat.PARQUET: "parquet", FileFormat.CSV: "csv", FileFormat.JSONL: "json"}


def _hidden(name: str) -> bool:
    return name.startswith(("_", "."))


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


class FilesWarehouse(Warehouse):
    kind = ConnectionKind.FILES

    @property
    def default_dataset(self) -> str:
        return "default"

    @property
    def format(self) -> FileFormat:
        return self.connection.format

    def _fs(self) -> tuple[Any, str]:
        if not self.connection.root:
            raise InvalidArgumentError(f"connection {self.name!r} has no root", field="root")
        secret = self.connection.secret_value()
        options = json.loads(secret) if secret else {}
        fs, path = fsspec.core.url_to_fs(self.connection.root, **options)
        return fs, str(path).rstrip("/")

    def _is_local(self) -> bool:
        root = self.connection.root or ""
        return "://" not in root or root.startswith("file://")

    def _stays_inside(self, root: str) -> Callable[[str], bool]:
        """A test for paths found under ``root``: on a local root, whether the path's real
        location (symlinks followed) is still inside the root's."""
        if not self._is_local():
            return lambda _path: True
        real_root = os.path.realpath(root)

        def inside(path: str) -> bool:
            real = os.path.realpath(path)
            return real == real_root or real.startswith(real_root.rstrip("/") + "/")

        return inside

    def _arrow_fs(self, fs: Any) -> Any:
        return None if self._is_local() else PyFileSystem(FSSpecHandler(fs))

    # Layout -----------------------------------------------------------------------------

    def _dataset_dir(self, fs: Any, root: str, dataset: str) -> str:
        path = f"{root}/{dataset}"
        if not fs.isdir(path):
            raise NotFoundError(f"dataset {self.name}.{dataset} not found", field="dataset")
        return path

    def _table_entries(self, fs: Any, directory: str) -> dict[str, str]:
        """table name → its directory or single file."""
        tables: dict[str, str] = {}
        inside = self._stays_inside(self._fs()[1])
        for entry in fs.ls(directory, detail=True):
            name = _basename(entry["name"])
            if _hidden(name) or not inside(str(entry["name"])):
                continue
            if entry["type"] == "directory":
                tables[name] = entry["name"]
                continue
            for ext in _EXTENSIONS[self.format]:
                if name.endswith(ext) and _is_identifier(name[: -len(ext)]):
                    tables[name[: -len(ext)]] = entry["name"]
        return tables

    def _data_files(self, fs: Any, location: str) -> list[str]:
        inside = self._stays_inside(self._fs()[1])
        if not fs.isdir(location):
            return [location] if inside(location) else []
        found = [
            p
            for p in fs.find(location)
            if not any(_hidden(part) for part in str(p)[len(location) :].split("/") if part)
            and inside(str(p))
        ]
        return sorted(str(p) for p in found)

    def _table_files(self, dataset: str, table: str) -> tuple[Any, list[str]]:
        fs, root = self._fs()
        directory = self._dataset_dir(fs, root, dataset)
        location = self._table_entries(fs, directory).get(table)
        if location is None:
            raise NotFoundError(f"table {self.ref(dataset, table)} not found", field="table")
        return fs, self._data_files(fs, location)

    def _arrow_dataset(self, fs: Any, files: list[str]) -> pa_ds.Dataset:
        return pa_ds.dataset(
            files, format=_ARROW_FORMAT[self.format], filesystem=self._arrow_fs(fs) or None
        )

    # Browsing ---------------------------------------------------------------------------

    def list_datasets(self) -> list[DatasetInfo]:
        fs, root = self._fs()
        if not fs.exists(root):
            return []
        inside = self._stays_inside(root)
        names = [
            _basename(e["name"])
            for e in fs.ls(root, detail=True)
            if e["type"] == "directory"
            and not _hidden(_basename(e["name"]))
            and inside(str(e["name"]))
        ]
        return [DatasetInfo(name=n) for n in sorted(names) if _is_identifier(n)]

    def list_tables(self, dataset: str) -> list[TableInfo]:
        fs, root = self._fs()
        directory = self._dataset_dir(fs, root, dataset)
        return [
            self.table_info(dataset, name) for name in sorted(self._table_entries(fs, directory))
        ]

    def table_info(self, dataset: str, table: str) -> TableInfo:
        fs, files = self._table_files(dataset, table)
        with self._readable(dataset, table):
            return self._table_info(dataset, table, fs, files)

    @contextmanager
    def _readable(self, dataset: str, table: str) -> Iterator[None]:
        """Files that are not of the connection's format: 4xx naming the table."""
        try:
            yield
        except (pa.ArrowException, OSError, ValueError, duckdb.Error) as exc:
            if isinstance(exc, RaydeckError):
                raise
            raise FailedPreconditionError(
                f"table {self.ref(dataset, table)}: its files cannot be read as "
                f"{self.format.value}: {exc}"[:500],
                field="table",
            ) from exc

    def _table_info(self, dataset: str, table: str, fs: Any, files: list[str]) -> TableInfo:
        columns: list[ColumnInfo] = []
        rows: int | None = None
        if files:
            if self.format is FileFormat.PARQUET:
                rows = 0
                for path in files:
                    with fs.open(path, "rb") as handle:
                        meta = pq.ParquetFile(handle).metadata
                        rows += meta.num_rows
                        schema = meta.schema.to_arrow_schema()
            else:
                schema = self._arrow_dataset(fs, files[:1]).schema
            columns = [
                ColumnInfo(name=f.name, type=str(f.type), nullable=f.nullable) for f in schema
            ]
        return TableInfo(
            connection=self.name, dataset=dataset, name=table, columns=columns, row_count=rows
        )

    def preview(self, dataset: str, table: str, limit: int) -> pa.Table:
        fs, files = self._table_files(dataset, table)
        if not files:
            return pa.table({})
        with self._readable(dataset, table):
            return self._arrow_dataset(fs, files).head(limit)

    def _duckdb_views(self) -> duckdb.DuckDBPyConnection:
        """In-memory DuckDB with a view per table; no access to any other file."""
        fs, root = self._fs()
        con = duckdb.connect(
            ":memory:",
            config={
                k: v
                for k, v in SANDBOX_CONFIG.items()
                if k not in ("enable_external_access", "lock_configuration")
            },
        )
        for dataset in self.list_datasets():
            directory = f"{root}/{dataset.name}"
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(dataset.name)}")
            for table, location in self._table_entries(fs, directory).items():
                files = self._data_files(fs, location)
                if not files:
                    continue
                source = f"__{dataset.name}__{table}"
                with self._readable(dataset.name, table):
                    con.register(source, self._arrow_dataset(fs, files))
                view = f"{quote(dataset.name)}.{quote(table)}"
                con.execute(f"CREATE VIEW {view} AS SELECT * FROM {quote(source)}")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        return con

    def query(self, sql: str, limit: int) -> pa.Table:
        con = self._duckdb_views()
        try:
            return run_duckdb_query(con, sql, limit)
        finally:
            con.close()

    # Ray Data ---------------------------------------------------------------------------

    def read_table(self, dataset: str, table: str, *, parallelism: int = -1) -> Dataset:
        fs, files = self._table_files(dataset, table)
        if not files:
            raise FailedPreconditionError(
                f"table {self.ref(dataset, table)} has no files", field="table"
            )
        blocks = None if parallelism <= 0 else parallelism
        filesystem = self._arrow_fs(fs)
        paths = files if filesystem is not None else [str(p) for p in files]
        if self.format is FileFormat.PARQUET:
            return ray.data.read_parquet(paths, filesystem=filesystem, override_num_blocks=blocks)
        if self.format is FileFormat.CSV:
            return ray.data.read_csv(paths, filesystem=filesystem, override_num_blocks=blocks)
        return ray.data.read_json(
            paths, filesystem=filesystem, lines=True, override_num_blocks=blocks
        )

    def read_query(self, sql: str, *, parallelism: int = -1) -> Dataset:
        self.query(sql, 0)  # a bad query fails here, in the driver
        source = DuckDBQueryDatasource(self._duckdb_views, sql)
        return cast(Dataset, ray.data.read_datasource(source))

    def table_sink(self, dataset: str, table: str, mode: WriteMode) -> StagedFilesDatasink:
        ref = self.ref(dataset, table)
        expected = self._precheck(dataset, table, mode)
        fs, root = self._fs()
        staging = f"{root}/{dataset}/_staging-{new_write_id()}"
        sink = StagedFilesDatasink(
            ref=ref,
            staging_uri=self._uri(fs, staging),
            fmt=self.format,
            expected_columns=expected,
            commit=lambda files, schema, _rows: self._publish(
                staging, files, schema, dataset, table, mode
            ),
            abort=lambda: _remove(fs, staging),
        )
        return sink

    def _uri(self, fs: Any, path: str) -> str:
        return path if self._is_local() else str(fs.unstrip_protocol(path))

    def _precheck(self, dataset: str, table: str, mode: WriteMode) -> list[str] | None:
        ref = self.ref(dataset, table)
        try:
            info = self.table_info(dataset, table)
        except NotFoundError:
            return None
        if mode is WriteMode.CREATE:
            raise AlreadyExistsError(f"table {ref} already exists (mode=create)", field="table")
        if mode is WriteMode.APPEND:
            return [c.name for c in info.columns]
        return None

    def _publish(
        self,
        staging: str,
        files: list[str],
        schema: pa.Schema | None,
        dataset: str,
        table: str,
        mode: WriteMode,
    ) -> None:
        fs, root = self._fs()
        ref = self.ref(dataset, table)
        target = f"{root}/{dataset}/{table}"
        existing = self._table_entries(fs, f"{root}/{dataset}").get(table)
        if not files:  # an empty write still creates a table with the data's schema
            writer = part_writer(
                self._uri(fs, f"{staging}/part-empty"), self.format, schema or pa.schema([])
            )
            writer.close()
        if existing is None:
            fs.mv(staging, target, recursive=True)
            return
        if mode is WriteMode.CREATE:
            raise AlreadyExistsError(f"table {ref} already exists (mode=create)", field="table")
        if mode is WriteMode.OVERWRITE:
            retired = f"{root}/{dataset}/_replaced-{new_write_id()}"
            fs.mv(existing, retired, recursive=True)
            fs.mv(staging, target, recursive=True)
            _remove(fs, retired)
            return
        if not fs.isdir(existing):
            raise FailedPreconditionError(
                f"table {ref} is a single file; append needs a table directory", field="table"
            )
        current = self.table_info(dataset, table)
        if schema is not None:
            check_columns(ref, [c.name for c in current.columns], schema.names)
        for path in self._data_files(fs, staging):
            fs.mv(path, f"{existing}/{_basename(path)}")

    def create_table_as(self, sql: str, dataset: str, table: str, mode: WriteMode) -> WriteResult:
        ref = self.ref(dataset, table)
        expected = self._precheck(dataset, table, mode)
        con = self._duckdb_views()
        try:
            result = run_duckdb_query(con, sql, 2**62)
        finally:
            con.close()
        if expected is not None:
            check_columns(ref, expected, result.schema.names)
        fs, root = self._fs()
        staging = f"{root}/{dataset}/_staging-{new_write_id()}"
        try:
            path = f"{staging}/part-00000.{_EXTENSIONS[self.format][0].lstrip('.')}"
            writer = part_writer(self._uri(fs, path), self.format, result.schema)
            writer.write(result)
            writer.close()
            self._publish(staging, [path], result.schema, dataset, table, mode)
        finally:
            _remove(fs, staging)
        return WriteResult(table=ref, mode=mode, rows_written=result.num_rows)


def _remove(fs: Any, path: str) -> None:
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _is_identifier(name: str) -> bool:
    return re.match(IDENTIFIER_PATTERN, name) is not None
