"""``RaydeckClient.batch_predictions``: run a registered model over files on a cluster.

job = rd.batch_predictions.create(
    model="churn@prod", cluster="dev", input="data/*.csv", output="out/churn-2026-11"
)
job = rd.batch_predictions.wait(job.id)
print(job.counts.rows_succeeded, job.counts.rows_failed, job.output_files)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from raydeck.client.http import ApiTransport
from raydeck.core.errors import UnavailableError
from raydeck.core.models import Page
from raydeck.core.models.batch_predictions import (
    TERMINAL_BATCH_STATES,
    BatchPredictionJob,
    BatchPredictionJobCreate,
    BatchPredictionState,
)

__all__ = ["BatchPredictionApi", "absolute_uri"]

_PATH = "/api/v1/batchPredictionJobs"


def absolute_uri(uri: str) -> str:
    """Local paths (globs included) made absolute here, where they are relative to; URIs kept.

    The server resolves paths on its own machine, which for the local backend is this one.
    """
    if "://" in uri:
        return uri
    return os.path.abspath(os.path.expanduser(uri))


class BatchPredictionApi:
    def __init__(self, api: ApiTransport) -> None:
        self._api = api

    def create(
        self,
        request: BatchPredictionJobCreate | None = None,
        *,
        model: str | None = None,
        cluster: str | None = None,
        input: str | Sequence[str] | None = None,
        output: str | None = None,
        input_table: str | None = None,
        output_table: str | None = None,
        output_mode: str = "create",
        input_format: str | None = None,
        output_format: str = "jsonl",
        feature_columns: Sequence[str] | None = None,
        batch_size: int = 256,
        concurrency: int = 1,
        num_cpus: float | None = None,
        num_gpus: float = 0,
        parameters: dict[str, Any] | None = None,
        display_name: str | None = None,
        max_failed_fraction: float | None = None,
    ) -> BatchPredictionJob:
        """From a ``BatchPredictionJobCreate``, or from keywords: ``input`` (a path, glob, URI
        or a list of them; relative local paths are made absolute first) or ``input_table``
        (``conn.dataset.table``); ``output`` (a directory) or ``output_table`` with
        ``output_mode`` ``create`` or ``append``. The job FAILS when every row failed, or
        with ``max_failed_fraction`` when more than that fraction of its rows failed."""
        if request is None:
            uris = [input] if isinstance(input, str) else list(input or [])
            source: dict[str, Any] = (
                {"table": input_table}
                if input_table is not None and not uris
                else {"uris": [absolute_uri(u) for u in uris], "format": input_format}
            )
            if input_table is not None and uris:
                source["table"] = input_table  # both given: the server says which to drop
            target: dict[str, Any] = (
                {"table": output_table, "mode": output_mode}
                if output_table is not None and output is None
                else {"uri": absolute_uri(output) if output else output, "format": output_format}
            )
            if output_table is not None and output is not None:
                target["table"] = output_table
            request = BatchPredictionJobCreate.model_validate(
                {
                    "display_name": display_name,
                    "model": model,
                    "cluster": cluster,
                    "input": {
                        **source,
                        "feature_columns": list(feature_columns) if feature_columns else None,
                    },
                    "output": target,
                    "batch_size": batch_size,
                    "concurrency": concurrency,
                    "resources": {"num_cpus": num_cpus, "num_gpus": num_gpus},
                    "parameters": parameters,
                    "max_failed_fraction": max_failed_fraction,
                }
            )
        body = request.model_dump(mode="json", exclude_none=True)
        return BatchPredictionJob.model_validate(self._api.request("POST", _PATH, json=body))

    def get(self, job_id: str) -> BatchPredictionJob:
        return BatchPredictionJob.model_validate(self._api.request("GET", f"{_PATH}/{job_id}"))

    def list(
        self,
        *,
        state: BatchPredictionState | str | None = None,
        cluster: str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Page[BatchPredictionJob]:
        data = self._api.request(
            "GET",
            _PATH,
            params={
                "state": None if state is None else str(state),
                "cluster": cluster,
                "page_size": page_size,
                "page_token": page_token,
            },
        )
        return Page[BatchPredictionJob].model_validate(data)

    def cancel(self, job_id: str) -> BatchPredictionJob:
        data = self._api.request("POST", f"{_PATH}/{job_id}:cancel")
        return BatchPredictionJob.model_validate(data)

    def delete(self, job_id: str) -> BatchPredictionJob:
        """Delete an ended job's record; its output files stay where they are."""
        data = self._api.request("DELETE", f"{_PATH}/{job_id}")
        return BatchPredictionJob.model_validate(data)

    def logs(self, job_id: str) -> str:
        return str(self._api.request("GET", f"{_PATH}/{job_id}/logs"))

    def wait(
        self,
        job_id: str,
        *,
        timeout: float = 3600.0,
        poll: float = 0.5,
        on_update: Callable[[BatchPredictionJob], None] | None = None,
    ) -> BatchPredictionJob:
        """Until SUCCEEDED, FAILED or CANCELLED (returned, not raised); UnavailableError on
        timeout. ``on_update`` sees every state/count change."""
        deadline = time.monotonic() + timeout
        last: tuple[Any, ...] | None = None
        while True:
            job = self.get(job_id)
            seen = (job.state, job.counts.rows_total, job.counts.rows_failed)
            if on_update is not None and seen != last:
                on_update(job)
            last = seen
            if job.state in TERMINAL_BATCH_STATES:
                return job
            if time.monotonic() > deadline:
                raise UnavailableError(
                    f"batch prediction job {job_id} still {job.state.value} after {timeout}s"
                )
            time.sleep(poll)
