"""``RaydeckClient.custom_jobs`` / ``.tuning_jobs`` / ``.training_pipelines``.

job = rd.custom_jobs.create(CustomJobCreate.model_validate({...}))
job = rd.custom_jobs.wait(job.id)
print(job.state, rd.custom_jobs.metrics(job.id), rd.custom_jobs.logs(job.id))
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from raydeck.client.http import ApiTransport, raise_for_error
from raydeck.core.errors import UnavailableError
from raydeck.core.models import Page
from raydeck.core.models.pipelines import TrainingPipeline, TrainingPipelineCreate
from raydeck.core.models.training import (
    TERMINAL_TRAINING_STATES,
    ArtifactFile,
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

    def _download(self, url: str, dest: Path) -> Path:
        """Stream a file to ``dest`` (parents made); a failed download leaves no file."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        try:
            with self._api.http.stream("GET", url) as response:
                if not response.is_success:
                    response.read()
                    raise_for_error(response)
                with partial.open("wb") as handle:
                    for chunk in response.iter_bytes():
                        handle.write(chunk)
            partial.replace(dest)
        except httpx.HTTPError as exc:
            raise UnavailableError(f"download of {url} failed: {exc}") from exc
        finally:
            partial.unlink(missing_ok=True)
        return dest

    def get(self, job_id: str) -> M:
        return self.model.model_validate(self._api.request("GET", f"{self.path}/{job_id}"))

    def list(
        self,
        *,
        state: TrainingState | None = None,
        label: str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Page[M]:
        """A page of jobs; ``label="key=value"`` keeps those with that label."""
        params: dict[str, Any] = {"page_size": page_size, "page_token": page_token}
        if self.path != "/api/v1/trainingPipelines":
            params["state"], params["label"] = state, label
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

    def artifacts(self, job_id: str) -> list[ArtifactFile]:
        """Files under the job's AIP_* directories and metrics/, with sizes."""
        data = self._api.request("GET", f"{self.path}/{job_id}/artifacts")
        return [ArtifactFile.model_validate(a) for a in data]

    def download_artifact(self, job_id: str, path: str, dest: str | Path) -> Path:
        """Save the artifact ``path`` (as listed) to the file ``dest``."""
        url = f"{self.path}/{job_id}/artifacts/{quote(path)}"
        return self._download(url, Path(dest))


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

    def trial_artifacts(self, job_id: str, trial_id: str) -> list[ArtifactFile]:
        """Files under the trial's AIP_* directories and metrics/, with sizes."""
        data = self._api.request("GET", f"{self.path}/{job_id}/trials/{trial_id}/artifacts")
        return [ArtifactFile.model_validate(a) for a in data]

    def download_trial_artifact(
        self, job_id: str, trial_id: str, path: str, dest: str | Path
    ) -> Path:
        """Save the trial's artifact ``path`` (as listed) to the file ``dest``."""
        url = f"{self.path}/{job_id}/trials/{trial_id}/artifacts/{quote(path)}"
        return self._download(url, Path(dest))


class TrainingPipelineApi(_Resource[TrainingPipeline]):
    path = "/api/v1/trainingPipelines"
    model = TrainingPipeline

    def create(self, request: TrainingPipelineCreate) -> TrainingPipeline:
        return self._create(request)
