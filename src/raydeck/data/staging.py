"""Staged writes through files: Ray Data write tasks stream blocks into part files, one
committer in the driver publishes them.

Used by the ``duckdb`` kind (DuckDB allows one writing process per database file, so write
tasks never open it: the committer loads every part file in one transaction) and by the
``files`` kind (the committer moves the staged directory into place). The staging location
must be reachable from every node that runs write tasks and from the driver: on one host a
local directory is; across hosts use a shared file system or an object-store URI.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from typing import IO, Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.csv as pa_csv  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from pydantic_core import to_jsonable_python
from ray.data.block import Block, BlockAccessor
from ray.data.datasource.datasink import WriteResult as RayWriteResult

from raydeck.core.models.warehouse import FileFormat
from raydeck.data.base import TableDatasink, check_columns
from raydeck.runtime.artifacts import filesystem

__all__ = ["StagedFile", "StagedFilesDatasink", "part_writer"]

StagedFile = dict[str, Any]  # {"path": str, "rows": int, "schema": pa.Schema}
Committer = Callable[[list[str], pa.Schema | None, int], None]

_EXTENSION = {FileFormat.PARQUET: "parquet", FileFormat.CSV: "csv", FileFormat.JSONL: "jsonl"}


class _PartWriter:
    """Streams Arrow tables into one file of the given format."""

    def __init__(self, handle: IO[bytes], fmt: FileFormat, schema: pa.Schema) -> None:
        self.handle = handle
        self.format = fmt
        self.schema = schema
        self._parquet = pq.ParquetWriter(handle, schema) if fmt is FileFormat.PARQUET else None
        self._csv = pa_csv.CSVWriter(handle, schema) if fmt is FileFormat.CSV else None

    def write(self, table: pa.Table) -> None:
        if table.schema != self.schema:
            table = table.select(self.schema.names).cast(self.schema)
        if self._parquet is not None:
            self._parquet.write_table(table)
        elif self._csv is not None:
            self._csv.write_table(table)
        else:
            lines = (
                json.dumps(to_jsonable_python(row, fallback=str)) + "\n"
                for row in table.to_pylist()
            )
            self.handle.write("".join(lines).encode())

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._csv is not None:
            self._csv.close()
        self.handle.close()


def part_writer(uri: str, fmt: FileFormat, schema: pa.Schema) -> _PartWriter:
    fs, path = filesystem(uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    return _PartWriter(fs.open(path, "wb"), fmt, schema)


class StagedFilesDatasink(TableDatasink[StagedFile | None]):
    """Each write task writes its blocks, batch by batch, into one part file under
    ``staging_uri``; ``commit(files, schema, rows)`` runs once in the driver afterwards.

    ``expected_columns`` (the target table's, when rows are appended to an existing table)
    is checked on each task's first block, so a mismatched write fails before staging much.
    """

    def __init__(
        self,
        *,
        ref: str,
        staging_uri: str,
        fmt: FileFormat,
        expected_columns: list[str] | None,
        commit: Committer,
        abort: Callable[[], None],
    ) -> None:
        self.ref = ref
        self.staging_uri = staging_uri.rstrip("/")
        self.format = fmt
        self.expected_columns = expected_columns
        self._commit = commit
        self._abort = abort
        self.schema: pa.Schema | None = None
        self.rows_written = 0

    def on_write_start(self, schema: pa.Schema | None = None) -> None:
        # Ray passes the schema of the write's first input bundle, which is the schema
        # *before* any map fused into the write tasks: only a fallback for empty writes.
        # Columns are checked on each task's first block instead.
        self.schema = schema

    def write(self, blocks: Iterable[Block], ctx: Any) -> StagedFile | None:
        writer: _PartWriter | None = None
        uri = f"{self.staging_uri}/part-{ctx.task_idx:05d}-{uuid.uuid4().hex[:8]}"
        uri += f".{_EXTENSION[self.format]}"
        rows = 0
        try:
            for block in blocks:
                table = BlockAccessor.for_block(block).to_arrow()
                if writer is None:
                    if self.expected_columns is not None:
                        check_columns(self.ref, self.expected_columns, table.schema.names)
                    writer = part_writer(uri, self.format, table.schema)
                if table.num_rows:
                    writer.write(table)
                    rows += table.num_rows
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            return None
        return {"path": uri, "rows": rows, "schema": writer.schema}

    def on_write_complete(self, write_result: RayWriteResult[StagedFile | None]) -> None:
        staged = [r for r in write_result.write_returns if r is not None]
        files = [str(r["path"]) for r in staged if r["rows"] > 0]
        rows = sum(int(r["rows"]) for r in staged)
        schema = staged[0]["schema"] if staged else self.schema  # what the tasks wrote
        try:
            self._commit(files, schema, rows)
        finally:
            self._abort()  # the staging area is no longer needed either way
        self.rows_written = rows

    def on_write_failed(self, error: Exception) -> None:
        self._abort()
