"""The tuner: an Optuna study per tuning job, driven by the control plane (ask/tell).

Trials, their parameters, Optuna's per-trial sampler state and every metric point are
stored, so the in-memory study is only a cache: after a server restart it is rebuilt from
the rows (samplers are re-seeded with ``seed + trials so far`` so they do not replay the
same draws) and the study carries on. Requests for one study are serialized by a lock.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState as OptunaState
from sqlalchemy import select
from sqlalchemy.orm import Session

from raydeck.core.errors import InvalidArgumentError
from raydeck.core.ids import new_id
from raydeck.core.models.tuning import (
    MAX_PARALLEL_TRIALS,
    Algorithm,
    Goal,
    HyperparameterTuningJobCreate,
    ParameterSpec,
    Pruner,
    ScaleType,
    StudySpec,
    TrialState,
)
from raydeck.db.models import TrainingJobRow, TrainingMetricRow, TrialRow, utcnow
from raydeck.db.session import Database

__all__ = [
    "StudyCache",
    "distributions",
    "effective_trial_count",
    "grid_size",
    "trial_output_dir",
    "validate_tuning_request",
]

optuna.logging.set_verbosity(optuna.logging.WARNING)

T = TrialState
_TO_OPTUNA = {
    T.REQUESTED: OptunaState.RUNNING,
    T.ACTIVE: OptunaState.RUNNING,
    T.SUCCEEDED: OptunaState.COMPLETE,
    T.STOPPED: OptunaState.PRUNED,
    T.INFEASIBLE: OptunaState.FAIL,
    T.FAILED: OptunaState.FAIL,
}


# ---- validation ------------------------------------------------------------------------------


def _check_parameter(index: int, param: ParameterSpec, algorithm: Algorithm) -> None:
    where = f"study_spec.parameters[{index}]"
    numeric = param.double_value_spec or param.integer_value_spec
    kind = "double_value_spec" if param.double_value_spec else "integer_value_spec"
    if numeric is not None:
        if numeric.min_value > numeric.max_value:
            raise InvalidArgumentError(
                f"{param.parameter_id}: min_value {numeric.min_value} > max_value "
                f"{numeric.max_value}",
                field=f"{where}.{kind}.min_value",
            )
        if param.scale_type is ScaleType.UNIT_LOG_SCALE and numeric.min_value <= 0:
            raise InvalidArgumentError(
                f"{param.parameter_id}: UNIT_LOG_SCALE needs min_value > 0",
                field=f"{where}.{kind}.min_value",
            )
    if param.double_value_spec is not None:
        double = param.double_value_spec
        if algorithm is Algorithm.GRID and double.step is None:
            raise InvalidArgumentError(
                f"{param.parameter_id}: a grid over a continuous parameter needs "
                "double_value_spec.step (or use discrete_value_spec)",
                field=f"{where}.double_value_spec.step",
            )
        if double.step is not None and param.scale_type is ScaleType.UNIT_LOG_SCALE:
            raise InvalidArgumentError(
                f"{param.parameter_id}: step cannot be combined with UNIT_LOG_SCALE",
                field=f"{where}.double_value_spec.step",
            )
    if param.discrete_value_spec is not None:
        values = param.discrete_value_spec.values
        if len(set(values)) != len(values) or not all(math.isfinite(v) for v in values):
            raise InvalidArgumentError(
                f"{param.parameter_id}: discrete values must be distinct finite numbers",
                field=f"{where}.discrete_value_spec.values",
            )


def validate_tuning_request(request: HyperparameterTuningJobCreate) -> None:
    study = request.study_spec
    seen: set[str] = set()
    for index, param in enumerate(study.parameters):
        if param.parameter_id in seen:
            raise InvalidArgumentError(
                f"parameter_id {param.parameter_id!r} appears twice",
                field=f"study_spec.parameters[{index}].parameter_id",
            )
        seen.add(param.parameter_id)
        _check_parameter(index, param, study.algorithm)
    limit = min(MAX_PARALLEL_TRIALS, request.max_trial_count)
    if request.parallel_trial_count > limit:
        raise InvalidArgumentError(
            f"parallel_trial_count {request.parallel_trial_count} is more than allowed "
            f"({limit}: at most {MAX_PARALLEL_TRIALS} and at most max_trial_count)",
            field="parallel_trial_count",
        )
    if study.algorithm is Algorithm.CMAES and any(
        p.categorical_value_spec for p in study.parameters
    ):
        raise InvalidArgumentError(
            "CMA-ES searches numeric spaces; use bayesian for categorical parameters",
            field="study_spec.algorithm",
        )


# ---- the search space ------------------------------------------------------------------------


def distributions(study: StudySpec) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for p in study.parameters:
        log = p.scale_type is ScaleType.UNIT_LOG_SCALE
        if p.double_value_spec is not None:
            d = p.double_value_spec
            out[p.parameter_id] = FloatDistribution(d.min_value, d.max_value, log=log, step=d.step)
        elif p.integer_value_spec is not None:
            i = p.integer_value_spec
            step = 1 if log else i.step
            out[p.parameter_id] = IntDistribution(i.min_value, i.max_value, log=log, step=step)
        elif p.categorical_value_spec is not None:
            out[p.parameter_id] = CategoricalDistribution(p.categorical_value_spec.values)
        else:
            assert p.discrete_value_spec is not None
            out[p.parameter_id] = CategoricalDistribution(sorted(p.discrete_value_spec.values))
    return out


def _grid(study: StudySpec) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for name, dist in distributions(study).items():
        if isinstance(dist, CategoricalDistribution):
            grid[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution):
            grid[name] = list(range(dist.low, dist.high + 1, dist.step))
        else:
            assert isinstance(dist, FloatDistribution) and dist.step is not None
            count = math.floor((dist.high - dist.low) / dist.step + 1e-9) + 1
            grid[name] = [round(dist.low + k * dist.step, 12) for k in range(count)]
    return grid


def grid_size(study: StudySpec) -> int:
    return math.prod(len(v) for v in _grid(study).values())


def effective_trial_count(study: StudySpec, max_trial_count: int) -> int:
    if study.algorithm is Algorithm.GRID:
        return min(max_trial_count, grid_size(study))
    return max_trial_count


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler stops ``study.optimize`` when the grid is used up, which raises
    outside ``optimize`` (ask/tell); the budget is capped at the grid size instead."""

    def after_trial(self, *args: Any, **kwargs: Any) -> None:
        return None


