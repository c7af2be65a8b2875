"""What batch prediction runs inside Ray's workers: the model UDF, the file datasink and the
progress counter actor (the driver side is ``batch_predict``).

Every fresh worker process that runs one of these imports this module, so it imports only
what the work needs (pyarrow, numpy, Ray Data's datasink, the framework's predictor): no
pydantic models, no SDK, no warehouse code unless a table is written. That import is paid
once per worker, several times per job, and was the main gap to hand-written ``map_batches``.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import ray
from ray.data import Datasink
from ray.data.block import BlockAccessor

from raydeck.runtime.artifacts import fetch_artifact, filesystem, join_uri
from raydeck.runtime.batch_rows import (
    Rows,
    output_table,
    predict_rows,
    rows_from_lines,
    rows_from_table,
)
from raydeck.runtime.predictors import load_predictor

__all__ = [
    "BatchPredictor",
    "InvalidCsvRow",
    "PredictionSink",
    "PredictorConfig",
    "table_output",
    "write_results",
]

JSONL = "jsonl"  # BatchInputFormat / BatchOutputFormat values (StrEnums compare equal)


class InvalidCsvRow:
    """pyarrow's ``invalid_row_handler``: a line with the wrong number of fields is kept as a
    failed row (recorded with the counter, synchronously, so it is counted exactly)."""

    def __init__(self, counter: Any) -> None:
        self.counter = counter

    def __call__(self, row: Any) -> str:
        reason = f"this line has {row.actual_columns} fields, the header has {row.expected_columns}"
        ray.get(self.counter.add_invalid.remote(str(row.text), reason))
        return "skip"


@dataclass(frozen=True)
class PredictorConfig:
    """The part of a ``BatchPredictSpec`` the model actors need, as plain values."""

    framework: str
    artifact_uri: str
    input_format: str
    feature_columns: list[str] | None
    parameters: dict[str, Any] | None
    table_input: bool
    table_output: bool


class BatchPredictor:
    """The ``map_batches`` UDF: loads the model once per actor, predicts pyarrow batches."""

    def __init__(self, config: PredictorConfig, counter: Any) -> None:
        cache = Path(tempfile.gettempdir()) / "raydeck-artifacts"
        artifact_dir = fetch_artifact(config.artifact_uri, cache)
        self.predictor = load_predictor(config.framework, artifact_dir)
        self.config = config
        self.counter = counter

    def _columns(self, table: pa.Table) -> list[str]:
        if self.config.feature_columns:
            return list(self.config.feature_columns)
        names = self.predictor.feature_names
        if names and set(names) <= set(table.column_names):
            return list(names)  # a model fitted on named features picks its own columns
        return list(table.column_names)

    def __call__(self, batch: pa.Table) -> pa.Table:
        columns: list[str] | None = None
        rows: Rows
        if self.config.input_format == JSONL:
            lines = batch.column("text").to_pylist()
            rows = rows_from_lines(lines, self.config.feature_columns, self.predictor.feature_names)
        else:
            columns = self._columns(batch)
            rows = rows_from_table(batch, columns)
        predictions = predict_rows(self.predictor, rows, self.config.parameters, columns)
        errors = [str(error) for error in rows.errors if error is not None]
        # progress only (the sink counts exactly), plus one example of what went wrong
        self.counter.add.remote(len(rows), len(errors), errors[0] if errors else None)
        predicted = output_table(rows, predictions)
        if self.config.table_output:
            return table_output(predicted, batch if self.config.table_input else None)
        return predicted


# ---- table output ----------------------------------------------------------------------------


def _stored_prediction(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    kind = column.type
    if (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_null(kind)
    ):
        return pc.cast(column, pa.float64())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pc.cast(column, pa.string())
    return pa.array(
        [None if v is None else json.dumps(v, default=str) for v in column.to_pylist()],
        pa.string(),
    )


def table_output(predicted: pa.Table, source: pa.Table | None) -> pa.Table:
    """The rows an output table stores for one batch: ``source``'s columns (the input
    table's batch) or ``instance``, then ``prediction`` and ``error``."""
    prediction = _stored_prediction(predicted.column("prediction"))
    error = predicted.column("error")
    base = predicted.select(["instance"]) if source is None else source
    return base.append_column("prediction", prediction).append_column("error", error)


