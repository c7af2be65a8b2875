"""raydeck hpt create|get|list|trials|metrics|artifacts|cancel|delete

A study is a YAML/JSON file holding a hyperparameter tuning job (``study_spec``,
``trial_job_spec``, ``max_trial_count``, ...); flags override its cluster, budget and name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from raydeck.cli.output import console, print_ids, print_json, print_table, wait_with_progress
from raydeck.cli.specs import load_spec_file
from raydeck.cli.tracking import Dest, Download, show_metrics, show_or_download
from raydeck.client import RaydeckClient
from raydeck.core.models.training import TERMINAL_TRAINING_STATES, TrainingState
from raydeck.core.models.tuning import (
    HyperparameterTuningJob,
    HyperparameterTuningJobCreate,
    Trial,
)

__all__ = ["app"]

app = typer.Typer(help="Hyperparameter tuning jobs (Optuna studies over trials).")

Output = Annotated[str, typer.Option("--output", "-o", help="table|json|id")]
ENDED_TRIALS = ("SUCCEEDED", "STOPPED", "INFEASIBLE", "FAILED")


def _params(values: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )


def _metric(job: HyperparameterTuningJob) -> str:
    return job.study_spec.metrics[0].metric_id


def _best(job: HyperparameterTuningJob) -> str:
    trial = job.best_trial
    if trial is None or trial.final_measurement is None:
        return "no scored trial yet"
    value = trial.final_measurement.metrics.get(_metric(job))
    shown = "?" if value is None else f"{value:.6g}"
    return f"{_metric(job)}={shown} (trial {trial.number}: {_params(trial.parameters)})"


def _progress(job: HyperparameterTuningJob) -> str:
    counts = job.trial_counts
    ended = sum(counts.get(s, 0) for s in ENDED_TRIALS)
    active = counts.get("ACTIVE", 0) + counts.get("REQUESTED", 0)
    return f"{ended}/{job.max_trial_count} trials done, {active} running"


def _describe(job: HyperparameterTuningJob) -> str:
    return f"{job.state.value}, {_progress(job)}; best {_best(job)}"


def _show(job: HyperparameterTuningJob) -> None:
    console.print(f"[bold]{job.id}[/bold] {job.state.value}  {job.display_name}", highlight=False)
    where = f"{job.cluster} (ephemeral)" if job.ephemeral_cluster else job.cluster
    goal = job.study_spec.metrics[0].goal.value.lower()
    console.print(f"  cluster:   {where}", highlight=False)
    console.print(
        f"  study:     {job.study_spec.algorithm.value}, {goal} {_metric(job)}", highlight=False
    )
    console.print(f"  trials:    {_progress(job)}", highlight=False)
    counts = ", ".join(f"{k.lower()} {v}" for k, v in sorted(job.trial_counts.items()))
    if counts:
        console.print(f"             ({counts})", highlight=False)
    console.print(f"  best:      {_best(job)}", highlight=False)
    console.print(f"  output:    {job.base_output_dir}", highlight=False)
    if job.state_reason:
        console.print(f"  reason:    {job.state_reason}", highlight=False)


@app.command("create", no_args_is_help=True)
def create(
    file: Annotated[Path, typer.Argument(help="YAML/JSON study: study_spec, trial_job_spec...")],
    cluster: Annotated[str | None, typer.Option("--cluster", "-c", help="Cluster to run on.")] = (
        None
    ),
    max_trials: Annotated[int | None, typer.Option("--max-trials", help="max_trial_count.")] = None,
    parallel: Annotated[
        int | None, typer.Option("--parallel", help="parallel_trial_count.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until it ends, showing the best trial so far.")
    ] = False,
) -> None:
    """Start a study: raydeck hpt create study.yaml -c CLUSTER --wait"""
    body = load_spec_file(file)
    overrides = {
        "cluster": cluster,
        "max_trial_count": max_trials,
        "parallel_trial_count": parallel,
        "display_name": name,
    }
    body.update({k: v for k, v in overrides.items() if v is not None})
    with RaydeckClient() as client:
        job = client.tuning_jobs.create(HyperparameterTuningJobCreate.model_validate(body))
        console.print(f"created {job.id} ({job.state.value}) on {job.cluster}", highlight=False)
        if not wait:
            return
        job = wait_with_progress(
            f"tuning job {job.id}",
            lambda: client.tuning_jobs.get(job.id),
            lambda j: j.state in TERMINAL_TRAINING_STATES,
            _describe,
            timeout=30 * 24 * 3600,
            interval=1.0,
        )
    _show(job)
    if job.state is not TrainingState.SUCCEEDED:
        raise typer.Exit(1)


@app.command("get")
def get(job_id: str, output: Output = "table") -> None:
    """Show a tuning job: progress and the best trial (so far)."""
    with RaydeckClient() as client:
        job = client.tuning_jobs.get(job_id)
    print_json(job) if output == "json" else _show(job)


@app.command("list")
def list_jobs(
    state: Annotated[TrainingState | None, typer.Option()] = None,
    label: Annotated[str | None, typer.Option("--label", "-l", help="key=value")] = None,
    output: Output = "table",
) -> None:
    """List tuning jobs, each with its best trial (so far)."""
    with RaydeckClient() as client:
        page = client.tuning_jobs.list(state=state, label=label, page_size=1000)
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
            _progress(j),
            _best(j),
        )
        for j in page.items
    ]
    print_table("tuning jobs", ["id", "name", "cluster", "state", "trials", "best"], rows)


def _trial_row(trial: Trial, metric: str) -> tuple[object, ...]:
    value = trial.final_measurement.metrics.get(metric) if trial.final_measurement else None
    return (
        trial.number,
        trial.id,
        trial.state.value,
        _params(trial.parameters),
        "" if value is None else f"{value:.6g}",
        (trial.state_reason or "")[:60],
    )


@app.command("trials")
def trials(job_id: str, output: Output = "table") -> None:
    """The study's trials: parameters, final metric, state."""
    with RaydeckClient() as client:
        job = client.tuning_jobs.get(job_id)
        items = client.tuning_jobs.trials(job_id)
    if output == "json":
        print_json(items)
        return
    metric = _metric(job)
    columns = ["#", "id", "state", "parameters", metric, "reason"]
    print_table(f"trials of {job.id}", columns, [_trial_row(t, metric) for t in items])


