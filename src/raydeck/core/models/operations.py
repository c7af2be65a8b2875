"""Logs, cost reports, budgets and the price catalog."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AnyHttpUrl, Field, model_validator

from raydeck.core.models.common import LenientModel, StrictModel

__all__ = [
    "BillingDimension",
    "BillingReport",
    "BillingRow",
    "Budget",
    "BudgetUpdate",
    "LogEntry",
    "LogResourceKind",
    "LogSeverity",
    "MachinePrice",
    "PriceCatalog",
    "UnitPrices",
]


class LogSeverity(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"

    @property
    def rank(self) -> int:
        return list(LogSeverity).index(self)


class LogResourceKind(StrEnum):
    CLUSTER = "cluster"
    JOB = "job"
    ENDPOINT = "endpoint"
    TRIAL = "trial"
    BATCH_PREDICTION = "batch_prediction"


class LogEntry(LenientModel):
    id: int
    project: str
    resource_kind: str
    resource_id: str
    resource_name: str
    source: str  # e.g. "head/raylet.out", "ray-jobs-api", "predict"
    severity: LogSeverity
    time: datetime
    text: str


class UnitPrices(StrictModel):
    cpu_hour: Annotated[float, Field(ge=0)] = 0.0
    gpu_hour: Annotated[float, Field(ge=0)] = 0.0
    memory_gib_hour: Annotated[float, Field(ge=0)] = 0.0


class MachinePrice(StrictModel):
    hour: Annotated[float, Field(ge=0)]


class PriceCatalog(StrictModel):
    """Price of a node per hour: its machine type's price when listed, else by resources."""

    currency: Annotated[str, Field(min_length=1, max_length=8)] = "USD"
    default: UnitPrices = Field(default_factory=UnitPrices)
    machine_types: dict[Annotated[str, Field(min_length=1, max_length=64)], MachinePrice] = Field(
        default_factory=dict
    )

    def node_hour_price(
        self, *, machine_type: str | None, cpus: float, gpus: float, memory_bytes: int | None
    ) -> float:
        if machine_type and machine_type in self.machine_types:
            return self.machine_types[machine_type].hour
        gib = (memory_bytes or 0) / 1024**3
        return (
            cpus * self.default.cpu_hour
            + gpus * self.default.gpu_hour
            + gib * self.default.memory_gib_hour
        )


class BillingDimension(StrEnum):
    PROJECT = "project"
    CLUSTER = "cluster"
    JOB = "job"
    ENDPOINT = "endpoint"


class BillingRow(LenientModel):
    key: str  # project name, or cluster / job / endpoint id
    name: str  # for jobs: the Raydeck id of what ran (job-…, or its bpj-/cj-/hpt- owner)
    project: str
    amount: float
    node_seconds: float
    first: datetime | None = None  # when the cost in the report's window started accruing
    last: datetime | None = None  # … and when it last accrued (tells a deleted "dev" apart)


class BillingReport(LenientModel):
    by: BillingDimension
    currency: str
    since: datetime | None = None
    until: datetime | None = None
    rows: list[BillingRow]
    total: float


class BudgetUpdate(StrictModel):
    """Spend is counted from ``since`` (default: when the budget is first set)."""

    alert_amount: Annotated[float, Field(gt=0)] | None = None
    limit_amount: Annotated[float, Field(gt=0)] | None = None
    webhook_url: AnyHttpUrl | None = None
    since: datetime | None = None

    @model_validator(mode="after")
    def _alert_below_limit(self) -> BudgetUpdate:
        if self.alert_amount is None and self.limit_amount is None:
            raise ValueError("set alert_amount, limit_amount or both")
        if (
            self.alert_amount is not None
            and self.limit_amount is not None
            and self.alert_amount > self.limit_amount
        ):
            raise ValueError("alert_amount must not exceed limit_amount")
        if self.since is not None and self.since.tzinfo is None:
            raise ValueError("since needs a timezone (e.g. 2026-01-01T00:00:00Z)")
        return self


class Budget(LenientModel):
    project: str
    currency: str
    alert_amount: float | None = None
    limit_amount: float | None = None
    webhook_url: str | None = None
    since: datetime
    spent: float = 0.0
    alerted_at: datetime | None = None
    exhausted_at: datetime | None = None
