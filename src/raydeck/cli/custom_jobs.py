"""raydeck custom-jobs create|get|list|cancel|delete|logs|metrics|artifacts"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from raydeck.cli.output import console, print_ids, print_json, print_table, wait_with_progress
from raydeck.cli.specs import parse_pairs
from raydeck.cli.tracking import Dest, Download, show_metrics, show_or_download
from raydeck.client import RaydeckClient
from raydeck.core.errors import NotFoundError
from raydeck.core.models.training import (
    TERMINAL_TRAINING_STATES,
    CustomJob,
    CustomJobCreate,
    MetricPoint,
    TrainingState,
)

__all__ = ["app", "follow_log", "job_body"]

app = typer.Typer(
    help="Run training code (module, script or command) on a cluster.", no_args_is_help=True
)

Output = Annotated[str, typer.Option("--output", "-o", help="table|json|id")]
FOLLOW_POLL_SECONDS = 1.0


def _latest(points: list[MetricPoint]) -> str:
    last: dict[str, MetricPoint] = {}
    for point in points:
        last[point.metric] = point
    return ", ".join(
        f"{p.metric}={p.value:.6g}" + ("" if p.step is None else f" (step {p.step})")
        for p in last.values()
    )


def _show(job: CustomJob, metrics: list[MetricPoint] | None = None) -> None:
    console.print(f"[bold]{job.id}[/bold] {job.state.value}  {job.display_name}", highlight=False)
    where = f"{job.cluster} (ephemeral)" if job.ephemeral_cluster else job.cluster
    console.print(f"  cluster:  {where}", highlight=False)
    console.print(f"  attempt:  {job.attempt}", highlight=False)
    console.print(f"  output:   {job.base_output_dir}", highlight=False)
    console.print(f"  replicas: {', '.join(r.name for r in job.replicas)}", highlight=False)
    if metrics:
        console.print(f"  metrics:  {_latest(metrics)}", highlight=False)
    if job.state_reason:
        console.print(f"  reason:   {job.state_reason}", highlight=False)


def _describe(job: CustomJob) -> str:
    text = job.state.value + (f" (attempt {job.attempt})" if job.attempt else "")
    return f"{text}: {job.state_reason}" if job.state_reason else text


def job_body(
    *,
    cluster: str | None,
    ephemeral: bool,
    module: str | None,
    package_dir: Path | None,
    script: Path | None,
    command: str | None,
    args: list[str],
    replicas: int,
    train_workers: int,
    cpus: float,
    gpus: float,
    env: dict[str, str],
    working_dir: Path | None,
) -> dict[str, Any]:
    """The request from flags: pool 0 runs the program; ``replicas`` > 1 adds a pool of
    ``replicas - 1`` more copies; ``train_workers`` adds a Ray Train worker pool."""
    if (cluster is None) == (not ephemeral):
        raise typer.BadParameter("give --cluster NAME or --ephemeral", param_hint="--cluster")
    programs = [p for p in (module, script, command) if p]
    if len(programs) != 1:
        raise typer.BadParameter("give one of --module, --script, --command", param_hint="--module")
    if package_dir is not None and module is None:
        raise typer.BadParameter("--package-dir goes with --module", param_hint="--package-dir")
    pool: dict[str, Any] = {"machine_spec": {"cpus": cpus, "gpus": gpus}, "args": args}
    if module:
        pool["python_module"] = {"module_name": module}
        if package_dir is not None:
            pool["python_module"]["package_dir"] = str(package_dir.resolve())
    elif script is not None:
        pool["script"] = {"path": str(script.resolve())}
    else:
        pool["command"] = shlex.split(command or "")
    if env:
        pool["env"] = env
    if working_dir is not None:
        pool["working_dir"] = str(working_dir.resolve())
    pools = [pool]
    if replicas > 1:
        pools.append({**pool, "replica_count": replicas - 1})
    if train_workers:
        pools.append({"replica_count": train_workers, "machine_spec": {"cpus": cpus, "gpus": gpus}})
    return {"cluster": cluster, "worker_pool_specs": pools}


@app.command("create", no_args_is_help=True)
def create(
    args: Annotated[
        list[str] | None, typer.Argument(help="Arguments for the program, after `--`.")
    ] = None,
    cluster: Annotated[str | None, typer.Option("--cluster", "-c", help="Cluster to run on.")] = (
        None
    ),
    ephemeral: Annotated[
        bool, typer.Option("--ephemeral", help="Create a cluster for the job; delete it after.")
    ] = False,
    module: Annotated[str | None, typer.Option("--module", "-m", help="python -m MODULE")] = None,
    package_dir: Annotated[
        Path | None, typer.Option("--package-dir", help="Directory holding the module.")
    ] = None,
    script: Annotated[Path | None, typer.Option("--script", help="Script to run.")] = None,
    command: Annotated[
        str | None, typer.Option("--command", help='Command line, e.g. "bash train.sh".')
    ] = None,
    replicas: Annotated[
        int, typer.Option("--replicas", min=1, help="Processes running the program (chief + N-1).")
    ] = 1,
    train_workers: Annotated[
        int, typer.Option("--train-workers", min=0, help="Ray Train workers for the chief.")
    ] = 0,
    cpus: Annotated[float, typer.Option("--cpus", help="CPUs per replica.")] = 1,
    gpus: Annotated[float, typer.Option("--gpus", help="GPUs per replica.")] = 0,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE")] = None,
    working_dir: Annotated[
        Path | None, typer.Option("--working-dir", help="Directory the program starts in.")
    ] = None,
    base_output_dir: Annotated[
        Path | None,
        typer.Option("--base-output-dir", help="AIP_MODEL_DIR etc. go under it."),
    ] = None,
    max_restarts: Annotated[
        int, typer.Option("--max-restarts", min=0, help="Restarts after a failure.")
    ] = 0,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds before the job is failed.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="key=value")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the job ends.")] = False,
) -> None:
    """Run a program: raydeck custom-jobs create -c CLUSTER --script train.py -- --lr=0.1"""
    body = job_body(
        cluster=cluster,
        ephemeral=ephemeral,
        module=module,
        package_dir=package_dir,
        script=script,
        command=command,
        args=list(args or []),
        replicas=replicas,
        train_workers=train_workers,
        cpus=cpus,
        gpus=gpus,
        env=parse_pairs(env, "--env"),
        working_dir=working_dir,
    )
    body["scheduling"] = {"max_restarts": max_restarts, "timeout_seconds": timeout}
    if base_output_dir is not None:
        body["base_output_dir"] = str(base_output_dir.resolve())
    body["display_name"] = name
    body["labels"] = parse_pairs(label, "--label")
    with RaydeckClient() as client:
        job = client.custom_jobs.create(CustomJobCreate.model_validate(body))
        console.print(f"created {job.id} ({job.state.value}) on {job.cluster}", highlight=False)
        if not wait:
            return
        job = wait_with_progress(
            f"custom job {job.id}",
            lambda: client.custom_jobs.get(job.id),
            lambda j: j.state in TERMINAL_TRAINING_STATES,
            _describe,
            timeout=30 * 24 * 3600,
        )
        _show(job, client.custom_jobs.metrics(job.id))
    if job.state is not TrainingState.SUCCEEDED:
        raise typer.Exit(1)


@app.command("get")
def get(job_id: str, output: Output = "table") -> None:
    """Show one custom job, with the last value of each metric it reported."""
    with RaydeckClient() as client:
        job = client.custom_jobs.get(job_id)
        metrics = client.custom_jobs.metrics(job_id) if output != "json" else []
    print_json(job) if output == "json" else _show(job, metrics)


@app.command("list")
def list_jobs(
    state: Annotated[TrainingState | None, typer.Option()] = None,
    label: Annotated[str | None, typer.Option("--label", "-l", help="key=value")] = None,
    metric: Annotated[
        str | None, typer.Option("--metric", help="Add a column: the last value of METRIC.")
    ] = None,
    output: Output = "table",
) -> None:
    """List custom jobs (compare runs: --label team=ml --metric loss)."""
    with RaydeckClient() as client:
        page = client.custom_jobs.list(state=state, label=label, page_size=1000)
        last: dict[str, str] = {}
        if metric:
            for j in page.items:
                points = client.custom_jobs.metrics(j.id, metric)
                last[j.id] = f"{points[-1].value:.6g}" if points else ""
    if output == "id":  # one id per line, oldest first: for scripts
        print_ids(page.items)
        return
    if output == "json":
        print_json(page.items)
        return
    rows = [
        (
            j.id,
            j.display_name,
            j.cluster,
            j.state.value,
            j.attempt,
            j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            *([last[j.id]] if metric else []),
        )
        for j in page.items
    ]
    columns = ["id", "name", "cluster", "state", "attempt", "created"]
    columns += [metric] if metric else []
    print_table("custom jobs", columns, rows)


@app.command("cancel")
def cancel(job_id: str) -> None:
    """Cancel a queued or running job (CANCELLING until its processes are stopped)."""
    with RaydeckClient() as client:
        _show(client.custom_jobs.cancel(job_id))


@app.command("delete")
def delete(job_id: str) -> None:
    """Delete an ended job's record and metrics (its output directory stays)."""
    with RaydeckClient() as client:
        job = client.custom_jobs.delete(job_id)
    console.print(f"custom job {job.id} deleted", highlight=False)


