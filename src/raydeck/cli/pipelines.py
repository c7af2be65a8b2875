"""raydeck pipelines create|get|list|cancel|delete

A pipeline is a YAML/JSON file: ``training_task`` (a ``custom_job`` or a
``hyperparameter_tuning_job``) and ``model_to_upload``; the model in AIP_MODEL_DIR of the job
(or of the best trial) becomes a registered model version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from raydeck.cli.output import console, print_ids, print_json, print_table, wait_with_progress
from raydeck.cli.specs import load_spec_file
from raydeck.client import RaydeckClient
from raydeck.core.models.pipelines import TrainingPipeline, TrainingPipelineCreate
from raydeck.core.models.training import TERMINAL_TRAINING_STATES, TrainingState

__all__ = ["app"]

app = typer.Typer(help="Training pipelines: train, then register the model.")

Output = Annotated[str, typer.Option("--output", "-o", help="table|json|id")]


def _task(pipeline: TrainingPipeline) -> str:
    if pipeline.hyperparameter_tuning_job_id:
        return f"tuning job {pipeline.hyperparameter_tuning_job_id}"
    if pipeline.custom_job_id:
        return f"custom job {pipeline.custom_job_id}"
    return "-"


def _target(pipeline: TrainingPipeline) -> str:
    upload = pipeline.model_to_upload
    where = upload.display_name or f"new version of {upload.parent_model}"
    return f"{where} ({upload.framework})"


def _describe(pipeline: TrainingPipeline) -> str:
    text = f"{pipeline.state.value}, {_task(pipeline)}"
    return f"{text}: {pipeline.state_reason}" if pipeline.state_reason else text


def _show(pipeline: TrainingPipeline) -> None:
    console.print(
        f"[bold]{pipeline.id}[/bold] {pipeline.state.value}  {pipeline.display_name}",
        highlight=False,
    )
    console.print(f"  training: {_task(pipeline)}", highlight=False)
    console.print(f"  model:    {_target(pipeline)}", highlight=False)
    if pipeline.model_version:
        console.print(f"  uploaded: {pipeline.model_version}", highlight=False)
    if pipeline.state_reason:
        console.print(f"  reason:   {pipeline.state_reason}", highlight=False)


@app.command("create", no_args_is_help=True)
def create(
    file: Annotated[Path, typer.Argument(help="YAML/JSON: training_task, model_to_upload.")],
    name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until the model is registered.")
    ] = False,
) -> None:
    """Train and register: raydeck pipelines create pipeline.yaml --wait"""
    body = load_spec_file(file)
    if name is not None:
        body["display_name"] = name
    with RaydeckClient() as client:
        pipeline = client.training_pipelines.create(TrainingPipelineCreate.model_validate(body))
        console.print(f"created {pipeline.id} ({_describe(pipeline)})", highlight=False)
        if not wait:
            return
        pipeline = wait_with_progress(
            f"pipeline {pipeline.id}",
            lambda: client.training_pipelines.get(pipeline.id),
            lambda p: p.state in TERMINAL_TRAINING_STATES,
            _describe,
            timeout=30 * 24 * 3600,
            interval=1.0,
        )
    _show(pipeline)
    if pipeline.state is not TrainingState.SUCCEEDED:
        raise typer.Exit(1)


@app.command("get")
def get(pipeline_id: str, output: Output = "table") -> None:
    """Show one pipeline."""
    with RaydeckClient() as client:
        pipeline = client.training_pipelines.get(pipeline_id)
    print_json(pipeline) if output == "json" else _show(pipeline)


@app.command("list")
def list_pipelines(output: Output = "table") -> None:
    """List pipelines."""
    with RaydeckClient() as client:
        page = client.training_pipelines.list(page_size=1000)
    if output == "id":  # one id per line, oldest first: for scripts
        print_ids(page.items)
        return
    if output == "json":
        print_json(page.items)
        return
    rows = [
        (p.id, p.display_name, p.state.value, _task(p), p.model_version or _target(p))
        for p in page.items
    ]
    print_table("training pipelines", ["id", "name", "state", "training", "model"], rows)


@app.command("cancel")
def cancel(pipeline_id: str) -> None:
    """Cancel a pipeline and its running training job."""
    with RaydeckClient() as client:
        _show(client.training_pipelines.cancel(pipeline_id))


@app.command("delete")
def delete(pipeline_id: str) -> None:
    """Delete an ended pipeline's record (its training job and model stay)."""
    with RaydeckClient() as client:
        pipeline = client.training_pipelines.delete(pipeline_id)
    console.print(f"pipeline {pipeline.id} deleted", highlight=False)