def _sampler(study: StudySpec, max_trials: int, offset: int) -> optuna.samplers.BaseSampler:
    seed = None if study.seed is None else study.seed + offset
    if study.algorithm is Algorithm.RANDOM:
        return optuna.samplers.RandomSampler(seed=seed)
    if study.algorithm is Algorithm.GRID:
        return _GridSampler(_grid(study), seed=seed)
    # A few random trials before modelling: Optuna's default of 10 would leave a small budget
    # (e.g. 12 trials) almost all random.
    startup = max(2, min(10, max_trials // 4))
    if study.algorithm is Algorithm.CMAES:
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup)
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=startup, constant_liar=True, multivariate=True
    )


def _pruner(study: StudySpec) -> optuna.pruners.BasePruner:
    stopping = study.early_stopping
    if stopping is None:
        return optuna.pruners.NopPruner()
    if stopping.pruner is Pruner.SUCCESSIVE_HALVING:
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=stopping.min_resource, reduction_factor=stopping.reduction_factor
        )
    return optuna.pruners.MedianPruner(
        n_startup_trials=stopping.startup_trials, n_warmup_steps=stopping.warmup_steps
    )


def trial_output_dir(job_output_dir: str, trial_id: str) -> str:
    return os.path.join(job_output_dir, trial_id)


# ---- the live study --------------------------------------------------------------------------


@dataclass
class _Study:
    study: optuna.Study
    spec: StudySpec
    dists: dict[str, BaseDistribution]
    lock: threading.Lock = field(default_factory=threading.Lock)


