"""BatchPredictionJob: a model version run over files with Ray Data on a cluster."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, field_validator

from raydeck.core.models.common import LenientModel, StrictModel

__all__ = [
    "TERMINAL_BATCH_STATES",
    "BatchInput",
    "BatchInputFormat",
    "BatchInputRecord",
    "BatchOutput",
    "BatchOutputFormat",
    "BatchOutputRecord",
    "BatchPredictSpec",
    "BatchPredictionCounts",
    "BatchPredictionJob",
    "BatchPredictionJobCreate",
    "BatchPredictionState",
    "BatchResources",
    "BatchResourcesRecord",
]

Uri = Annotated[str, Field(min_length=1, max_length=4096)]
ColumnName = Annotated[str, Field(min_length=1, max_length=256)]


class BatchPredictionState(StrEnum):
    QUEUED = "QUEUED"  # stored; the reconciler has not submitted the Ray job yet
    PENDING = "PENDING"  # the Ray job is submitted and waiting to start
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


TERMINAL_BATCH_STATES = frozenset(
    {BatchPredictionState.SUCCEEDED, BatchPredictionState.FAILED, BatchPredictionState.CANCELLED}
)


class BatchInputFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"


class BatchOutputFormat(StrEnum):
    JSONL = "jsonl"
    PARQUET = "parquet"


def _unique(values: list[str] | None) -> list[str] | None:
    if values is not None:
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise ValueError(f"must be unique: {', '.join(duplicates)} given twice")
    return values


class BatchInput(StrictModel):
    """Files to predict on. ``uris`` are absolute paths, directories, globs or fsspec URIs.

    JSONL: one instance per line (a JSON array of features, or an object). CSV/Parquet: one
    instance per row, made of ``feature_columns`` (default: every column, in file order).
    """

    uris: Annotated[list[Uri], Field(min_length=1, max_length=1000)]
    format: BatchInputFormat | None = None  # default: from the first file's extension
    feature_columns: Annotated[list[ColumnName], Field(min_length=1, max_length=10000)] | None = (
        None
    )

    @field_validator("feature_columns")
    @classmethod
    def _unique_columns(cls, value: list[str] | None) -> list[str] | None:
        return _unique(value)


class BatchOutput(StrictModel):
    """A directory (path or fsspec URI) that must not hold results yet."""

    uri: Uri
    format: BatchOutputFormat = BatchOutputFormat.JSONL


class BatchResources(StrictModel):
    """Per model replica (one Ray Data actor)."""

    num_cpus: Annotated[float, Field(ge=0, le=1024)] = 1
    num_gpus: Annotated[float, Field(ge=0, le=64)] = 0


class BatchPredictionJobCreate(StrictModel):
    display_name: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    model: Annotated[str, Field(min_length=1, max_length=256)]  # m, m@3, m@alias or mv-…
    cluster: Annotated[str, Field(min_length=1, max_length=64)]
    input: BatchInput
    output: BatchOutput
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    resources: BatchResources = Field(default_factory=BatchResources)
    concurrency: Annotated[int, Field(ge=1, le=1024)] = 1  # model replicas
    parameters: dict[str, Any] | None = None  # passed to every predict call


class BatchInputRecord(BatchInput):
    """``BatchInput`` as stored and returned (lenient: newer servers may add fields)."""

    model_config = LenientModel.model_config


class BatchOutputRecord(BatchOutput):
    model_config = LenientModel.model_config


class BatchResourcesRecord(BatchResources):
    model_config = LenientModel.model_config


class BatchPredictionCounts(LenientModel):
    rows_total: int = 0
    rows_succeeded: int = 0
    rows_failed: int = 0


class BatchPredictionJob(LenientModel):
    id: str
    display_name: str
    project: str = "default"
    model: str  # as given
    model_version_id: str  # the global version id it resolved to (mv-…)
    model_version: str  # model@version_id
    framework: str
    cluster: str
    input: BatchInputRecord
    output: BatchOutputRecord
    batch_size: int
    resources: BatchResourcesRecord
    concurrency: int
    parameters: dict[str, Any] | None = None
    state: BatchPredictionState
    state_reason: str | None = None
    counts: BatchPredictionCounts = Field(default_factory=BatchPredictionCounts)
    output_files: list[str] = Field(default_factory=list)
    submission_id: str  # the Ray job's submission id on the cluster
    job_id: str | None = None  # the Raydeck Job record of that Ray job, once submitted
    created_at: datetime
    start_time: datetime | None = None
    end_time: datetime | None = None
    updated_at: datetime


class BatchPredictSpec(LenientModel):
    """What the server hands ``python -m raydeck.runtime.batch_predict --spec``."""

    job_id: str
    framework: str
    artifact_uri: str
    model_version: str = ""
    input: BatchInputRecord
    output: BatchOutputRecord
    batch_size: int = 256
    num_cpus: float = 1
    num_gpus: float = 0
    concurrency: int = 1
    parameters: dict[str, Any] | None = None