def follow_log(read: Callable[[], str], ended: Callable[[], bool]) -> None:
    """Print ``read()`` as it grows until ``ended()``; a log not there yet reads as empty."""
    sent = 0
    while True:
        finished = ended()  # read after the check, so the last lines are never missed
        try:
            text = str(read())
        except NotFoundError:
            text = ""
        if len(text) > sent:
            sys.stdout.write(text[sent:])
            sys.stdout.flush()
            sent = len(text)
        if finished:
            return
        time.sleep(FOLLOW_POLL_SECONDS)


@app.command("logs")
def logs(
    job_id: str,
    replica: Annotated[
        str, typer.Option("--replica", "-r", help="workerpool<pool>-<index>")
    ] = "workerpool0-0",
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream until the job ends.")
    ] = False,
) -> None:
    """Print one replica's output (the chief's by default)."""
    with RaydeckClient() as client:
        if not follow:
            sys.stdout.write(client.custom_jobs.logs(job_id, replica))
            return
        follow_log(
            lambda: client.custom_jobs.logs(job_id, replica),
            lambda: client.custom_jobs.get(job_id).state in TERMINAL_TRAINING_STATES,
        )


@app.command("metrics")
def metrics(
    job_id: str,
    metric: Annotated[str | None, typer.Option("--metric", "-m", help="Only this metric.")] = None,
    output: Output = "table",
) -> None:
    """The job's metric series: every point it reported, with its step."""
    with RaydeckClient() as client:
        points = client.custom_jobs.metrics(job_id, metric)
    show_metrics(f"metrics of {job_id}", points, output)


@app.command("artifacts")
def artifacts(
    job_id: str,
    download: Download = None,
    dest: Dest = Path("."),
    output: Output = "table",
) -> None:
    """List the files the job wrote (model, checkpoints, logs, metrics), or download some."""
    with RaydeckClient() as client:
        show_or_download(
            f"artifacts of {job_id}",
            client.custom_jobs.artifacts(job_id),
            lambda path, to: client.custom_jobs.download_artifact(job_id, path, to),
            download,
            dest,
            output,
        )
