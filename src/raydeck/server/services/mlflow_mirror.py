"""Mirroring of custom jobs and trials to an MLflow tracking server (when one is configured).

Each custom job and each trial of a tuning job becomes one MLflow run, in an experiment named
after the job (a tuning job's trials share the study's experiment): parameters (a trial's
parameters; a job's pool specs and ``--name=value`` args), the stored metric series with
their steps, tags (Raydeck ids, labels, state) and the final status.

The mirror works from the stored rows, in the background, one pass at a time: a slow or
unreachable MLflow never delays a job, only the mirror, which retries with backoff and logs
why. What has been sent is stored per run (``mlflow_runs``): the MLflow run id once created,
the last metric point sent, the last state sent; a run created just before a crash is found
again by its ``raydeck.run_id`` tag, so a restart never creates a second MLflow run.
"""

from __future__ import annotations

import logging
import math
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from raydeck.core.models.limits import stored_data
from raydeck.core.models.training import CustomJobSpec, TrainingPoolSpec, TrainingState
from raydeck.core.models.tuning import TrialState
from raydeck.db.models import (
    MlflowRunRow,
    TrainingJobRow,
    TrainingMetricRow,
    TrialRow,
    utcnow,
)
from raydeck.db.session import Database
from raydeck.server.services.mlflow_rest import MlflowRestClient, MlflowUnavailableError

__all__ = ["MlflowMirror", "RunSnapshot", "backoff_seconds", "experiment_name", "job_params"]

log = logging.getLogger(__name__)

RUN_ID_TAG = "raydeck.run_id"
METRIC_PAGE = 1000
MAX_BACKOFF_SECONDS = 300.0
PASS_BUDGET_SECONDS = 30.0  # one pass stops starting new runs after this; the next goes on
MAX_PARAM_VALUE = 500  # what every MLflow version accepts (newer ones take 6000)
MAX_TAG_VALUE = 5000

_STATUS = {
    TrainingState.QUEUED.value: "SCHEDULED",
    TrainingState.PENDING.value: "SCHEDULED",
    TrainingState.RUNNING.value: "RUNNING",
    TrainingState.CANCELLING.value: "RUNNING",
    TrainingState.SUCCEEDED.value: "FINISHED",
    TrainingState.FAILED.value: "FAILED",
    TrainingState.CANCELLED.value: "KILLED",
    TrialState.REQUESTED.value: "SCHEDULED",
    TrialState.ACTIVE.value: "RUNNING",
    TrialState.STOPPED.value: "FINISHED",  # stopped early by the pruner: a normal outcome
    TrialState.INFEASIBLE.value: "FAILED",
}
_ENDED = {"FINISHED", "FAILED", "KILLED"}


def backoff_seconds(failures: int) -> float:
    return float(min(MAX_BACKOFF_SECONDS, 5.0 * 2 ** max(0, failures - 1)))


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def _key(name: str) -> str:
    """MLflow keys allow letters, digits, '_', '-', '.', ' ', '/' and ':' (and no '..')."""
    cleaned = re.sub(r"[^\w\-. /:]", "_", name).replace("..", "_").lstrip("/")
    return cleaned[:250] or "_"


def _clip(value: object, limit: int) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- what a run looks like in MLflow ---------------------------------------------------------


@dataclass
class RunSnapshot:
    """A custom job or trial as the mirror sends it, read in one short session."""

    run_id: str
    kind: str  # "custom" | "trial"
    experiment: str
    run_name: str
    state: str
    state_reason: str | None
    start_ms: int
    end_ms: int | None
    params: dict[str, str]
    tags: dict[str, str]
    mirror: dict[str, Any] = field(default_factory=dict)  # MlflowRunRow's columns

    @property
    def status(self) -> str:
        return _STATUS.get(self.state, "FAILED")


def _program(pool: TrainingPoolSpec) -> str:
    if pool.python_module is not None:
        return f"module {pool.python_module.module_name}"
    if pool.script is not None:
        return f"script {pool.script.path}"
    if pool.command:
        return shlex.join(pool.command)
    return "Ray Train workers"


