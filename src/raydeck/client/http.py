"""HTTP plumbing shared by the resource APIs: auth header, typed errors."""

from __future__ import annotations

from typing import Any

import httpx

from raydeck.core.errors import RaydeckError, UnavailableError, error_from_payload

__all__ = ["ApiTransport"]


class ApiTransport:
    def __init__(
        self,
        server: str,
        token: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        project: str | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.token = token
        headers = {"Authorization": f"Bearer {token}"}
        if project:
            headers["X-Raydeck-Project"] = project
        self.http = httpx.Client(
            base_url=self.server,
            headers=headers,
            timeout=timeout,
            transport=transport,
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        try:
            response = self.http.request(
                method,
                path,
                json=json,
                params={k: v for k, v in (params or {}).items() if v is not None},
            )
        except httpx.HTTPError as exc:
            raise UnavailableError(f"cannot reach Raydeck server at {self.server}: {exc}") from exc
        raise_for_error(response)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def close(self) -> None:
        self.http.close()


def raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        payload = response.json().get("error", {})
    except ValueError:
        payload = {"message": response.text[:300] or f"HTTP {response.status_code}"}
    error: RaydeckError = error_from_payload(payload, response.status_code)
    raise error
