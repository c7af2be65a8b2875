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
import threading
import time
from typing import TYPE_CHECKING, Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]
import ray
import ray.data

from raydeck.core.errors import InvalidArgumentError, RaydeckError
from raydeck.core.models.batch_predictions import BatchInputFormat, BatchPredictSpec
from raydeck.runtime.artifacts import filesystem
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
from raydeck.runtime.batch_progress import RemoteCounter
from raydeck.runtime.batch_workers import (
    BatchPredictor,
    InvalidCsvRow,
    PredictionSink,
    PredictorConfig,
)

if TYPE_CHECKING:
    from raydeck.client import RaydeckClient

__all__ = ["failure_reason", "main", "run"]

ROWS_PER_FILE = 100_000  # rows each write task gathers before writing one output file
PROGRESS_EVERY_BATCHES = 10

ROWS_PER_FILE = 100_000  # rows each write task gathers before writing one output file
PROGRESS_EVERY_BATCHES = 10


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


# CPUs each read and write task reserves. Ray Data's default of 1 left a job stuck once its
# model replica had taken the one whole free CPU and the rest of the cluster was in halves
# (two 0.5-CPU deployments on 1-CPU workers): reads and writes are mostly I/O.
IO_TASK_CPUS = 0.25


def io_cpus(spec: BatchPredictSpec) -> float:
    """CPUs per read/write task: IO_TASK_CPUS, or the replica's own when it takes less."""
    return min(IO_TASK_CPUS, spec.num_cpus) if spec.num_cpus > 0 else IO_TASK_CPUS


def read_input(
    files: list[str],
    fmt: BatchInputFormat,
    columns: list[str] | None,
    counter: Any,
    num_cpus: float | None = None,
) -> Any:
    if fmt is BatchInputFormat.JSONL:
        return ray.data.read_text(files, drop_empty_lines=True, num_cpus=num_cpus)
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
            parse_options=pacsv.ParseOptions(invalid_row_handler=InvalidCsvRow(counter)),
            num_cpus=num_cpus,
        )
    return ray.data.read_parquet(files, columns=columns, num_cpus=num_cpus)


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


def _predictor_config(spec: BatchPredictSpec) -> PredictorConfig:
    return PredictorConfig(
        framework=spec.framework,
        artifact_uri=spec.artifact_uri,
        input_format=str(spec.input.format or ""),
        feature_columns=spec.input.feature_columns,
        parameters=spec.parameters,
        table_input=spec.input.table is not None,
        table_output=spec.output.table is not None,
    )


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
        from raydeck.client import RaydeckClient  # tables only: files need no control plane

        client = RaydeckClient()
    files: list[str] = []
    counter = RemoteCounter.remote()
    if spec.input.table is not None:
        assert client is not None
        source = f"table {spec.input.table}"
        from raydeck.runtime.batch_tables import read_input_table

        rows_in = read_input_table(spec.input.table, client, io_cpus(spec))
    else:
        files = expand_input_uris(spec.input.uris or [])
        fmt = spec.input.format or infer_format(files)
        spec = spec.model_copy(update={"input": spec.input.model_copy(update={"format": fmt})})
        _check_columns(files, fmt, spec.input.feature_columns)
        source = f"{len(files)} file(s)"
        rows_in = read_input(files, fmt, spec.input.feature_columns, counter, io_cpus(spec))
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
        fn_constructor_kwargs={"config": _predictor_config(spec), "counter": counter},
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
            from raydeck.runtime.batch_tables import write_predictions_table

            table_sink = write_predictions_table(
                dataset, spec.output.table, spec.output.mode, client, io_cpus(spec)
            )
            rows, failed, output_files = table_sink.rows, table_sink.failed, []
        else:
            assert spec.output.uri is not None
            sink = PredictionSink(spec.output.uri, spec.output.format, max(rows_per_file, 1))
            dataset.write_datasink(sink, ray_remote_args={"num_cpus": io_cpus(spec)})
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
    first_error = ray.get(counter.error_example.remote())
    ray.kill(counter)
    reporter.publish(rows, failed, batches, final=True)  # exact, from the sink
    seconds = time.monotonic() - started
    summary = {
        "job_id": spec.job_id,
        "model_version": spec.model_version,
        "rows_total": rows,
        "rows_succeeded": rows - failed,
        "rows_failed": failed,
        "first_error": first_error if failed else None,
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
