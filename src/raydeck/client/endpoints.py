"""``RaydeckClient.endpoints``: deploy model versions and predict.

ep = rd.endpoints.create("churn-api", cluster="dev")
rd.endpoints.deploy("churn-api", "churn@default", min_replica_count=1)
rd.endpoints.deploy("churn-api", "churn@2", traffic_percentage=20)
rd.endpoints.wait("churn-api")
rd.endpoint("churn-api").predict(instances=[[1.0, 2.0, 3.0, 4.0]])
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from raydeck.client.http import ApiTransport, raise_for_error
from raydeck.core.errors import FailedPreconditionError, UnavailableError
from raydeck.core.models import (
    DeployModel,
    Endpoint,
    EndpointCreate,
    EndpointState,
    EndpointUpdate,
    Page,
    Prediction,
)

__all__ = ["BoundEndpoint", "EndpointApi"]


class EndpointApi:
    def __init__(self, api: ApiTransport) -> None:
        self._api = api

    def create(self, display_name: str, *, cluster: str, **fields: Any) -> Endpoint:
        request = EndpointCreate.model_validate(
            {"display_name": display_name, "cluster": cluster, **fields}
        )
        data = self._api.request("POST", "/api/v1/endpoints", json=request.model_dump(mode="json"))
        return Endpoint.model_validate(data)

    def get(self, endpoint: str) -> Endpoint:
        return Endpoint.model_validate(self._api.request("GET", f"/api/v1/endpoints/{endpoint}"))

    def list(
        self,
        *,
        cluster: str | None = None,
        state: EndpointState | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Page[Endpoint]:
        data = self._api.request(
            "GET",
            "/api/v1/endpoints",
            params={
                "cluster": cluster,
                "state": state,
                "page_size": page_size,
                "page_token": page_token,
            },
        )
        return Page[Endpoint].model_validate(data)

    def deploy(self, endpoint: str, model: str, **fields: Any) -> Endpoint:
        """Deploy ``model`` (``name``, ``name@version`` or ``name@alias``) on the endpoint."""
        request = DeployModel.model_validate({"model": model, **fields})
        data = self._api.request(
            "POST",
            f"/api/v1/endpoints/{endpoint}:deployModel",
            json=request.model_dump(mode="json", exclude_none=True),
        )
        return Endpoint.model_validate(data)

    def undeploy(self, endpoint: str, deployed_model_id: str) -> Endpoint:
        data = self._api.request(
            "POST",
            f"/api/v1/endpoints/{endpoint}:undeployModel",
            json={"deployed_model_id": deployed_model_id},
        )
        return Endpoint.model_validate(data)

    def set_traffic(self, endpoint: str, traffic_split: dict[str, int]) -> Endpoint:
        request = EndpointUpdate(traffic_split=traffic_split)
        data = self._api.request(
            "PATCH",
            f"/api/v1/endpoints/{endpoint}",
            json=request.model_dump(mode="json", exclude_none=True),
        )
        return Endpoint.model_validate(data)

    def delete(self, endpoint: str) -> Endpoint:
        return Endpoint.model_validate(self._api.request("DELETE", f"/api/v1/endpoints/{endpoint}"))

    def wait(self, endpoint: str, *, timeout: float = 600.0, poll: float = 0.25) -> Endpoint:
        """Until READY; raises on FAILED or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.get(endpoint)
            if found.state is EndpointState.READY:
                return found
            if found.state is EndpointState.FAILED:
                raise FailedPreconditionError(
                    f"endpoint {endpoint!r} failed: {found.state_reason}", field="endpoint"
                )
            if time.monotonic() > deadline:
                raise UnavailableError(f"endpoint {endpoint!r} still {found.state}")
            time.sleep(poll)


class BoundEndpoint:
    """Predicts against one endpoint's Serve data plane directly (not via the server)."""

    def __init__(self, api: ApiTransport, endpoint: str) -> None:
        self._api = api
        self.endpoint = endpoint
        self._url: str | None = None
        self._http = httpx.Client(headers={"Authorization": f"Bearer {api.token}"}, timeout=60.0)

    def _predict_url(self) -> str:
        if self._url is None:
            found = Endpoint.model_validate(
                self._api.request("GET", f"/api/v1/endpoints/{self.endpoint}")
            )
            if not found.predict_url:
                raise FailedPreconditionError(
                    f"endpoint {self.endpoint!r} is {found.state} with no model serving",
                    field="endpoint",
                )
            self._url = found.predict_url
        return self._url

    def _post(self, action: str, body: Any) -> Any:
        try:
            response = self._http.post(f"{self._predict_url()}/{action}", json=body)
        except httpx.HTTPError as exc:
            raise UnavailableError(f"endpoint {self.endpoint!r} did not answer: {exc}") from exc
        raise_for_error(response)
        return response.json()

    def predict(self, instances: list[Any], parameters: dict[str, Any] | None = None) -> Prediction:
        body = {"instances": instances, "parameters": parameters}
        return Prediction.model_validate(self._post("predict", body))

    def explain(self, instances: list[Any], parameters: dict[str, Any] | None = None) -> Prediction:
        body = {"instances": instances, "parameters": parameters}
        return Prediction.model_validate(self._post("explain", body))

    def raw_predict(self, body: Any) -> Any:
        return self._post("rawPredict", body)

    def close(self) -> None:
        self._http.close()
