"""Hosts of the ``hosts`` backend: join tokens, the registry, and joining itself."""

from __future__ import annotations

import httpx

from raydeck.client.http import ApiTransport, raise_for_error
from raydeck.core.errors import UnavailableError
from raydeck.core.models import Page
from raydeck.core.models.hosts import (
    Host,
    HostJoined,
    HostRegistration,
    JoinToken,
    JoinTokenCreate,
    JoinTokenCreated,
)

__all__ = ["HostApi", "join_host"]


class HostApi:
    def __init__(self, api: ApiTransport) -> None:
        self._api = api

    def create_join_token(
        self, *, expires_in_days: float = 1, description: str = ""
    ) -> JoinTokenCreated:
        body = JoinTokenCreate(expires_in_days=expires_in_days, description=description)
        data = self._api.request("POST", "/api/v1/hosts/tokens", json=body.model_dump())
        return JoinTokenCreated.model_validate(data)

    def list_join_tokens(self) -> Page[JoinToken]:
        data = self._api.request("GET", "/api/v1/hosts/tokens")
        return Page[JoinToken].model_validate(data)

    def revoke_join_token(self, token_id: str) -> JoinToken:
        data = self._api.request("DELETE", f"/api/v1/hosts/tokens/{token_id}")
        return JoinToken.model_validate(data)

    def list(self) -> Page[Host]:
        return Page[Host].model_validate(self._api.request("GET", "/api/v1/hosts"))

    def get(self, name: str) -> Host:
        return Host.model_validate(self._api.request("GET", f"/api/v1/hosts/{name}"))

    def drain(self, name: str, *, undo: bool = False) -> Host:
        data = self._api.request(
            "POST", f"/api/v1/hosts/{name}/drain", params={"undo": "true" if undo else None}
        )
        return Host.model_validate(data)

    def delete(self, name: str, *, force: bool = False) -> Host:
        data = self._api.request(
            "DELETE", f"/api/v1/hosts/{name}", params={"force": "true" if force else None}
        )
        return Host.model_validate(data)


def join_host(
    server: str,
    join_token: str,
    registration: HostRegistration,
    *,
    verify: str | bool = True,
    transport: httpx.BaseTransport | None = None,
) -> HostJoined:
    """Register this machine with a join token; returns the agent's own credential."""
    try:
        with httpx.Client(
            base_url=server.rstrip("/"),
            timeout=30.0,
            verify=verify,
            transport=transport,
            trust_env=False,
        ) as http:
            response = http.post(
                "/api/v1/hosts/join",
                json=registration.model_dump(mode="json"),
                headers={"Authorization": f"Bearer {join_token}"},
            )
    except httpx.HTTPError as exc:
        raise UnavailableError(f"cannot reach Raydeck server at {server}: {exc}") from exc
    raise_for_error(response)
    return HostJoined.model_validate(response.json())
