"""The few calls of MLflow's tracking REST API (``/api/2.0/mlflow``) that mirroring needs,
over httpx: no ``mlflow`` package in the server. Shapes follow MLflow's REST reference;
log-batch requests are split to MLflow's per-request limits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

__all__ = ["MlflowError", "MlflowRestClient", "MlflowUnavailableError"]

API = "/api/2.0/mlflow"
# MLflow refuses a log-batch with more than these (and more than 1000 items in all).
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100


class MlflowError(Exception):
    """The tracking server answered with an error (``code`` is MLflow's error_code)."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class MlflowUnavailableError(MlflowError):
    """Not reachable, or a 5xx/429: worth waiting for rather than trying other runs now."""


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class MlflowRestClient:
    def __init__(
        self,
        tracking_uri: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(
            base_url=self.tracking_uri, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> MlflowRestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        try:
            response = self.http.request(method, f"{API}/{path}", json=json, params=params)
        except httpx.HTTPError as exc:
            raise MlflowUnavailableError(
                f"cannot reach MLflow at {self.tracking_uri}: {exc}"
            ) from exc
        if response.is_success:
            data = response.json() if response.content else {}
            return data if isinstance(data, dict) else {}
        try:
            payload = response.json()
            code, message = payload.get("error_code"), payload.get("message", "")
        except ValueError:
            code, message = None, response.text[:300]
        text = f"MLflow {path}: HTTP {response.status_code} {code or ''} {message}".strip()
        if response.status_code >= 500 or response.status_code == 429:
            raise MlflowUnavailableError(text, code=code)
        raise MlflowError(text, code=code)

    # ---- experiments ----------------------------------------------------------------------

    def experiment_id(self, name: str) -> str:
        """The id of the experiment called ``name``, created when there is none."""
        try:
            found = self._call("GET", "experiments/get-by-name", params={"experiment_name": name})
        except MlflowError as exc:
            if exc.code != "RESOURCE_DOES_NOT_EXIST":
                raise
        else:
            experiment = found["experiment"]
            if experiment.get("lifecycle_stage") == "deleted":
                raise MlflowError(
                    f"MLflow experiment {name!r} is deleted; restore it (or purge it) to mirror "
                    "runs into it"
                )
            return str(experiment["experiment_id"])
        try:
            return str(
                self._call("POST", "experiments/create", json={"name": name})["experiment_id"]
            )
        except MlflowError as exc:  # created meanwhile by someone else
            if exc.code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.experiment_id(name)

    # ---- runs -----------------------------------------------------------------------------

    def find_run(self, experiment_id: str, tag: str, value: str) -> str | None:
        """An active run of the experiment whose tag ``tag`` is ``value``."""
        body = {
            "experiment_ids": [experiment_id],
            "filter": f"tags.`{tag}` = '{value}'",
            "max_results": 1,
        }
        runs = self._call("POST", "runs/search", json=body).get("runs", [])
        return str(runs[0]["info"]["run_id"]) if runs else None

    def create_run(
        self, experiment_id: str, run_name: str, start_time_ms: int, tags: dict[str, str]
    ) -> str:
        body = {
            "experiment_id": experiment_id,
            "run_name": run_name,
            "start_time": start_time_ms,
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        }
        return str(self._call("POST", "runs/create", json=body)["run"]["info"]["run_id"])

    def log_batch(
        self,
        run_id: str,
        *,
        metrics: Sequence[dict[str, Any]] = (),
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Metric dicts are MLflow's {key, value, timestamp, step}; several requests if big."""
        param_list = [{"key": k, "value": v} for k, v in (params or {}).items()]
        tag_list = [{"key": k, "value": v} for k, v in (tags or {}).items()]
        for chunk in _chunks(param_list, MAX_PARAMS):
            self._call("POST", "runs/log-batch", json={"run_id": run_id, "params": chunk})
        for chunk in _chunks(tag_list, MAX_TAGS):
            self._call("POST", "runs/log-batch", json={"run_id": run_id, "tags": chunk})
        for chunk in _chunks(metrics, MAX_METRICS):
            self._call("POST", "runs/log-batch", json={"run_id": run_id, "metrics": chunk})

    def update_run(self, run_id: str, status: str, end_time_ms: int | None = None) -> None:
        body: dict[str, Any] = {"run_id": run_id, "status": status}
        if end_time_ms is not None:
            body["end_time"] = end_time_ms
        self._call("POST", "runs/update", json=body)
