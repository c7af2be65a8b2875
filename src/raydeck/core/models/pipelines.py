"""TrainingPipeline: run a CustomJob (or a tuning job, taking its best trial), then upload the
model found in ``AIP_MODEL_DIR`` to the registry as a new model or a new version."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, model_validator

from raydeck.core.models.common import LenientModel, Name, StrictModel
from raydeck.core.models.limits import LabelMap
from raydeck.core.models.registry import Alias, Framework
from raydeck.core.models.training import CustomJobCreate, TrainingState
from raydeck.core.models.tuning import HyperparameterTuningJobCreate

__all__ = ["ModelToUpload", "TrainingPipeline", "TrainingPipelineCreate", "TrainingTask"]

Label = LabelMap


class TrainingTask(StrictModel):
    custom_job: CustomJobCreate | None = None
    hyperparameter_tuning_job: HyperparameterTuningJobCreate | None = None

    @model_validator(mode="after")
    def _one(self) -> TrainingTask:
        if (self.custom_job is None) == (self.hyperparameter_tuning_job is None):
            raise ValueError("give exactly one of custom_job, hyperparameter_tuning_job")
        return self


class ModelToUpload(StrictModel):
    display_name: Name | None = None
    parent_model: str | None = None  # add a version to this model instead
    framework: Framework
    description: str | None = None
    labels: Label = Field(default_factory=dict)
    version_aliases: list[Alias] = Field(default_factory=list, max_length=32)

    @model_validator(mode="after")
    def _target(self) -> ModelToUpload:
        if (self.display_name is None) == (self.parent_model is None):
            raise ValueError("give exactly one of display_name (new model), parent_model")
        return self


class TrainingPipelineCreate(StrictModel):
    display_name: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    training_task: TrainingTask
    model_to_upload: ModelToUpload
    labels: Label = Field(default_factory=dict)


class TrainingPipeline(LenientModel):
    id: str
    display_name: str
    project: str = "default"
    training_task: TrainingTask
    model_to_upload: ModelToUpload
    labels: dict[str, str] = Field(default_factory=dict)
    state: TrainingState
    state_reason: str | None = None
    custom_job_id: str | None = None
    hyperparameter_tuning_job_id: str | None = None
    model_version: str | None = None  # "name@version" once uploaded
    model_version_id: str | None = None
    created_at: datetime
    start_time: datetime | None = None
    end_time: datetime | None = None
    updated_at: datetime
