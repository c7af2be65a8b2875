"""Where clients find the server and their token.

Order: explicit arguments, then ``RAYDECK_SERVER``/``RAYDECK_TOKEN``, then what
``raydeck server`` wrote under ``RAYDECK_HOME`` (``server.json`` and ``credentials``).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raydeck.core.errors import UnauthenticatedError, UnavailableError
from raydeck.core.settings import Settings, get_settings

__all__ = ["ClientConfig", "load_client_config", "write_credentials", "write_server_info"]


@dataclass(frozen=True)
class ClientConfig:
    server: str
    token: str
    project: str | None = None  # sent as X-Raydeck-Project; None: the server's "default"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_client_config(
    server: str | None = None,
    token: str | None = None,
    settings: Settings | None = None,
    project: str | None = None,
) -> ClientConfig:
    settings = settings or get_settings()
    server = server or settings.server or _read_json(settings.server_info_path).get("url")
    token = token or settings.token or _read_json(settings.credentials_path).get("token")
    if not server:
        raise UnavailableError(
            "no Raydeck server configured: start one with `raydeck server` or set RAYDECK_SERVER"
        )
    if not token:
        raise UnauthenticatedError(
            f"no token: set RAYDECK_TOKEN or start the server once to create "
            f"{settings.credentials_path}"
        )
    return ClientConfig(server=server.rstrip("/"), token=token, project=project or settings.project)


def _write_private(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)  # umask or an older file must not widen it


def write_credentials(settings: Settings, server: str, token: str) -> None:
    _write_private(settings.credentials_path, {"server": server, "token": token})


def write_server_info(settings: Settings, url: str, pid: int) -> None:
    _write_private(settings.server_info_path, {"url": url, "pid": pid})