# ---- file output -----------------------------------------------------------------------------


def _json_values(column: pa.ChunkedArray) -> list[str]:
    kind = column.type
    values = column.to_pylist()
    if values and (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_null(kind)
    ):
        return json.dumps(values)[1:-1].split(", ")  # one C-level dumps for the whole column
    return [json.dumps(v, default=str) for v in values]


def _jsonl(table: pa.Table) -> bytes:
    """Lines of ``{"instance": <the row's JSON>, "prediction": …, "error": …}``."""
    instances = table.column("instance").to_pylist()
    predictions = _json_values(table.column("prediction"))
    errors = ["null" if e is None else json.dumps(e) for e in table.column("error").to_pylist()]
    return "".join(
        f'{{"instance": {i}, "prediction": {p}, "error": {e}}}\n'
        for i, p, e in zip(instances, predictions, errors, strict=True)
    ).encode()


def _one_table(tables: list[pa.Table]) -> pa.Table:
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # predictions of different kinds per batch
        as_text = [
            t.set_column(1, "prediction", pa.array(_json_values(t.column("prediction"))))
            for t in tables
        ]
        return pa.concat_tables(as_text)


def write_results(uri: str, tables: Iterable[pa.Table], fmt: str) -> tuple[int, int]:
    """Write ``tables`` to the file ``uri``; (rows, failed rows). Nothing is written for 0 rows."""
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return 0, 0
    rows = sum(t.num_rows for t in tables)
    failed = sum(t.num_rows - t.column("error").null_count for t in tables)
    fs, path = filesystem(uri)
    with fs.open(path, "wb") as handle:
        if fmt == JSONL:
            for table in tables:
                handle.write(_jsonl(table))
        else:
            pq.write_table(_one_table(tables), handle)
    return rows, failed


class PredictionSink(Datasink[dict[str, Any]]):
    """One file per write task; each task returns its exact counts to ``on_write_complete``."""

    def __init__(self, directory: str, fmt: str, rows_per_file: int) -> None:
        self.directory = directory
        self.format = str(fmt)
        self.rows_per_file = rows_per_file
        self.prefix = f"predictions-{uuid.uuid4().hex[:8]}"
        self.rows = 0
        self.failed = 0
        self.files: list[str] = []

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def file_uri(self, part: str) -> str:
        return join_uri(self.directory, f"{self.prefix}-{part}.{self.format}")

    def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, Any]:
        uri = self.file_uri(f"{ctx.task_idx:05d}")  # a retried task rewrites the same file
        tables = (BlockAccessor.for_block(b).to_arrow() for b in blocks)
        rows, failed = write_results(uri, tables, self.format)
        return {"file": uri if rows else None, "rows": rows, "failed": failed}

    def on_write_complete(self, write_result: Any) -> None:
        for result in write_result.write_returns:
            self.rows += result["rows"]
            self.failed += result["failed"]
            if result["file"]:
                self.files.append(result["file"])
        self.files.sort()

    def add_invalid_rows(self, invalid: Sequence[tuple[str, str]]) -> None:
        """CSV lines pyarrow could not split into the header's fields, as failed rows."""
        rows = Rows(
            [None] * len(invalid), [json.dumps(t) for t, _ in invalid], [r for _, r in invalid]
        )
        uri = self.file_uri("invalid-rows")
        count, failed = write_results(uri, [output_table(rows, [None] * len(rows))], self.format)
        self.rows += count
        self.failed += failed
        self.files.append(uri)
