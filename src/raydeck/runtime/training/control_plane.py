"""The few calls code on a cluster makes back to the control plane (job-scoped token).

Calls are retried while the server is unreachable (e.g. restarting), so a server restart
never fails a running job; metric points are kept until they are delivered.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

__all__ = ["ControlPlane"]


class ControlPlane:
    def __init__(self, server: str | None = None, token: str | None = None) -> None:
        self.server = (server or os.environ.get("RAYDECK_SERVER", "")).rstrip("/")
        token = token or os.environ.get("RAYDECK_TOKEN", "")
        headers = {"Authorization": f"Bearer {token}"}
        # The job's project (set by the server outside "default"): its runs are found there.
        if project := os.environ.get("RAYDECK_PROJECT"):
            headers["X-Raydeck-Project"] = project
        self._http = httpx.Client(
            base_url=self.server or "http://127.0.0.1:9", headers=headers, timeout=30
        )

    @property
    def configured(self) -> bool:
        return bool(self.server)

    def close(self) -> None:
        self._http.close()

    def call(
        self, method: str, path: str, body: Any = None, *, patience: float = 600.0
    ) -> dict[str, Any]:
        """JSON answer; retries connection errors and 5xx for ``patience`` seconds."""
        deadline = time.monotonic() + patience
        delay = 0.2
        while True:
            try:
                response = self._http.request(method, path, json=body)
                if response.status_code < 500:
                    response.raise_for_status()
                    data = response.json() if response.content else {}
                    return data if isinstance(data, dict) else {"items": data}
                problem = f"HTTP {response.status_code}: {response.text[:300]}"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise RuntimeError(f"control plane unreachable at {self.server}: {problem}")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
