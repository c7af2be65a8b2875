"""Warehouse tables in batch prediction: read the input table, write the predictions table.

Both go through ``raydeck.data``: the job resolves the connections with the RAYDECK_SERVER
and job-scoped RAYDECK_TOKEN its Ray job was given, and the warehouse's own staged,
all-or-nothing datasink writes the table (a failed job leaves the output table as it was).

An output table holds one row per input row: the input table's columns (for a table input;
``instance`` as JSON text for files) next to ``prediction`` and ``error``. Predictions are
stored with one type per table: numbers (and booleans) as DOUBLE, text as text, anything
else (lists, objects) as JSON text, so batches and write tasks agree on the column's type.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
from ray.data import Dataset
from ray.data.block import Block, BlockAccessor
from ray.data.datasource.datasink import Datasink
from ray.data.datasource.datasink import WriteResult as RayWriteResult

import raydeck.data as rdata
from raydeck.client import RaydeckClient
from raydeck.core.models.batch_predictions import BatchOutputMode
from raydeck.core.models.warehouse import TableRef
from raydeck.data.base import TableDatasink, write_through

__all__ = [
    "CountingTableSink",
    "read_input_table",
    "write_predictions_table",
]


def read_input_table(ref: str, client: RaydeckClient, num_cpus: float | None = None) -> Dataset:
    """The input table as a Dataset, read in parallel where its warehouse allows."""
    return rdata.read_table(ref, client=client, num_cpus=num_cpus)


class CountingTableSink(Datasink[dict[str, Any]]):
    """Forwards every hook to a warehouse's table datasink, counting rows and failed rows
    (non-null ``error``) of the blocks on their way through, so counts are exact."""

    def __init__(self, inner: TableDatasink[Any]) -> None:
        self.inner = inner
        self.rows = 0
        self.failed = 0

    @property
    def supports_distributed_writes(self) -> bool:
        return self.inner.supports_distributed_writes

    @property
    def min_rows_per_write(self) -> int | None:
        return self.inner.min_rows_per_write

    def get_name(self) -> str:
        return self.inner.get_name()

    def on_write_start(self, schema: pa.Schema | None = None) -> None:
        self.inner.on_write_start(schema)

    def write(self, blocks: Iterable[Block], ctx: Any) -> dict[str, Any]:
        counts = {"rows": 0, "failed": 0}

        def counted() -> Iterator[pa.Table]:
            for block in blocks:
                table = BlockAccessor.for_block(block).to_arrow()
                counts["rows"] += table.num_rows
                counts["failed"] += table.num_rows - table.column("error").null_count
                yield table

        inner = self.inner.write(counted(), ctx)
        return {"inner": inner, **counts}

    def on_write_complete(self, write_result: RayWriteResult[dict[str, Any]]) -> None:
        returns = write_result.write_returns
        self.inner.on_write_complete(
            replace(write_result, write_returns=[r["inner"] for r in returns])
        )
        self.rows = sum(int(r["rows"]) for r in returns)
        self.failed = sum(int(r["failed"]) for r in returns)

    def on_write_failed(self, error: Exception) -> None:
        self.inner.on_write_failed(error)


def write_predictions_table(
    ds: Dataset, ref: str, mode: BatchOutputMode, client: RaydeckClient, num_cpus: float | None
) -> CountingTableSink:
    """Write ``ds`` (rows from ``table_output``) to the table ``ref``; all or nothing."""
    parsed = TableRef.parse(ref, field="output.table")
    warehouse = rdata.connect(parsed.connection, client=client)
    dataset = parsed.dataset or warehouse.default_dataset
    sink = CountingTableSink(warehouse.table_sink(dataset, parsed.table, mode.write_mode))
    write_through(ds, sink, num_cpus=num_cpus)
    return sink