def _machine(pool: TrainingPoolSpec) -> str:
    spec = pool.machine_spec
    parts = [f"cpus={spec.cpus:g}", f"gpus={spec.gpus:g}"]
    if spec.memory:
        parts.append(f"memory={spec.memory}")
    parts += [f"{k}={v:g}" for k, v in sorted(spec.resources.items())]
    return " ".join(parts)


def job_params(spec: CustomJobSpec) -> dict[str, str]:
    """A summary of the pools, and the chief's ``--name=value`` args as ``args.<name>``
    (the hyperparameters of most training scripts). Environment values are never sent."""
    params: dict[str, str] = {}
    for index, pool in enumerate(spec.worker_pool_specs):
        prefix = f"workerpool{index}"
        params[f"{prefix}.replica_count"] = str(pool.replica_count)
        params[f"{prefix}.machine"] = _machine(pool)
        params[f"{prefix}.program"] = _program(pool)
        if pool.args:
            params[f"{prefix}.args"] = shlex.join(pool.args)
    for arg in spec.worker_pool_specs[0].args:
        name, sep, value = arg.removeprefix("--").partition("=")
        if arg.startswith("--") and sep and name:
            params[f"args.{name}"] = value
    params["max_restarts"] = str(spec.scheduling.max_restarts)
    if spec.scheduling.timeout_seconds is not None:
        params["timeout_seconds"] = f"{spec.scheduling.timeout_seconds:g}"
    return params


def _label_tags(labels: dict[str, Any]) -> dict[str, str]:
    return {f"raydeck.label.{k}": str(v) for k, v in labels.items()}


def experiment_name(job: TrainingJobRow) -> str:
    """The job's (or study's) name; ``<project>/<name>`` outside the default project, so
    projects never share an experiment."""
    return job.display_name if job.project == "default" else f"{job.project}/{job.display_name}"


def _custom_snapshot(row: TrainingJobRow) -> RunSnapshot:
    with stored_data():
        spec = CustomJobSpec.model_validate(row.spec["job_spec"])
    tags = {
        RUN_ID_TAG: row.id,
        "raydeck.kind": "custom_job",
        "raydeck.custom_job_id": row.id,
        "raydeck.output_dir": row.spec["base_output_dir"],
        "raydeck.project": row.project,
        **_label_tags(row.labels),
    }
    if row.cluster_name:
        tags["raydeck.cluster"] = row.cluster_name
    if row.pipeline_id:
        tags["raydeck.pipeline_id"] = row.pipeline_id
    return RunSnapshot(
        run_id=row.id,
        kind="custom",
        experiment=experiment_name(row),
        run_name=row.id,
        state=row.state,
        state_reason=row.state_reason,
        start_ms=_ms(row.start_time or row.created_at) or 0,
        end_ms=_ms(row.end_time),
        params=job_params(spec),
        tags=tags,
    )


def _trial_snapshot(trial: TrialRow, job: TrainingJobRow) -> RunSnapshot:
    tags = {
        RUN_ID_TAG: trial.id,
        "raydeck.kind": "trial",
        "raydeck.trial_id": trial.id,
        "raydeck.trial_number": str(trial.number),
        "raydeck.tuning_job_id": job.id,
        "raydeck.project": job.project,
        **_label_tags(job.labels),
    }
    if job.cluster_name:
        tags["raydeck.cluster"] = job.cluster_name
    return RunSnapshot(
        run_id=trial.id,
        kind="trial",
        experiment=experiment_name(job),
        run_name=f"trial-{trial.number}",
        state=trial.state,
        state_reason=trial.state_reason,
        start_ms=_ms(trial.start_time or job.created_at) or 0,
        end_ms=_ms(trial.end_time),
        params={k: str(v) for k, v in trial.params.items()},
        tags=tags,
    )


def _mirror_columns(row: MlflowRunRow | None) -> dict[str, Any]:
    if row is None:
        return {}
    return {
        "experiment_id": row.experiment_id,
        "mlflow_run_id": row.mlflow_run_id,
        "params_logged": row.params_logged,
        "last_metric_id": row.last_metric_id,
        "mirrored_state": row.mirrored_state,
        "failures": row.failures,
    }