class StudyCache:
    """One per Database: the live Optuna studies of that server, rebuilt on demand."""

    _instances: weakref.WeakKeyDictionary[Database, StudyCache] = weakref.WeakKeyDictionary()
    _guard = threading.Lock()

    def __init__(self) -> None:
        self._studies: dict[str, _Study] = {}
        self._build_lock = threading.Lock()

    @classmethod
    def of(cls, db: Database) -> StudyCache:
        with cls._guard:
            cache = cls._instances.get(db)
            if cache is None:
                cache = cls._instances[db] = StudyCache()
            return cache

    def forget(self, job_id: str) -> None:
        self._studies.pop(job_id, None)

    def study(self, session: Session, row: TrainingJobRow) -> _Study:
        with self._build_lock:
            live = self._studies.get(row.id)
            if live is None:
                live = self._studies[row.id] = self._rebuild(session, row)
            return live

    def _rebuild(self, session: Session, row: TrainingJobRow) -> _Study:
        spec = StudySpec.model_validate(row.spec["study_spec"])
        trials = list(
            session.scalars(
                select(TrialRow).where(TrialRow.tuning_job_id == row.id).order_by(TrialRow.number)
            )
        )
        max_trials = effective_trial_count(spec, row.spec["max_trial_count"])
        goal = spec.metrics[0].goal
        study = optuna.create_study(
            direction="maximize" if goal is Goal.MAXIMIZE else "minimize",
            sampler=_sampler(spec, max_trials, len(trials)),
            pruner=_pruner(spec),
        )
        dists = distributions(spec)
        metric = spec.metrics[0].metric_id
        for trial in trials:
            state = _TO_OPTUNA[TrialState(trial.state)]
            steps = _intermediate(session, trial.id, metric)
            study.add_trial(
                optuna.trial.create_trial(
                    params=trial.params,
                    distributions={k: v for k, v in dists.items() if k in trial.params},
                    value=trial.final_value if state is OptunaState.COMPLETE else None,
                    state=state,
                    intermediate_values=steps,
                    system_attrs=dict(trial.sampler_attrs),
                )
            )
        return _Study(study, spec, dists)


def _intermediate(session: Session, run_id: str, metric: str) -> dict[int, float]:
    rows = session.execute(
        select(TrainingMetricRow.step, TrainingMetricRow.value)
        .where(TrainingMetricRow.run_id == run_id, TrainingMetricRow.metric == metric)
        .where(TrainingMetricRow.step.is_not(None))
        .order_by(TrainingMetricRow.id)
    )
    return {int(step): float(value) for step, value in rows if step is not None}


def ask_trials(session: Session, live: _Study, row: TrainingJobRow, count: int) -> list[TrialRow]:
    """Up to ``count`` new ACTIVE trials (fewer when the budget is spent)."""
    started = len(live.study.trials)
    budget = effective_trial_count(live.spec, row.spec["max_trial_count"]) - started
    made: list[TrialRow] = []
    for _ in range(max(0, min(count, budget))):
        trial = live.study.ask(live.dists)
        frozen = live.study._storage.get_trial(trial._trial_id)
        trial_id = new_id("trial")
        made.append(
            TrialRow(
                id=trial_id,
                tuning_job_id=row.id,
                number=trial.number,
                state=TrialState.ACTIVE.value,
                params=dict(trial.params),
                sampler_attrs=_jsonable(frozen.system_attrs),
                start_time=utcnow(),
            )
        )
    for trial_row in made:
        session.add(trial_row)
    session.flush()
    return made


def _jsonable(attrs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in attrs.items():
        if isinstance(value, str | int | float | bool | list | dict) or value is None:
            out[key] = value
    return out


def report_points(live: _Study, trial: TrialRow, points: list[tuple[int, float]]) -> bool:
    """Intermediate values of the study's metric; True when the pruner stops the trial."""
    if not points or live.spec.early_stopping is None:
        return False
    handle = optuna.trial.Trial(live.study, trial.number)
    frozen = live.study._storage.get_trial(trial.number)
    if frozen.state is not OptunaState.RUNNING:
        return False
    for step, value in points:
        if step not in frozen.intermediate_values:
            handle.report(value, step)
    return bool(handle.should_prune())


def tell(live: _Study, trial: TrialRow, state: TrialState, value: float | None) -> None:
    frozen = live.study._storage.get_trial(trial.number)
    if frozen.state is not OptunaState.RUNNING:
        return
    if state is TrialState.SUCCEEDED and value is not None:
        live.study.tell(trial.number, value)
    elif state is TrialState.STOPPED:
        live.study.tell(trial.number, state=OptunaState.PRUNED)
    else:
        live.study.tell(trial.number, state=OptunaState.FAIL)
    trial.sampler_attrs = _jsonable(live.study._storage.get_trial(trial.number).system_attrs)


def params_as_args(params: dict[str, Any]) -> list[str]:
    return [f"--{name}={value}" for name, value in params.items()]
