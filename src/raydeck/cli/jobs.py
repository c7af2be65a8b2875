"""raydeck jobs submit|list|get|logs|stop|delete"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from raydeck.cli.output import console, print_ids, print_json, print_table, wait_with_progress
from raydeck.client import RaydeckClient
from raydeck.core.models import Job, JobState
from raydeck.core.models.jobs import TERMINAL_JOB_STATES

app = typer.Typer(help="Run Ray jobs on a cluster.", no_args_is_help=True)


def _show(job: Job) -> None:
    console.print(f"[bold]{job.id}[/bold] {job.state.value} on {job.cluster}")
    console.print(f"  submission_id: {job.submission_id}")
    console.print(f"  entrypoint:    {job.entrypoint}", highlight=False)
    if job.message:
        console.print(f"  message:       {job.message}", highlight=False)


def _follow(client: RaydeckClient, job_id: str) -> Job:
    for chunk in client.jobs.follow_logs(job_id):
        sys.stdout.write(chunk)
        sys.stdout.flush()
    return client.jobs.wait(job_id)


@app.command("submit")
def submit(
    entrypoint: Annotated[list[str], typer.Argument(help="Command to run, after `--`.")],
    cluster: Annotated[str, typer.Option("--cluster", "-c", help="Cluster to run on.")],
    working_dir: Annotated[
        Path | None, typer.Option("--working-dir", "-w", help="Directory uploaded to the job.")
    ] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE")] = None,
    pip: Annotated[list[str] | None, typer.Option("--pip", help="pip requirement")] = None,
    submission_id: Annotated[str | None, typer.Option(help="Ray submission id.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the job ends.")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream logs until it ends.")
    ] = False,
) -> None:
    """Submit a job: raydeck jobs submit -c CLUSTER -w . -- python train.py"""
    runtime_env: dict[str, object] = {}
    if env:
        runtime_env["env_vars"] = dict(item.partition("=")[::2] for item in env)
    if pip:
        runtime_env["pip"] = list(pip)
    with RaydeckClient() as client:
        job = client.jobs.submit(
            cluster,
            shlex.join(entrypoint),
            working_dir=working_dir,
            runtime_env=runtime_env,
            submission_id=submission_id,
        )
        console.print(f"submitted {job.id} (ray submission {job.submission_id})", highlight=False)
        if follow:
            job = _follow(client, job.id)
        elif wait:
            job = wait_with_progress(
                f"job {job.id}",
                lambda: client.jobs.get(job.id),
                lambda j: j.state in TERMINAL_JOB_STATES,
                lambda j: j.state.value,
                timeout=24 * 3600,
            )
    if follow or wait:
        _show(job)
        if job.state is not JobState.SUCCEEDED:
            raise typer.Exit(1)


@app.command("list")
def list_jobs(
    cluster: Annotated[str | None, typer.Option("--cluster", "-c")] = None,
    state: Annotated[JobState | None, typer.Option()] = None,
    output: Annotated[str, typer.Option("--output", "-o")] = "table",
) -> None:
    """List jobs."""
    with RaydeckClient() as client:
        page = client.jobs.list(cluster=cluster, state=state, page_size=1000)
    if output == "id":  # one id per line, oldest first: for scripts
        print_ids(page.items)
        return
    if output == "json":
        print_json(page.items)
        return
    rows = [
        (j.id, j.cluster, j.state.value, j.entrypoint[:60], j.created_at.strftime("%H:%M:%S"))
        for j in page.items
    ]
    print_table("jobs", ["id", "cluster", "state", "entrypoint", "created"], rows)


@app.command("get")
def get(job_id: str, output: Annotated[str, typer.Option("--output", "-o")] = "table") -> None:
    """Show one job."""
    with RaydeckClient() as client:
        job = client.jobs.get(job_id)
    print_json(job) if output == "json" else _show(job)


@app.command("logs")
def logs(
    job_id: str,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream until the job ends.")
    ] = False,
) -> None:
    """Print a job's logs."""
    with RaydeckClient() as client:
        if follow:
            _follow(client, job_id)
        else:
            sys.stdout.write(client.jobs.logs(job_id))


@app.command("stop")
def stop(job_id: str) -> None:
    """Stop a running job."""
    with RaydeckClient() as client:
        _show(client.jobs.stop(job_id))


@app.command("delete")
def delete(job_id: str) -> None:
    """Delete a finished job and its record."""
    with RaydeckClient() as client:
        job = client.jobs.delete(job_id)
    console.print(f"job {job.id} deleted")