# ---- the mirror ------------------------------------------------------------------------------


class MlflowMirror:
    """``sync_due()`` is one pass: every run not yet fully mirrored whose retry time has come."""

    def __init__(
        self,
        db: Database,
        tracking_uri: str,
        *,
        token: str | None = None,
        batch: int = 200,
        client_factory: type[MlflowRestClient] = MlflowRestClient,
    ) -> None:
        self.db = db
        self.tracking_uri = tracking_uri
        self.token = token
        self.batch = batch
        self._client_factory = client_factory
        self._experiments: dict[str, str] = {}
        self._paused_until = 0.0  # monotonic: MLflow was unreachable, wait before trying again
        self._unavailable = 0
        self._failures: list[tuple[RunSnapshot, Exception]] = []

    def _due(self, session: Session, now: datetime) -> list[RunSnapshot]:
        pending = or_(
            MlflowRunRow.run_id.is_(None),
            and_(
                MlflowRunRow.closed.is_(False),
                or_(MlflowRunRow.next_attempt_at.is_(None), MlflowRunRow.next_attempt_at <= now),
            ),
        )
        jobs = session.execute(
            select(TrainingJobRow, MlflowRunRow)
            .outerjoin(MlflowRunRow, MlflowRunRow.run_id == TrainingJobRow.id)
            .where(TrainingJobRow.kind == "custom", pending)
            .order_by(TrainingJobRow.created_at)
            .limit(self.batch)
        ).all()
        trials = session.execute(
            select(TrialRow, TrainingJobRow, MlflowRunRow)
            .join(TrainingJobRow, TrainingJobRow.id == TrialRow.tuning_job_id)
            .outerjoin(MlflowRunRow, MlflowRunRow.run_id == TrialRow.id)
            .where(pending)
            .order_by(TrialRow.start_time)
            .limit(self.batch)
        ).all()
        found: list[RunSnapshot] = []
        for job, mirror in jobs:
            self._snapshot(found, job.id, "custom", mirror, partial(_custom_snapshot, job))
        for trial, job, mirror in trials:
            self._snapshot(found, trial.id, "trial", mirror, partial(_trial_snapshot, trial, job))
        return found

    def _snapshot(
        self,
        found: list[RunSnapshot],
        run_id: str,
        kind: str,
        mirror: MlflowRunRow | None,
        make: Callable[[], RunSnapshot],
    ) -> None:
        """A run that cannot be described (say, a spec an older version stored) is retried
        later like a failed request, instead of failing every pass."""
        try:
            snapshot = make()
        except Exception as exc:
            snapshot = RunSnapshot(run_id, kind, "", "", "", None, 0, None, {}, {})
            snapshot.mirror = _mirror_columns(mirror)
            self._failures.append((snapshot, exc))
            return
        snapshot.mirror = _mirror_columns(mirror)
        found.append(snapshot)

    def sync_due(self) -> int:
        """One pass; returns how many runs it brought up to date."""
        if time.monotonic() < self._paused_until:
            return 0
        self._failures = []
        with self.db.session() as session:
            due = self._due(session, utcnow())
        for broken, error in self._failures:
            self._failed(broken, error)
        if not due:
            return 0
        done = 0
        started = time.monotonic()
        with self._client_factory(self.tracking_uri, token=self.token) as client:
            for snapshot in due:
                if time.monotonic() - started > PASS_BUDGET_SECONDS:
                    break
                try:
                    self.sync_run(client, snapshot)
                except MlflowUnavailableError as exc:
                    self._failed(snapshot, exc)
                    self._unavailable += 1
                    self._paused_until = time.monotonic() + backoff_seconds(self._unavailable)
                    return done
                except Exception as exc:  # this run only: the others still get their turn
                    self._failed(snapshot, exc)
                    self._experiments.pop(snapshot.experiment, None)
                else:
                    done += 1
        self._unavailable = 0
        return done

    def _save(self, run_id: str, kind: str, **columns: Any) -> None:
        with self.db.session() as session:
            row = session.get(MlflowRunRow, run_id)
            if row is None:
                row = MlflowRunRow(run_id=run_id, kind=kind)
                session.add(row)
            for name, value in columns.items():
                setattr(row, name, value)

    def _failed(self, snapshot: RunSnapshot, error: Exception) -> None:
        failures = int(snapshot.mirror.get("failures") or 0) + 1
        delay = backoff_seconds(failures)
        log.warning(
            "MLflow mirror of %s failed (%d in a row; next try in %.0f s): %s",
            snapshot.run_id,
            failures,
            delay,
            error,
        )
        self._save(
            snapshot.run_id,
            snapshot.kind,
            failures=failures,
            last_error=str(error)[:2000],
            next_attempt_at=utcnow() + timedelta(seconds=delay),
        )

    def _experiment_id(self, client: MlflowRestClient, name: str) -> str:
        if name not in self._experiments:
            self._experiments[name] = client.experiment_id(name)
        return self._experiments[name]

    def sync_run(self, client: MlflowRestClient, snapshot: RunSnapshot) -> None:
        """Bring one run up to date, saving progress after every step that succeeded."""
        mirror, run_id, kind = snapshot.mirror, snapshot.run_id, snapshot.kind
        mlflow_run = mirror.get("mlflow_run_id")
        if mlflow_run is None:
            experiment = self._experiment_id(client, snapshot.experiment)
            # a run created right before a crash (its id not saved) is found by its tag
            mlflow_run = client.find_run(experiment, RUN_ID_TAG, run_id) or client.create_run(
                experiment,
                snapshot.run_name,
                snapshot.start_ms,
                {k: _clip(v, MAX_TAG_VALUE) for k, v in snapshot.tags.items()},
            )
            self._save(run_id, kind, experiment_id=experiment, mlflow_run_id=mlflow_run)
        if not mirror.get("params_logged"):
            params = {_key(k): _clip(v, MAX_PARAM_VALUE) for k, v in snapshot.params.items()}
            client.log_batch(mlflow_run, params=params)
            self._save(run_id, kind, params_logged=True)
        self._sync_metrics(client, snapshot, mlflow_run)
        if mirror.get("mirrored_state") != snapshot.state:
            tags = {"raydeck.state": snapshot.state}
            if snapshot.state_reason:
                tags["raydeck.state_reason"] = _clip(snapshot.state_reason, MAX_TAG_VALUE)
            client.log_batch(mlflow_run, tags=tags)
            ended = snapshot.status in _ENDED
            client.update_run(mlflow_run, snapshot.status, snapshot.end_ms if ended else None)
            self._save(run_id, kind, mirrored_state=snapshot.state, closed=ended)
        if mirror.get("failures"):
            self._save(run_id, kind, failures=0, last_error=None, next_attempt_at=None)

    def _sync_metrics(self, client: MlflowRestClient, snapshot: RunSnapshot, run: str) -> None:
        last = int(snapshot.mirror.get("last_metric_id") or 0)
        while True:
            with self.db.session() as session:
                points = session.scalars(
                    select(TrainingMetricRow)
                    .where(TrainingMetricRow.run_id == snapshot.run_id)
                    .where(TrainingMetricRow.id > last)
                    .order_by(TrainingMetricRow.id)
                    .limit(METRIC_PAGE)
                ).all()
                batch = [
                    {
                        "key": _key(p.metric),
                        "value": p.value,
                        "timestamp": _ms(p.recorded_at),
                        "step": p.step or 0,
                    }
                    for p in points
                    if math.isfinite(p.value)  # JSON has no NaN/inf
                ]
                newest = points[-1].id if points else last
            if not points:
                return
            if batch:
                client.log_batch(run, metrics=batch)
            last = newest
            self._save(snapshot.run_id, snapshot.kind, last_metric_id=last)
            snapshot.mirror["last_metric_id"] = last
            if len(points) < METRIC_PAGE:
                return
