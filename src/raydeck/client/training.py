"""``RaydeckClient.custom_jobs`` / ``.tuning_jobs`` / ``.training_pipelines``.

job = rd.custom_jobs.create(CustomJobCreate.model_validate({...}))
job = rd.custom_jobs.wait(job.id)
print(job.state, rd.custom_jobs.metrics(job.id), rd.custom_jobs.logs(job.id))
"""

from __future__ import annotations

import time
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from raydeck.client.http import ApiTransport
from raydeck.core.models import Page
from raydeck.core.models.pipelines import TrainingPipeline, TrainingPipelineCreate
from raydeck.core.models.training import (
    TERMINAL_TRAINING_STATES,
    CustomJob,
    CustomJobCreate,
    MetricPoint,
    TrainingState,
)
from raydeck.core.models.tuning import (
    HyperparameterTuningJob,
    HyperparameterTuningJobCreate,
    Trial,
)

__all__ = ["CustomJobApi", "TrainingPipelineApi", "TuningJobApi"]

M = TypeVar("M", CustomJob, HyperparameterTuningJob, TrainingPipeline)


class _Resource(Generic[M]):
    path: str
    model: type[M]

    def __init__(self, api: ApiTransport) -> None:
        self._api = api

    def _create(self, request: BaseModel) -> M:
        data = self._api.request("POST", self.path, json=request.model_dump(mode="json"))
        return self.model.model_validate(data)

    def get(self, job_id: str) -> M:
        return self.model.model_validate(self._api.request("GET", f"{self.path}/{job_id}"))

    def list(
        self,
        *,
        state: TrainingState | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Page[M]:
        params: dict[str, Any] = {"page_size": page_size, "page_token": page_token}
        if state is not None and self.path != "/api/v1/trainingPipelines":
            params["state"] = state
        data = self._api.request("GET", self.path, params=params)
        return Page[self.model].model_validate(data)  # type: ignore[name-defined]

    def cancel(self, job_id: str) -> M:
        return self.model.model_validate(self._api.request("POST", f"{self.path}/{job_id}:cancel"))

    def delete(self, job_id: str) -> M:
        return self.model.model_validate(self._api.request("DELETE", f"{self.path}/{job_id}"))

    def wait(
        self,
        job_id: str,
        *,
        timeout: float = 600,
        until: frozenset[TrainingState] = TERMINAL_TRAINING_STATES,
        poll: float = 0.5,
    ) -> M:
        """Poll until the state is in ``until`` (the end, by default)."""
        deadline = time.monotonic() + timeout
        while True:
            item = self.get(job_id)
            if item.state in until:
                return item
            if time.monotonic() > deadline:
                raise TimeoutError(f"{job_id} still {item.state.value} after {timeout:g} s")
            time.sleep(poll)


class CustomJobApi(_Resource[CustomJob]):
    path = "/api/v1/customJobs"
    model = CustomJob

    def create(self, request: CustomJobCreate) -> CustomJob:
        return self._create(request)

    def logs(self, job_id: str, replica: str = "workerpool0-0") -> str:
        return str(
            self._api.request("GET", f"{self.path}/{job_id}/logs", params={"replica": replica})
        )

    def metrics(self, job_id: str, metric: str | None = None) -> list[MetricPoint]:
        data = self._api.request("GET", f"{self.path}/{job_id}/metrics", params={"metric": metric})
        return [MetricPoint.model_validate(p) for p in data]

    def artifacts(self, job_id: str) -> list[str]:
        return list(self._api.request("GET", f"{self.path}/{job_id}/artifacts"))


class TuningJobApi(_Resource[HyperparameterTuningJob]):
    path = "/api/v1/hyperparameterTuningJobs"
    model = HyperparameterTuningJob

    def create(self, request: HyperparameterTuningJobCreate) -> HyperparameterTuningJob:
        return self._create(request)

    def trials(self, job_id: str) -> list[Trial]:
        data = self._api.request("GET", f"{self.path}/{job_id}/trials")
        return [Trial.model_validate(t) for t in data]

    def trial_metrics(
        self, job_id: str, trial_id: str, metric: str | None = None
    ) -> list[MetricPoint]:
        data = self._api.request(
            "GET", f"{self.path}/{job_id}/trials/{trial_id}/metrics", params={"metric": metric}
        )
        return [MetricPoint.model_validate(p) for p in data]


class TrainingPipelineApi(_Resource[TrainingPipeline]):
    path = "/api/v1/trainingPipelines"
    model = TrainingPipeline

    def create(self, request: TrainingPipelineCreate) -> TrainingPipeline:
        return self._create(request)
