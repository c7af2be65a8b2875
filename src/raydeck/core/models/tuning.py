"""HyperparameterTuningJob: a study (metric, parameters, algorithm) over trials of a CustomJob.

Field names follow the reference platform (``study_spec``, ``trial_job_spec``,
``max_trial_count``, ``parallel_trial_count``, ``max_failed_trial_count``,
``double_value_spec``...). Cross-field rules that name a parameter (min > max, a grid over a
continuous parameter without ``step``) are checked by the service so the 400 names the field.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, PositiveInt, model_validator

from raydeck.core.models.common import LenientModel, StrictModel
from raydeck.core.models.limits import LabelMap, capped
from raydeck.core.models.training import CustomJobSpec, MetricPoint, TrainingState

__all__ = [
    "MAX_PARALLEL_TRIALS",
    "Algorithm",
    "CategoricalValueSpec",
    "DiscreteValueSpec",
    "DoubleValueSpec",
    "EarlyStopping",
    "Goal",
    "HyperparameterTuningJob",
    "HyperparameterTuningJobCreate",
    "IntegerValueSpec",
    "MetricSpec",
    "ParameterSpec",
    "Pruner",
    "ScaleType",
    "StudySpec",
    "Trial",
    "TrialMeasurement",
    "TrialReport",
    "TrialReportResult",
    "TrialState",
]

MAX_PARALLEL_TRIALS = 32
ParameterId = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")]


class Goal(StrEnum):
    MAXIMIZE = "MAXIMIZE"
    MINIMIZE = "MINIMIZE"


class ScaleType(StrEnum):
    UNIT_LINEAR_SCALE = "UNIT_LINEAR_SCALE"
    UNIT_LOG_SCALE = "UNIT_LOG_SCALE"


class Algorithm(StrEnum):
    RANDOM = "random"
    GRID = "grid"
    BAYESIAN = "bayesian"  # Optuna's TPE
    CMAES = "cmaes"


class Pruner(StrEnum):
    MEDIAN = "median"
    SUCCESSIVE_HALVING = "successive_halving"


class MetricSpec(StrictModel):
    metric_id: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_./-]{0,127}$")]
    goal: Goal


class DoubleValueSpec(StrictModel):
    min_value: float
    max_value: float
    step: Annotated[float, Field(gt=0)] | None = None  # grid points; also a quantized search


class IntegerValueSpec(StrictModel):
    min_value: int
    max_value: int
    step: PositiveInt = 1


class CategoricalValueSpec(StrictModel):
    values: list[Annotated[str, Field(max_length=256)]] = Field(min_length=1, max_length=1000)


class DiscreteValueSpec(StrictModel):
    values: list[float] = Field(min_length=1, max_length=1000)


class ParameterSpec(StrictModel):
    parameter_id: ParameterId
    double_value_spec: DoubleValueSpec | None = None
    integer_value_spec: IntegerValueSpec | None = None
    categorical_value_spec: CategoricalValueSpec | None = None
    discrete_value_spec: DiscreteValueSpec | None = None
    scale_type: ScaleType = ScaleType.UNIT_LINEAR_SCALE

    @model_validator(mode="after")
    def _one_kind(self) -> ParameterSpec:
        kinds = [
            k
            for k in (
                "double_value_spec",
                "integer_value_spec",
                "categorical_value_spec",
                "discrete_value_spec",
            )
            if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "give exactly one of double_value_spec, integer_value_spec, "
                f"categorical_value_spec, discrete_value_spec (got {len(kinds)})"
            )
        return self


class EarlyStopping(StrictModel):
    """Stop poor trials from their intermediate metrics (Optuna pruners)."""

    pruner: Pruner = Pruner.MEDIAN
    startup_trials: Annotated[int, Field(ge=0)] = 3  # median: trials that always run to the end
    warmup_steps: Annotated[int, Field(ge=0)] = 0  # median: steps before pruning applies
    min_resource: PositiveInt = 1  # successive halving: steps before the first rung
    reduction_factor: Annotated[int, Field(ge=2)] = 3


class StudySpec(StrictModel):
    metrics: list[MetricSpec] = Field(min_length=1, max_length=1)
    parameters: list[ParameterSpec] = Field(min_length=1, max_length=64)
    algorithm: Algorithm = Algorithm.BAYESIAN
    seed: int | None = None
    early_stopping: EarlyStopping | None = None


class HyperparameterTuningJobCreate(StrictModel):
    display_name: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    cluster: str | None = None
    study_spec: StudySpec
    trial_job_spec: CustomJobSpec
    max_trial_count: Annotated[int, Field(ge=1), capped("max_trial_count")]
    parallel_trial_count: Annotated[int, Field(ge=1), capped("max_parallel_trials")] = 1
    max_failed_trial_count: Annotated[int, Field(ge=0), capped("max_trial_count")] = 0  # 0: any
    labels: LabelMap = Field(default_factory=dict)


class TrialState(StrEnum):
    REQUESTED = "REQUESTED"
    ACTIVE = "ACTIVE"
    SUCCEEDED = "SUCCEEDED"
    STOPPED = "STOPPED"  # stopped early by the pruner; its last measurement counts
    INFEASIBLE = "INFEASIBLE"  # ended without reporting the study's metric
    FAILED = "FAILED"


class TrialMeasurement(LenientModel):
    step: int | None = None
    metrics: dict[str, float]


class Trial(LenientModel):
    id: str
    number: int
    state: TrialState
    parameters: dict[str, Any]
    final_measurement: TrialMeasurement | None = None
    state_reason: str | None = None
    output_dir: str
    start_time: datetime | None = None
    end_time: datetime | None = None


class HyperparameterTuningJob(LenientModel):
    id: str
    display_name: str
    project: str = "default"
    cluster: str | None = None
    ephemeral_cluster: bool = False
    study_spec: StudySpec
    trial_job_spec: CustomJobSpec
    max_trial_count: int
    parallel_trial_count: int
    max_failed_trial_count: int
    labels: dict[str, str] = Field(default_factory=dict)
    state: TrainingState
    state_reason: str | None = None
    attempt: int = 0
    submission_id: str | None = None
    job_id: str | None = None
    base_output_dir: str
    trial_counts: dict[str, int] = Field(default_factory=dict)
    best_trial: Trial | None = None
    pipeline_id: str | None = None
    created_at: datetime
    start_time: datetime | None = None
    end_time: datetime | None = None
    updated_at: datetime


class TrialReport(StrictModel):
    """What a running trial sends: new metric points (from ``raydeck.report`` / hypertune)."""

    points: list[MetricPoint] = Field(default_factory=list, max_length=10000)


class TrialReportResult(LenientModel):
    should_stop: bool = False