@app.command("cancel")
def cancel(job_id: str) -> None:
    """Cancel the study (running trials are stopped; stored trials stay)."""
    with RaydeckClient() as client:
        _show(client.tuning_jobs.cancel(job_id))


@app.command("delete")
def delete(job_id: str) -> None:
    """Delete an ended study with its trials and metrics (output files stay)."""
    with RaydeckClient() as client:
        job = client.tuning_jobs.delete(job_id)
    console.print(f"tuning job {job.id} deleted", highlight=False)


@app.command("metrics")
def metrics(
    job_id: str,
    trial_id: Annotated[
        str, typer.Argument(help="The trial's number (as `hpt trials` shows) or id.")
    ],
    metric: Annotated[str | None, typer.Option("--metric", "-m", help="Only this metric.")] = None,
    output: Output = "table",
) -> None:
    """A trial's metric series: every point it reported, with its step."""
    with RaydeckClient() as client:
        points = client.tuning_jobs.trial_metrics(job_id, trial_id, metric)
    show_metrics(f"metrics of {trial_id}", points, output)


@app.command("artifacts")
def artifacts(
    job_id: str,
    trial_id: Annotated[
        str, typer.Argument(help="The trial's number (as `hpt trials` shows) or id.")
    ],
    download: Download = None,
    dest: Dest = Path("."),
    output: Output = "table",
) -> None:
    """List the files a trial wrote (model, checkpoints, logs, metrics), or download some."""
    with RaydeckClient() as client:
        show_or_download(
            f"artifacts of {trial_id}",
            client.tuning_jobs.trial_artifacts(job_id, trial_id),
            lambda path, to: client.tuning_jobs.download_trial_artifact(job_id, trial_id, path, to),
            download,
            dest,
            output,
        )
