"""raydeck batch-predict create|get|list|cancel|delete|logs"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from raydeck.cli.output import console, print_ids, print_json, print_table, wait_with_progress
from raydeck.client import RaydeckClient
from raydeck.core.models.batch_predictions import (
    TERMINAL_BATCH_STATES,
    BatchInputFormat,
    BatchOutputFormat,
    BatchOutputMode,
    BatchPredictionJob,
    BatchPredictionState,
)

app = typer.Typer(
    help="Predict over files or warehouse tables with a registered model.", no_args_is_help=True
)

Output = Annotated[str, typer.Option("--output", "-o", help="table|json|id")]


def _counts(job: BatchPredictionJob) -> str:
    c = job.counts
    return f"{c.rows_total} rows ({c.rows_succeeded} ok, {c.rows_failed} failed)"


def _show(job: BatchPredictionJob) -> None:
    console.print(f"[bold]{job.id}[/bold] {job.state.value}  {job.display_name}", highlight=False)
    console.print(f"  model:   {job.model_version} ({job.framework})", highlight=False)
    console.print(f"  cluster: {job.cluster}", highlight=False)
    if job.input.table is not None:
        console.print(f"  input:   table {job.input.table}", highlight=False)
    else:
        uris = ", ".join(job.input.uris or [])
        console.print(f"  input:   {uris} ({job.input.format})", highlight=False)
    if job.output.table is not None:
        console.print(
            f"  output:  table {job.output.table} ({job.output.mode.value})", highlight=False
        )
    else:
        console.print(f"  output:  {job.output.uri} ({job.output.format.value})", highlight=False)
    console.print(f"  rows:    {_counts(job)}", highlight=False)
    if job.state_reason:
        console.print(f"  reason:  {job.state_reason}", highlight=False)
    for path in job.output_files[:10]:
        console.print(f"  file:    {path}", highlight=False)
    if len(job.output_files) > 10:
        console.print(f"  … and {len(job.output_files) - 10} more files")


def _describe(job: BatchPredictionJob) -> str:
    return f"{job.state.value}, {_counts(job)}"


@app.command("create")
def create(
    model: Annotated[str, typer.Option("--model", "-m", help="model, model@version or @alias")],
    cluster: Annotated[str, typer.Option("--cluster", "-c", help="Cluster to run on.")],
    input_uris: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="File, directory, glob or URI (repeatable)."),
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", help="New or empty output directory.")
    ] = None,
    input_table: Annotated[
        str | None, typer.Option("--input-table", help="Input table conn.dataset.table.")
    ] = None,
    output_table: Annotated[
        str | None, typer.Option("--output-table", help="Output table conn.dataset.table.")
    ] = None,
    mode: Annotated[
        BatchOutputMode, typer.Option("--mode", help="Output table: create it, or append.")
    ] = BatchOutputMode.CREATE,
    input_format: Annotated[
        BatchInputFormat | None,
        typer.Option("--format", help="Input format (default: from the file extension)."),
    ] = None,
    output_format: Annotated[
        BatchOutputFormat, typer.Option("--output-format", help="Result file format.")
    ] = BatchOutputFormat.JSONL,
    feature_columns: Annotated[
        list[str] | None,
        typer.Option("--feature-column", help="Column fed to the model (repeatable, in order)."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per predict call.")] = 256,
    concurrency: Annotated[int, typer.Option(help="Model replicas.")] = 1,
    num_cpus: Annotated[
        float | None,
        typer.Option(
            "--cpus",
            help="CPUs per model replica (default: 1, or the largest free slot when smaller).",
        ),
    ] = None,
    num_cpus_alias: Annotated[
        float | None, typer.Option("--num-cpus", hidden=True, help="Old name of --cpus.")
    ] = None,
    num_gpus: Annotated[
        float, typer.Option("--gpus", "--num-gpus", help="GPUs per model replica.")
    ] = 0,
    name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
    max_failed_fraction: Annotated[
        float | None,
        typer.Option(
            "--max-failed-fraction",
            min=0,
            max=1,
            help="FAIL the job when more than this fraction of rows failed "
            "(0: any row; default: only when every row failed).",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until the job ends (exit 1 unless SUCCEEDED).")
    ] = False,
) -> None:
    """Run MODEL over --input files or an --input-table on CLUSTER, writing predictions to an
    --output directory or an --output-table."""
    with RaydeckClient() as client:
        job = client.batch_predictions.create(
            model=model,
            cluster=cluster,
            input=input_uris,
            output=output,
            input_table=input_table,
            output_table=output_table,
            output_mode=mode.value,
            input_format=input_format.value if input_format else None,
            output_format=output_format.value,
            feature_columns=feature_columns,
            batch_size=batch_size,
            concurrency=concurrency,
            num_cpus=num_cpus if num_cpus is not None else num_cpus_alias,
            num_gpus=num_gpus,
            display_name=name,
            max_failed_fraction=max_failed_fraction,
        )
        console.print(f"created {job.id} ({job.state.value})", highlight=False)
        if not wait:
            return
        job = wait_with_progress(
            f"batch prediction {job.id}",
            lambda: client.batch_predictions.get(job.id),
            lambda j: j.state in TERMINAL_BATCH_STATES,
            _describe,
            timeout=7 * 24 * 3600,
        )
    _show(job)
    console.print(f"{job.id} {_describe(job)}", highlight=False)  # the final line: state, counts
    if job.state is not BatchPredictionState.SUCCEEDED:
        raise typer.Exit(1)


@app.command("get")
def get(job_id: str, output: Output = "table") -> None:
    """Show one batch prediction job."""
    with RaydeckClient() as client:
        job = client.batch_predictions.get(job_id)
    print_json(job) if output == "json" else _show(job)


@app.command("list")
def list_jobs(
    state: Annotated[BatchPredictionState | None, typer.Option()] = None,
    cluster: Annotated[str | None, typer.Option("--cluster", "-c")] = None,
    output: Output = "table",
) -> None:
    """List batch prediction jobs."""
    with RaydeckClient() as client:
        page = client.batch_predictions.list(state=state, cluster=cluster, page_size=1000)
    if output == "id":  # one id per line, oldest first: for scripts
        print_ids(page.items)
        return
    if output == "json":
        print_json(page.items)
        return
    rows = [
        (
            j.id,
            j.model_version,
            j.cluster,
            j.state.value,
            j.counts.rows_total,
            j.counts.rows_failed,
            j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
        for j in page.items
    ]
    columns = ["id", "model", "cluster", "state", "rows", "failed", "created"]
    print_table("batch prediction jobs", columns, rows)


@app.command("cancel")
def cancel(job_id: str) -> None:
    """Cancel a queued or running job (rows already written stay)."""
    with RaydeckClient() as client:
        _show(client.batch_predictions.cancel(job_id))


@app.command("delete")
def delete(job_id: str) -> None:
    """Delete an ended job's record (its output files stay)."""
    with RaydeckClient() as client:
        job = client.batch_predictions.delete(job_id)
    console.print(f"batch prediction job {job.id} deleted", highlight=False)


@app.command("logs")
def logs(job_id: str) -> None:
    """Print the job's Ray logs (progress lines included)."""
    with RaydeckClient() as client:
        sys.stdout.write(client.batch_predictions.logs(job_id))
