"""Batch prediction inside Ray: ``python -m raydeck.runtime.batch_predict --spec '<json>'``.

read (JSONL as text lines, CSV as text columns, Parquet as typed columns, or a warehouse
table through ``raydeck.data``) → ``map_batches`` over an actor pool that loads the model
once per actor → a datasink that writes one file per write task (or the warehouse's staged
table datasink, see ``batch_tables``) and returns exact row counts → ``_summary.json`` in
the status directory (the output directory, or one the control plane chose for a table).

Nothing a row holds can fail the job: unparseable JSON lines, CSV lines with the wrong number
of fields and rows the model rejects all come out as rows with an ``error`` and a null
``prediction`` (see ``batch_rows``). Progress goes to stdout (the job's logs) and to
``<output>/_progress.json`` for the control plane.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import ray
import ray.data
from ray.data import Datasink
from ray.data.block import BlockAccessor

from raydeck.client import RaydeckClient
from raydeck.core.errors import InvalidArgumentError, RaydeckError
from raydeck.core.models.batch_predictions import (
    BatchInputFormat,
    BatchOutputFormat,
    BatchPredictSpec,
)
from raydeck.runtime.artifacts import fetch_artifact, filesystem
from raydeck.runtime.batch_files import (
    ERROR_MARKER,
    PROGRESS_FILE,
    SUMMARY_FILE,
    csv_header,
    expand_input_uris,
    file_columns,
    infer_format,
    join_uri,
    output_conflict,
    write_json_file,
)
from raydeck.runtime.batch_rows import (
    Rows,
    output_table,
    predict_rows,
    rows_from_lines,
    rows_from_table,
)
from raydeck.runtime.batch_tables import (
    read_input_table,
    table_output,
    write_predictions_table,
)
from raydeck.runtime.predictors import load_predictor

__all__ = [
    "BatchPredictor",
    "PredictionSink",
    "ProgressCounter",
    "failure_reason",
    "main",
    "run",
]

ROWS_PER_FILE = 100_000  # rows each write task gathers before writing one output file
PROGRESS_EVERY_BATCHES = 10


class ProgressCounter:
    """A small actor the model actors report to; the driver reads it for progress lines."""

    def __init__(self) -> None:
        self.rows = 0
        self.failed = 0
        self.batches = 0
        self.invalid: list[tuple[str, str]] = []

    def add(self, rows: int, failed: int) -> None:
        self.rows += rows
        self.failed += failed
        self.batches += 1

    def add_invalid(self, text: str, reason: str) -> bool:
        self.invalid.append((text, reason))
        self.rows += 1
        self.failed += 1
        return True

    def totals(self) -> dict[str, int]:
        return {"rows": self.rows, "failed": self.failed, "batches": self.batches}

    def invalid_rows(self) -> list[tuple[str, str]]:
        return list(self.invalid)


_RemoteCounter: Any = ray.remote(num_cpus=0)(ProgressCounter)


class _InvalidCsvRow:
    """pyarrow's ``invalid_row_handler``: a line with the wrong number of fields is kept as a
    failed row (recorded with the counter, synchronously, so it is counted exactly)."""

    def __init__(self, counter: Any) -> None:
        self.counter = counter

    def __call__(self, row: Any) -> str:
        reason = f"this line has {row.actual_columns} fields, the header has {row.expected_columns}"
        ray.get(self.counter.add_invalid.remote(str(row.text), reason))
        return "skip"


class BatchPredictor:
    """The ``map_batches`` UDF: loads the model once per actor, predicts pyarrow batches."""

    def __init__(self, spec_json: str, counter: Any) -> None:
        spec = BatchPredictSpec.model_validate_json(spec_json)
        cache = Path(tempfile.gettempdir()) / "raydeck-artifacts"
        self.predictor = load_predictor(spec.framework, fetch_artifact(spec.artifact_uri, cache))
        self.format = spec.input.format
        self.columns = spec.input.feature_columns
        self.parameters = spec.parameters
        self.counter = counter
        self.table_input = spec.input.table is not None
        self.table_output = spec.output.table is not None

    def _columns(self, table: pa.Table) -> list[str]:
        if self.columns:
            return list(self.columns)
        names = self.predictor.feature_names
        if names and set(names) <= set(table.column_names):
            return list(names)  # a model fitted on named features picks its own columns
        return list(table.column_names)

    def __call__(self, batch: pa.Table) -> pa.Table:
        columns: list[str] | None = None
        rows: Rows
        if self.format is BatchInputFormat.JSONL:
            lines = batch.column("text").to_pylist()
            rows = rows_from_lines(lines, self.columns, self.predictor.feature_names)
        else:
            columns = self._columns(batch)
            rows = rows_from_table(batch, columns)
        predictions = predict_rows(self.predictor, rows, self.parameters, columns)
        failed = sum(error is not None for error in rows.errors)
        self.counter.add.remote(len(rows), failed)  # progress only: the sink counts exactly
        predicted = output_table(rows, predictions)
        if self.table_output:
            return table_output(predicted, batch if self.table_input else None)
        return predicted


# ---- output ----------------------------------------------------------------------------------


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


def write_results(uri: str, tables: Iterable[pa.Table], fmt: BatchOutputFormat) -> tuple[int, int]:
    """Write ``tables`` to the file ``uri``; (rows, failed rows). Nothing is written for 0 rows."""
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return 0, 0
    rows = sum(t.num_rows for t in tables)
    failed = sum(t.num_rows - t.column("error").null_count for t in tables)
    fs, path = filesystem(uri)
    with fs.open(path, "wb") as handle:
        if fmt is BatchOutputFormat.JSONL:
            for table in tables:
                handle.write(_jsonl(table))
        else:
            pq.write_table(_one_table(tables), handle)
    return rows, failed


class PredictionSink(Datasink[dict[str, Any]]):
    """One file per write task; each task returns its exact counts to ``on_write_complete``."""

    def __init__(self, directory: str, fmt: BatchOutputFormat, rows_per_file: int) -> None:
        self.directory = directory
        self.format = fmt
        self.rows_per_file = rows_per_file
        self.prefix = f"predictions-{uuid.uuid4().hex[:8]}"
        self.rows = 0
        self.failed = 0
        self.files: list[str] = []

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def file_uri(self, part: str) -> str:
        return join_uri(self.directory, f"{self.prefix}-{part}.{self.format.value}")

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


# ---- driver ----------------------------------------------------------------------------------


def _check_columns(files: list[str], fmt: BatchInputFormat, wanted: list[str] | None) -> None:
    present = file_columns(files[0], fmt)
    if wanted is None or present is None:
        return
    missing = [c for c in wanted if c not in present]
    if missing:
        raise InvalidArgumentError(
            f"feature column {missing[0]!r} is not in {files[0]} "
            f"(its columns: {', '.join(present)[:300]})",
            field="input.feature_columns",
        )


def read_input(
    files: list[str], fmt: BatchInputFormat, columns: list[str] | None, counter: Any
) -> Any:
    if fmt is BatchInputFormat.JSONL:
        return ray.data.read_text(files, drop_empty_lines=True)
    if fmt is BatchInputFormat.CSV:
        # Every column as text: a stray "n/a" in a numeric column must fail its row, not the
        # whole read (pyarrow would infer float64 from the first block and give up later).
        header = csv_header(files[0])
        return ray.data.read_csv(
            files,
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=True,
                include_columns=columns or [],
            ),
            parse_options=pacsv.ParseOptions(invalid_row_handler=_InvalidCsvRow(counter)),
        )
    return ray.data.read_parquet(files, columns=columns)


class _ProgressReporter(threading.Thread):
    """Prints a progress line every few batches and keeps ``_progress.json`` current."""

    def __init__(self, counter: Any, output: str, every_batches: int, poll: float) -> None:
        super().__init__(name="batch-predict-progress", daemon=True)
        self.counter = counter
        self.output = output
        self.every_batches = every_batches
        self.poll = poll
        self.started = time.monotonic()
        self.stopped = threading.Event()
        self.last: dict[str, int] = {}
        self.printed_batches = 0

    def publish(self, rows: int, failed: int, batches: int, *, final: bool = False) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        progress = {
            "rows_total": rows,
            "rows_succeeded": rows - failed,
            "rows_failed": failed,
            "batches": batches,
            "seconds": round(elapsed, 3),
            "done": final,
        }
        write_json_file(join_uri(self.output, PROGRESS_FILE), progress)
        if final or batches >= self.printed_batches + self.every_batches:
            self.printed_batches = batches
            print(
                f"progress: {rows} rows ({rows - failed} ok, {failed} failed) in {batches} "
                f"batches, {rows / elapsed:.0f} rows/s{' (done)' if final else ''}",
                flush=True,
            )

    def report(self) -> None:
        totals: dict[str, int] = ray.get(self.counter.totals.remote(), timeout=30)
        if totals != self.last:
            self.last = totals
            self.publish(totals["rows"], totals["failed"], totals["batches"])

    def run(self) -> None:
        while not self.stopped.wait(self.poll):
            try:
                self.report()
            except Exception as exc:  # progress is best effort; the job goes on
                print(f"progress unavailable: {type(exc).__name__}: {exc}", flush=True)


def run(
    spec: BatchPredictSpec,
    *,
    every_batches: int = PROGRESS_EVERY_BATCHES,
    poll_seconds: float = 1.0,
    rows_per_file: int = ROWS_PER_FILE,
    client: RaydeckClient | None = None,
) -> dict[str, Any]:
    """Predict every row of ``spec.input`` into ``spec.output``; returns the summary it writes.

    Needs a connected Ray (``ray.init()``); raises RaydeckError for unusable input/output.
    Tables' connections are resolved with ``client`` (default: ``RaydeckClient()`` from the
    job's RAYDECK_SERVER / RAYDECK_TOKEN), in this driver only.
    """
    started = time.monotonic()
    own_client = client is None and bool(spec.input.table or spec.output.table)
    if own_client:
        client = RaydeckClient()
    files: list[str] = []
    counter = _RemoteCounter.remote()
    if spec.input.table is not None:
        assert client is not None
        source = f"table {spec.input.table}"
        rows_in = read_input_table(spec.input.table, client)
    else:
        files = expand_input_uris(spec.input.uris or [])
        fmt = spec.input.format or infer_format(files)
        spec = spec.model_copy(update={"input": spec.input.model_copy(update={"format": fmt})})
        _check_columns(files, fmt, spec.input.feature_columns)
        source = f"{len(files)} file(s)"
        rows_in = read_input(files, fmt, spec.input.feature_columns, counter)
    status = spec.status_directory
    if spec.output.uri is not None:
        conflict = output_conflict(spec.output.uri)
        if conflict:
            raise InvalidArgumentError(conflict, field="output.uri")
    fs, status_path = filesystem(status)
    fs.makedirs(status_path, exist_ok=True)
    target = spec.output.table or spec.output.uri
    print(f"batch prediction {spec.job_id}: {spec.model_version} over {source} into {target}")

    dataset = rows_in.map_batches(
        BatchPredictor,
        fn_constructor_kwargs={"spec_json": spec.model_dump_json(), "counter": counter},
        batch_size=spec.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=spec.concurrency),
        num_cpus=spec.num_cpus,
        num_gpus=spec.num_gpus or None,
    )
    reporter = _ProgressReporter(counter, status, every_batches, poll_seconds)
    reporter.start()
    try:
        if spec.output.table is not None:
            assert client is not None
            table_sink = write_predictions_table(
                dataset, spec.output.table, spec.output.mode, client
            )
            rows, failed, output_files = table_sink.rows, table_sink.failed, []
        else:
            assert spec.output.uri is not None
            sink = PredictionSink(spec.output.uri, spec.output.format, max(rows_per_file, 1))
            dataset.write_datasink(sink)
            invalid = ray.get(counter.invalid_rows.remote())
            if invalid:
                sink.add_invalid_rows(invalid)
            rows, failed, output_files = sink.rows, sink.failed, sink.files
    finally:
        reporter.stopped.set()
        reporter.join()
        if own_client and client is not None:
            client.close()
    batches = ray.get(counter.totals.remote())["batches"]
    ray.kill(counter)
    reporter.publish(rows, failed, batches, final=True)  # exact, from the sink
    seconds = time.monotonic() - started
    summary = {
        "job_id": spec.job_id,
        "model_version": spec.model_version,
        "rows_total": rows,
        "rows_succeeded": rows - failed,
        "rows_failed": failed,
        "output_files": output_files,
        "output_table": spec.output.table,
        "input_files": len(files),
        "input_table": spec.input.table,
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds, 1) if seconds > 0 else None,
    }
    write_json_file(join_uri(status, SUMMARY_FILE), summary)
    return summary


_NOISE = ("Traceback", "During handling", "The above exception", "^", "~")


def failure_reason(exc: BaseException) -> str:
    """One line for the job's state_reason: the innermost error Ray wrapped, without its
    traceback (Ray puts the worker's formatted traceback into the driver's exception text)."""
    for candidate in (exc, getattr(exc, "cause", None)):
        if isinstance(candidate, RaydeckError):
            return (candidate.message.splitlines() or [candidate.code])[0][:1000]
    lines = [
        line.strip()
        for line in str(exc).splitlines()
        if line.strip()
        and not line[:1].isspace()
        and not line.startswith(_NOISE)
        and any(ch.isalnum() for ch in line)
    ]
    if not lines:
        return type(exc).__name__
    if lines == [str(exc).strip()]:  # a plain exception: say what kind
        return f"{type(exc).__name__}: {lines[0]}"[:1000]
    last = re.sub(r"^raydeck\.core\.errors\.\w+: ", "", lines[-1])  # our own errors: message
    last = re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=\w+(?:Error|Exception): )", "", last)  # a.b.XError
    return last[:1000]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raydeck.runtime.batch_predict")
    parser.add_argument("--spec", required=True, help="BatchPredictSpec as JSON")
    args = parser.parse_args(argv)
    reason: str | None = None
    try:
        spec = BatchPredictSpec.model_validate_json(args.spec)
        ray.init()
        summary = run(spec)
    except Exception as exc:
        reason = failure_reason(exc)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    if reason is not None:
        # The last line of the logs: Ray puts it in the job's message, the server shows it.
        sys.stdout.flush()
        print(f"{ERROR_MARKER}{reason}", flush=True)
        return 1
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
