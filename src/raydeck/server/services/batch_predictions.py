"""Batch prediction jobs: checked and stored here; the reconciler submits and tracks them.

A request is refused (4xx naming the field, nothing stored) unless the model version
resolves, the cluster is running, every input URI names a file (or the input table exists),
the feature columns exist and the output directory is free (or the output table can take
the predictions: new for ``create``, the same columns for ``append``). The row is stored
QUEUED with the Ray submission id it will use, so a submission is idempotent across server
restarts.

Tables are read and written by the Ray job itself through ``raydeck.data``: it resolves the
connections with the job-scoped token the reconciler gives it, so no secret is stored in
the job's spec or command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shlex
import sys

from sqlalchemy import select
from sqlalchemy.orm import Session

from raydeck.core.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    RaydeckError,
)
from raydeck.core.ids import new_id
from raydeck.core.models import Page
from raydeck.core.models.batch_predictions import (
    PREDICTION_COLUMNS,
    TERMINAL_BATCH_STATES,
    BatchInputFormat,
    BatchOutputMode,
    BatchPredictionCounts,
    BatchPredictionJob,
    BatchPredictionJobCreate,
    BatchPredictionState,
    BatchPredictSpec,
)
from raydeck.core.models.registry import ModelVersion
from raydeck.core.models.warehouse import TableInfo
from raydeck.db.models import BatchPredictionJobRow, utcnow
from raydeck.runtime.artifacts import is_local
from raydeck.runtime.batch_files import (
    expand_input_uris,
    file_columns,
    infer_format,
    is_absolute,
    output_conflict,
)
from raydeck.runtime.predictors import predictor_class
from raydeck.server.services import connections as connection_service
from raydeck.server.services import jobs as job_service
from raydeck.server.services import uri_policy
from raydeck.server.services.models import resolve_version
from raydeck.server.services.paging import fetch_page
from raydeck.server.state import ServerState

__all__ = [
    "LIVE_STATES",
    "batch_spec",
    "cancel_batch_prediction",
    "create_batch_prediction",
    "delete_batch_prediction",
    "entrypoint",
    "get_batch_prediction",
    "get_batch_prediction_logs",
    "get_row",
    "list_batch_predictions",
    "status_uri",
    "to_model",
]

MAX_ENTRYPOINT = 16384  # JobSubmit.entrypoint's limit: the Ray job is recorded as a Job too
LIVE_STATES = frozenset(s.value for s in BatchPredictionState if s not in TERMINAL_BATCH_STATES)


def to_model(row: BatchPredictionJobRow) -> BatchPredictionJob:
    spec = row.spec
    return BatchPredictionJob(
        id=row.id,
        display_name=row.display_name,
        project=row.project,
        model=row.model_ref,
        model_version_id=row.model_version_id,
        model_version=spec["model_version"],
        framework=spec["framework"],
        cluster=row.cluster_name,
        input=spec["input"],
        output=spec["output"],
        batch_size=spec["batch_size"],
        resources=spec["resources"],
        concurrency=spec["concurrency"],
        parameters=spec.get("parameters"),
        state=BatchPredictionState(row.state),
        state_reason=row.state_reason,
        counts=BatchPredictionCounts(
            rows_total=row.rows_total,
            rows_succeeded=row.rows_succeeded,
            rows_failed=row.rows_failed,
        ),
        output_files=list(row.output_files.get("files", [])),
        submission_id=row.submission_id,
        job_id=row.job_id,
        created_at=row.created_at,
        start_time=row.start_time,
        end_time=row.end_time,
        updated_at=row.updated_at,
    )


def status_uri(spec: dict[str, object]) -> str:
    """Directory of the job's _progress.json/_summary.json: the output directory, or for a
    table output the one chosen at creation in the artifact store."""
    output = spec["output"]
    assert isinstance(output, dict)
    return str(spec.get("status_uri") or output["uri"])


def batch_spec(row: BatchPredictionJobRow) -> BatchPredictSpec:
    """What the Ray job is told to do (everything resolved at creation)."""
    spec = row.spec
    return BatchPredictSpec(
        job_id=row.id,
        framework=spec["framework"],
        artifact_uri=spec["artifact_uri"],
        model_version=spec["model_version"],
        input=spec["input"],
        output=spec["output"],
        status_uri=status_uri(spec),
        batch_size=spec["batch_size"],
        num_cpus=spec["resources"]["num_cpus"],
        num_gpus=spec["resources"]["num_gpus"],
        concurrency=spec["concurrency"],
        parameters=spec.get("parameters"),
    )


def entrypoint(row: BatchPredictionJobRow) -> str:
    # The cluster runs from the server's own environment, so its interpreter has raydeck.
    command = [sys.executable, "-m", "raydeck.runtime.batch_predict"]
    return shlex.join([*command, "--spec", batch_spec(row).model_dump_json()])


# ---- create ----------------------------------------------------------------------------------


def _resolve_model(session: Session, ref: str, project: str) -> ModelVersion:
    try:
        return resolve_version(session, ref, project)
    except NotFoundError as exc:  # model or alias: either way the "model" field is wrong
        raise NotFoundError(exc.message, field="model") from exc


def _check_parameters(framework: str, parameters: dict[str, object] | None) -> None:
    if parameters:
        predictor_class(framework)().check_parameters(parameters)  # 400 parameters.<name>


def _check_locations(state: ServerState, request: BatchPredictionJobCreate, project: str) -> None:
    """Only paths and URLs the project may name (``uri_policy``), before any is opened."""
    for i, uri in enumerate(request.input.uris or []):
        uri_policy.check_location(state.settings, project, uri, field=f"input.uris[{i}]")
    if request.output.uri is not None:
        uri_policy.check_location(state.settings, project, request.output.uri, field="output.uri")


def _check_input(
    state: ServerState, request: BatchPredictionJobCreate, project: str
) -> BatchInputFormat:
    assert request.input.uris is not None
    files = expand_input_uris(request.input.uris)
    for path in files:  # what a directory or glob expanded to, symlinks included
        if is_local(path):
            uri_policy.check_local_path(state.settings, project, path, field="input.uris")
    fmt = request.input.format or infer_format(files)
    wanted = request.input.feature_columns
    if wanted and fmt is not BatchInputFormat.JSONL:
        try:
            present = file_columns(files[0], fmt) or []
        except (OSError, ValueError) as exc:  # pyarrow's errors are ValueErrors
            raise InvalidArgumentError(
                f"cannot read {files[0]!r} as {fmt.value}: {exc}"[:500], field="input.uris"
            ) from exc
        missing = [c for c in wanted if c not in present]
        if missing:
            raise InvalidArgumentError(
                f"feature column {missing[0]!r} is not in {files[0]} "
                f"(its columns: {', '.join(present)})"[:500],
                field="input.feature_columns",
            )
    return fmt


def _check_table_input(
    state: ServerState, request: BatchPredictionJobCreate, project: str
) -> TableInfo:
    assert request.input.table is not None
    info = connection_service.find_table(
        state.db, state.settings, request.input.table, field="input.table", project=project
    )
    if info is None:
        raise NotFoundError(f"table {request.input.table} not found", field="input.table")
    present = [c.name for c in info.columns]
    missing = [c for c in request.input.feature_columns or [] if c not in present]
    if missing:
        raise InvalidArgumentError(
            f"feature column {missing[0]!r} is not in table {info.ref} "
            f"(its columns: {', '.join(present)})"[:500],
            field="input.feature_columns",
        )
    clash = [c for c in PREDICTION_COLUMNS if c in present]
    if clash and request.output.table is not None:
        raise InvalidArgumentError(
            f"table {info.ref} has a column named {clash[0]!r}, which the output table "
            "uses for the predictions; select the input through a view without it",
            field="input.table",
        )
    return info


def _check_table_output(
    state: ServerState, request: BatchPredictionJobCreate, source: TableInfo | None, project: str
) -> None:
    """``create``: the table must not exist; ``append`` to an existing table: it must have
    exactly the columns the predictions bring (input columns or instance, + prediction, error).
    """
    output = request.output
    assert output.table is not None
    info = connection_service.find_table(
        state.db, state.settings, output.table, field="output.table", project=project
    )
    if info is None:
        return
    if output.mode is BatchOutputMode.CREATE:
        raise AlreadyExistsError(
            f"table {info.ref} already exists; use mode append or another table",
            field="output.table",
        )
    inputs = [c.name for c in source.columns] if source is not None else ["instance"]
    expected = sorted([*inputs, *PREDICTION_COLUMNS])
    present = sorted(c.name for c in info.columns)
    if present != expected:
        raise InvalidArgumentError(
            f"table {info.ref} has columns {', '.join(present)}, the predictions bring "
            f"{', '.join(expected)}"[:500],
            field="output.table",
        )


def _check_output(uri: str) -> None:
    if not is_absolute(uri):
        raise InvalidArgumentError(
            f"{uri!r} is a relative path; give an absolute path or a URI", field="output.uri"
        )
    try:
        conflict = output_conflict(uri)
    except (OSError, ValueError, ImportError) as exc:
        raise InvalidArgumentError(f"cannot use {uri!r}: {exc}"[:500], field="output.uri") from exc
    if conflict:
        raise InvalidArgumentError(conflict, field="output.uri")


def _check_output_free(session: Session, request: BatchPredictionJobCreate) -> None:
    """One live job per output directory or table (two would interleave or race to create)."""
    field = "output.uri" if request.output.uri is not None else "output.table"
    wanted = (request.output.uri or request.output.table or "").rstrip("/")
    for row in session.scalars(
        select(BatchPredictionJobRow).where(BatchPredictionJobRow.state.in_(LIVE_STATES))
    ):
        output = row.spec["output"]
        if (output.get("uri") or output.get("table") or "").rstrip("/") == wanted:
            raise InvalidArgumentError(
                f"batch prediction job {row.id} ({row.state}) already writes to {wanted!r}",
                field=field,
            )


def create_batch_prediction(
    state: ServerState,
    request: BatchPredictionJobCreate,
    project: str = "default",
    submitter: str | None = None,
) -> BatchPredictionJob:
    """Model and cluster must both be of ``project``; the job then belongs to it too."""
    with state.db.session() as session:
        version = _resolve_model(session, request.model, project)
    job_service.cluster_target(state, request.cluster, project)  # 404 unknown, 412 not running
    _check_parameters(version.framework.value, request.parameters)
    source: TableInfo | None = None
    fmt: BatchInputFormat | None = None
    _check_locations(state, request, project)
    if request.input.table is not None:
        source = _check_table_input(state, request, project)
    else:
        fmt = _check_input(state, request, project)
    if request.output.table is not None:
        _check_table_output(state, request, source, project)
    else:
        assert request.output.uri is not None
        _check_output(request.output.uri)
    job_id = new_id("bpj")
    spec = request.model_dump(mode="json")
    spec["input"]["format"] = fmt.value if fmt else None
    if request.output.table is not None:
        spec["status_uri"] = f"{state.settings.artifact_root}/batch_predictions/{job_id}"
    spec.update(
        framework=version.framework.value,
        artifact_uri=version.artifact_uri,
        model_version=version.ref,
        submitted_by=submitter,  # whom the job's token acts for
    )
    with state.db.session() as session:
        _check_output_free(session, request)
        target = job_service.cluster_target(state, request.cluster, project)
        row = BatchPredictionJobRow(
            id=job_id,
            project=project,
            display_name=request.display_name or f"{version.ref} batch prediction",
            model_ref=request.model,
            model_version_id=version.id,
            cluster_id=target.cluster_id,
            cluster_name=target.name,
            state=BatchPredictionState.QUEUED.value,
            spec=spec,
            submission_id=f"raydeck-bp-{secrets.token_hex(8)}",
            rows_total=0,
            rows_succeeded=0,
            rows_failed=0,
            output_files={},
        )
        if len(entrypoint(row)) > MAX_ENTRYPOINT:
            raise InvalidArgumentError(
                f"{len(request.input.uris or [])} input URIs make too long a job command; name a "
                "directory or a glob instead",
                field="input.uris",
            )
        session.add(row)
        session.flush()
        result = to_model(row)
    state.wake_reconcilers()
    return result


# ---- reads -----------------------------------------------------------------------------------


def get_row(session: Session, job_id: str, project: str = "default") -> BatchPredictionJobRow:
    row = session.get(BatchPredictionJobRow, job_id)
    if row is None or row.project != project:
        raise NotFoundError(f"batch prediction job {job_id!r} not found", field="job")
    return row


def get_batch_prediction(
    session: Session, job_id: str, project: str = "default"
) -> BatchPredictionJob:
    return to_model(get_row(session, job_id, project))


def list_batch_predictions(
    session: Session,
    *,
    page_size: int,
    page_token: str | None,
    state: BatchPredictionState | None = None,
    cluster: str | None = None,
    project: str = "default",
) -> Page[BatchPredictionJob]:
    query = select(BatchPredictionJobRow).where(BatchPredictionJobRow.project == project)
    if state is not None:
        query = query.where(BatchPredictionJobRow.state == state.value)
    if cluster is not None:
        query = query.where(BatchPredictionJobRow.cluster_name == cluster)
    rows, next_token = fetch_page(session, query, BatchPredictionJobRow.id, page_size, page_token)
    return Page[BatchPredictionJob](items=[to_model(r) for r in rows], next_page_token=next_token)


# ---- cancel / delete / logs ------------------------------------------------------------------


def cancel_batch_prediction(
    state: ServerState, job_id: str, project: str = "default"
) -> BatchPredictionJob:
    """QUEUED ends at once; a submitted job goes CANCELLING until its Ray job has stopped."""
    with state.db.session() as session:
        row = get_row(session, job_id, project)
        current = BatchPredictionState(row.state)
        if current in (BatchPredictionState.SUCCEEDED, BatchPredictionState.FAILED):
            raise FailedPreconditionError(
                f"batch prediction job {job_id} already ended ({current.value})", field="job"
            )
        if current is BatchPredictionState.QUEUED:
            row.state = BatchPredictionState.CANCELLED.value
            row.state_reason = "cancelled before it was submitted"
            row.end_time = utcnow()
        elif current in (BatchPredictionState.PENDING, BatchPredictionState.RUNNING):
            row.state = BatchPredictionState.CANCELLING.value
            row.state_reason = "cancel requested"
        result = to_model(row)
    state.wake_reconcilers()
    return result


def _load(state: ServerState, job_id: str, project: str) -> BatchPredictionJob:
    with state.db.session() as session:
        return to_model(get_row(session, job_id, project))


def _delete_row(state: ServerState, job_id: str, project: str) -> None:
    with state.db.session() as session:
        session.delete(get_row(session, job_id, project))


async def delete_batch_prediction(
    state: ServerState, job_id: str, project: str = "default"
) -> BatchPredictionJob:
    """Deletes the record (and its Ray job's record); the output files stay."""
    job = await asyncio.to_thread(_load, state, job_id, project)
    if job.state not in TERMINAL_BATCH_STATES:
        raise FailedPreconditionError(
            f"batch prediction job {job_id} is {job.state.value}; cancel it before deleting",
            field="job",
        )
    if job.job_id is not None:
        with contextlib.suppress(RaydeckError):  # already gone, or its cluster is
            await job_service.delete_job(state, job.job_id)
    await asyncio.to_thread(_delete_row, state, job_id, project)
    return job


async def get_batch_prediction_logs(
    state: ServerState, job_id: str, project: str = "default"
) -> str:
    job = await asyncio.to_thread(_load, state, job_id, project)
    if job.job_id is None:
        raise FailedPreconditionError(
            f"batch prediction job {job_id} has not started on its cluster yet; no logs",
            field="job",
        )
    return await job_service.get_job_logs(state, job.job_id)
