"""CustomJobs: checked and stored QUEUED here; the training reconciler runs them."""

from __future__ import annotations

from sqlalchemy.orm import Session

from raydeck.core.ids import new_id
from raydeck.core.models import Page
from raydeck.core.models.limits import stored_data
from raydeck.core.models.training import (
    CustomJob,
    CustomJobCreate,
    CustomJobSpec,
    ReplicaSpec,
    TrainingState,
)
from raydeck.db.models import TrainingJobRow
from raydeck.runtime.training.spec import replica_name
from raydeck.server.services import training_runs as runs
from raydeck.server.services import uri_policy
from raydeck.server.state import ServerState

__all__ = ["create_custom_job", "get_custom_job", "list_custom_jobs", "to_model"]

KIND = "custom"


def replicas_of(spec: CustomJobSpec, output_dir: str) -> list[ReplicaSpec]:
    return [
        ReplicaSpec(
            pool=p,
            index=i,
            name=replica_name(p, i),
            log_path=f"{output_dir}/replica_logs/{replica_name(p, i)}.log",
        )
        for p, pool in enumerate(spec.worker_pool_specs)
        if pool.has_program
        for i in range(pool.replica_count)
    ]


def to_model(row: TrainingJobRow) -> CustomJob:
    with stored_data():
        job_spec = CustomJobSpec.model_validate(row.spec["job_spec"])
    output_dir = row.spec["base_output_dir"]
    return CustomJob(
        id=row.id,
        display_name=row.display_name,
        project=row.project,
        cluster=row.cluster_name,
        ephemeral_cluster=row.ephemeral_cluster,
        job_spec=job_spec,
        labels=row.labels,
        state=TrainingState(row.state),
        state_reason=row.state_reason,
        attempt=row.attempt,
        submission_id=row.submission_id,
        job_id=row.job_id,
        base_output_dir=output_dir,
        replicas=replicas_of(job_spec, output_dir),
        pipeline_id=row.pipeline_id,
        created_at=row.created_at,
        start_time=row.start_time,
        end_time=row.end_time,
        updated_at=row.updated_at,
    )


def create_custom_job(
    state: ServerState,
    session: Session,
    request: CustomJobCreate,
    *,
    project: str,
    pipeline_id: str | None = None,
    submitter: str | None = None,
) -> CustomJob:
    """In ``project``, on a cluster of that project (or an ephemeral one made there)."""
    job_id = new_id("cj")
    spec = CustomJobSpec.model_validate(request.model_dump(include=set(CustomJobSpec.model_fields)))
    if spec.base_output_dir:  # read back by the server (status, artifacts): the project's own
        uri_policy.check_location(
            state.settings, project, spec.base_output_dir, field="base_output_dir"
        )
    output_dir = spec.base_output_dir or runs.default_output_dir(state, job_id)
    row = TrainingJobRow(
        id=job_id,
        kind=KIND,
        project=project,
        display_name=request.display_name or job_id,
        state=TrainingState.QUEUED.value,
        spec={
            "job_spec": spec.model_dump(mode="json"),
            "base_output_dir": output_dir,
            "submitted_by": submitter,  # whom the job's token acts for
        },
        labels=dict(request.labels),
        attempt=0,
        pipeline_id=pipeline_id,
    )
    runs.place_run(state, session, row, request.cluster, spec)
    session.add(row)
    session.flush()
    return to_model(row)


def get_custom_job(session: Session, job_id: str, project: str) -> CustomJob:
    return to_model(runs.get_run_row(session, KIND, job_id, project))


def list_custom_jobs(
    session: Session,
    *,
    page_size: int,
    page_token: str | None,
    project: str,
    state: TrainingState | None = None,
    label: str | None = None,
) -> Page[CustomJob]:
    rows, token = runs.list_run_rows(
        session,
        KIND,
        page_size=page_size,
        page_token=page_token,
        project=project,
        state=state,
        label=label,
    )
    return Page[CustomJob](items=[to_model(r) for r in rows], next_page_token=token)
