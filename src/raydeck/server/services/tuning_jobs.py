"""HyperparameterTuningJobs: create (validated, stored QUEUED), trials, and the calls the
study driver on the cluster makes: suggest trials, report metrics, complete a trial."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select
from sqlalchemy.orm import Session

from raydeck.core.errors import FailedPreconditionError, NotFoundError
from raydeck.core.ids import new_id
from raydeck.core.models import Page
from raydeck.core.models.training import MetricPoint, TrainingState
from raydeck.core.models.tuning import (
    Goal,
    HyperparameterTuningJob,
    HyperparameterTuningJobCreate,
    StudySpec,
    Trial,
    TrialMeasurement,
    TrialReportResult,
    TrialState,
)
from raydeck.db.models import TrainingJobRow, TrainingMetricRow, TrialRow, utcnow
from raydeck.server.services import studies, uri_policy
from raydeck.server.services import training_runs as runs
from raydeck.server.state import ServerState

__all__ = [
    "complete_trial",
    "create_tuning_job",
    "finalize",
    "get_trial_row",
    "get_tuning_job",
    "list_trials",
    "list_tuning_jobs",
    "report_trial",
    "suggest_trials",
    "to_model",
]

KIND = "tuning"
ENDED_TRIALS = frozenset(
    {TrialState.SUCCEEDED, TrialState.STOPPED, TrialState.INFEASIBLE, TrialState.FAILED}
)


def trial_model(row: TrialRow, metric: str, output_dir: str) -> Trial:
    final = None
    if row.final_value is not None:
        final = TrialMeasurement(step=row.final_step, metrics={metric: row.final_value})
    return Trial(
        id=row.id,
        number=row.number,
        state=TrialState(row.state),
        parameters=row.params,
        final_measurement=final,
        state_reason=row.state_reason,
        output_dir=studies.trial_output_dir(output_dir, row.id),
        start_time=row.start_time,
        end_time=row.end_time,
    )


def _trials(session: Session, job_id: str) -> list[TrialRow]:
    return list(
        session.scalars(
            select(TrialRow).where(TrialRow.tuning_job_id == job_id).order_by(TrialRow.number)
        )
    )


def to_model(session: Session, row: TrainingJobRow) -> HyperparameterTuningJob:
    spec = row.spec
    study = StudySpec.model_validate(spec["study_spec"])
    metric = study.metrics[0].metric_id
    trials = _trials(session, row.id)
    counts = Counter(t.state for t in trials)
    if row.best_trial_id:
        best = session.get(TrialRow, row.best_trial_id)
    else:  # still running (or failed): the best trial so far
        best = _best_trial(trials, study.metrics[0].goal)
    return HyperparameterTuningJob(
        id=row.id,
        display_name=row.display_name,
        project=row.project,
        cluster=row.cluster_name,
        ephemeral_cluster=row.ephemeral_cluster,
        study_spec=study,
        trial_job_spec=spec["trial_job_spec"],
        max_trial_count=spec["max_trial_count"],
        parallel_trial_count=spec["parallel_trial_count"],
        max_failed_trial_count=spec["max_failed_trial_count"],
        labels=row.labels,
        state=TrainingState(row.state),
        state_reason=row.state_reason,
        attempt=row.attempt,
        submission_id=row.submission_id,
        job_id=row.job_id,
        base_output_dir=spec["base_output_dir"],
        trial_counts=dict(counts),
        best_trial=trial_model(best, metric, spec["base_output_dir"]) if best else None,
        pipeline_id=row.pipeline_id,
        created_at=row.created_at,
        start_time=row.start_time,
        end_time=row.end_time,
        updated_at=row.updated_at,
    )


def create_tuning_job(
    state: ServerState,
    session: Session,
    request: HyperparameterTuningJobCreate,
    *,
    project: str,
    pipeline_id: str | None = None,
    submitter: str | None = None,
) -> HyperparameterTuningJob:
    """In ``project``, on a cluster of that project (or an ephemeral one made there)."""
    studies.validate_tuning_request(request)
    job_id = new_id("hpt")
    if request.trial_job_spec.base_output_dir:  # read back by the server: the project's own
        uri_policy.check_location(
            state.settings,
            project,
            request.trial_job_spec.base_output_dir,
            field="trial_job_spec.base_output_dir",
        )
    output_dir = request.trial_job_spec.base_output_dir or runs.default_output_dir(state, job_id)
    spec = request.model_dump(mode="json", exclude={"display_name", "cluster", "labels"})
    spec["base_output_dir"] = output_dir
    spec["submitted_by"] = submitter  # whom the driver's and trials' tokens act for
    row = TrainingJobRow(
        id=job_id,
        kind=KIND,
        project=project,
        display_name=request.display_name or job_id,
        state=TrainingState.QUEUED.value,
        spec=spec,
        labels=dict(request.labels),
        attempt=0,
        pipeline_id=pipeline_id,
    )
    runs.place_run(
        state,
        session,
        row,
        request.cluster,
        request.trial_job_spec,
        parallel=request.parallel_trial_count,
    )
    session.add(row)
    session.flush()
    return to_model(session, row)


def get_tuning_job(session: Session, job_id: str, project: str) -> HyperparameterTuningJob:
    return to_model(session, runs.get_run_row(session, KIND, job_id, project))


def list_tuning_jobs(
    session: Session,
    *,
    page_size: int,
    page_token: str | None,
    project: str,
    state: TrainingState | None = None,
    label: str | None = None,
) -> Page[HyperparameterTuningJob]:
    rows, token = runs.list_run_rows(
        session,
        KIND,
        page_size=page_size,
        page_token=page_token,
        project=project,
        state=state,
        label=label,
    )
    return Page[HyperparameterTuningJob](
        items=[to_model(session, r) for r in rows], next_page_token=token
    )


def list_trials(session: Session, job_id: str, project: str | None) -> list[Trial]:
    row = runs.get_run_row(session, KIND, job_id, project)
    metric = row.spec["study_spec"]["metrics"][0]["metric_id"]
    return [trial_model(t, metric, row.spec["base_output_dir"]) for t in _trials(session, row.id)]


def get_trial_row(session: Session, job_id: str, trial_id: str) -> TrialRow:
    trial = session.get(TrialRow, trial_id)
    if trial is None or trial.tuning_job_id != job_id:
        raise NotFoundError(f"trial {trial_id!r} of {job_id!r} not found", field="trial")
    return trial


# ---- the study driver's calls ------------------------------------------------------------------


def _failed_too_often(row: TrainingJobRow, trials: list[TrialRow]) -> bool:
    limit = row.spec["max_failed_trial_count"]
    failed = sum(t.state == TrialState.FAILED.value for t in trials)
    return bool(limit) and failed > limit


def suggest_trials(
    state: ServerState, job_id: str, count: int, *, project: str = "default"
) -> dict[str, object]:
    """New trials for free slots: {"trials": [...], "done": no more will ever be handed out}."""
    cache = studies.StudyCache.of(state.db)
    with state.db.session() as session:
        row = runs.get_run_row(session, KIND, job_id, project)
        live = cache.study(session, row)
    with live.lock, state.db.session() as session:
        row = runs.get_run_row(session, KIND, job_id, project)
        if row.state not in (TrainingState.PENDING.value, TrainingState.RUNNING.value):
            return {"trials": [], "done": True}
        trials = _trials(session, job_id)
        if _failed_too_often(row, trials):
            return {"trials": [], "done": True}
        made = studies.ask_trials(session, live, row, count)
        budget = studies.effective_trial_count(live.spec, row.spec["max_trial_count"])
        output = row.spec["base_output_dir"]
        return {
            "trials": [
                {
                    "id": t.id,
                    "number": t.number,
                    "parameters": t.params,
                    "args": studies.params_as_args(t.params),
                    "output_dir": studies.trial_output_dir(output, t.id),
                }
                for t in made
            ],
            "done": len(trials) + len(made) >= budget,
        }


def report_trial(
    state: ServerState,
    job_id: str,
    trial_id: str,
    points: list[MetricPoint],
    *,
    project: str = "default",
) -> TrialReportResult:
    cache = studies.StudyCache.of(state.db)
    with state.db.session() as session:
        row = runs.get_run_row(session, KIND, job_id, project)
        live = cache.study(session, row)
    with live.lock, state.db.session() as session:
        trial = get_trial_row(session, job_id, trial_id)
        runs.record_points(session, trial.id, points)
        if trial.state != TrialState.ACTIVE.value:
            return TrialReportResult(should_stop=trial.state_reason == "pruned")
        metric = live.spec.metrics[0].metric_id
        steps = [(p.step, p.value) for p in points if p.metric == metric and p.step is not None]
        prune = studies.report_points(live, trial, [(int(s), v) for s, v in steps])
        if prune:
            trial.state_reason = "pruned"
        return TrialReportResult(should_stop=prune)


def _last_value(session: Session, trial_id: str, metric: str) -> tuple[float, int | None] | None:
    point = session.execute(
        select(TrainingMetricRow.value, TrainingMetricRow.step)
        .where(TrainingMetricRow.run_id == trial_id, TrainingMetricRow.metric == metric)
        .order_by(TrainingMetricRow.id.desc())
        .limit(1)
    ).first()
    return None if point is None else (float(point[0]), point[1])


def complete_trial(
    state: ServerState,
    job_id: str,
    trial_id: str,
    ok: bool,
    stopped: bool,
    message: str | None,
    *,
    project: str = "default",
) -> Trial:
    cache = studies.StudyCache.of(state.db)
    with state.db.session() as session:
        row = runs.get_run_row(session, KIND, job_id, project)
        live = cache.study(session, row)
    with live.lock, state.db.session() as session:
        row = runs.get_run_row(session, KIND, job_id, project)
        trial = get_trial_row(session, job_id, trial_id)
        metric = live.spec.metrics[0].metric_id
        if TrialState(trial.state) in ENDED_TRIALS:
            return trial_model(trial, metric, row.spec["base_output_dir"])
        last = _last_value(session, trial.id, metric)
        if last is not None:
            trial.final_value, trial.final_step = last
        pruned = trial.state_reason == "pruned"
        if pruned and stopped:
            new, reason = TrialState.STOPPED, "stopped early by the pruner"
        elif ok and last is not None:
            new, reason = TrialState.SUCCEEDED, None
        elif ok:
            new, reason = TrialState.INFEASIBLE, f"the trial reported no {metric!r}"
        else:
            new, reason = TrialState.FAILED, message or "the trial failed"
        studies.tell(live, trial, new, trial.final_value)
        trial.state, trial.state_reason, trial.end_time = new.value, reason, utcnow()
        return trial_model(trial, metric, row.spec["base_output_dir"])


def finalize(session: Session, row: TrainingJobRow) -> tuple[TrainingState, str | None]:
    """When the driver ended: trials it left are failed; the job's outcome and best trial."""
    trials = _trials(session, row.id)
    for trial in trials:
        if TrialState(trial.state) not in ENDED_TRIALS:
            trial.state, trial.state_reason = TrialState.FAILED.value, "its study driver ended"
            trial.end_time = utcnow()
    if _failed_too_often(row, trials):
        failed = sum(t.state == TrialState.FAILED.value for t in trials)
        last = next(
            (t.state_reason for t in reversed(trials) if t.state == TrialState.FAILED.value), ""
        )
        return TrainingState.FAILED, (
            f"{failed} trials failed, more than max_failed_trial_count "
            f"{row.spec['max_failed_trial_count']}; last: {last}"
        )
    best = _best_trial(trials, Goal(row.spec["study_spec"]["metrics"][0]["goal"]))
    if best is None:
        last = next((t.state_reason for t in reversed(trials) if t.state_reason), "no trial ran")
        return TrainingState.FAILED, f"no trial succeeded; last: {last}"
    row.best_trial_id = best.id
    return TrainingState.SUCCEEDED, None


def _best_trial(trials: list[TrialRow], goal: Goal) -> TrialRow | None:
    scored = [
        t for t in trials if t.state == TrialState.SUCCEEDED.value and t.final_value is not None
    ]
    if not scored:
        return None
    pick = max if goal is Goal.MAXIMIZE else min
    return pick(scored, key=lambda t: float(t.final_value or 0.0))


def require_live(row: TrainingJobRow) -> None:
    if row.state not in runs.LIVE_STATES:
        raise FailedPreconditionError(f"tuning job {row.id} is {row.state}", field="job")
