"""``RaydeckClient.models``: the model registry.

rd.models.upload("churn", "./model_dir", "sklearn")              # local dir: tarred and sent
rd.models.upload("churn", "s3://bucket/churn/v2", "xgboost", parent_model="churn")
rd.models.get_version("churn@default")
rd.models.set_aliases("churn@2", ["default", "prod"])
"""

from __future__ import annotations

import json
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from raydeck.client.http import ApiTransport, raise_for_error
from raydeck.core.errors import InvalidArgumentError, UnavailableError
from raydeck.core.models import Framework, Model, ModelVersion, Page
from raydeck.core.models.registry import parse_version_ref

__all__ = ["ModelApi"]

# Uploading and validating a large model takes longer than an ordinary API call.
_UPLOAD_TIMEOUT = httpx.Timeout(30.0, read=900.0, write=900.0)


def _version_path(ref: str, *, require_version: bool = False) -> str:
    model, version = parse_version_ref(ref)
    if not model or (require_version and not version):
        raise InvalidArgumentError(
            f"{ref!r}: give a version as model@version_id or model@alias", field="version"
        )
    return f"/api/v1/models/{model}/versions/{version or 'default'}"


def _tar_directory(directory: Path, into: IO[bytes]) -> None:
    with tarfile.open(fileobj=into, mode="w:gz") as tar:
        for child in sorted(directory.iterdir()):
            tar.add(child, arcname=child.name)
    into.seek(0)


class ModelApi:
    def __init__(self, api: ApiTransport) -> None:
        self._api = api

    def upload(
        self,
        display_name: str | None,
        artifact: str | Path,
        framework: Framework | str,
        *,
        parent_model: str | None = None,
        aliases: Sequence[str] = (),
        labels: dict[str, str] | None = None,
        description: str | None = None,
        predict_schema: dict[str, Any] | None = None,
        is_default_version: bool = True,
    ) -> ModelVersion:
        """Register ``artifact``: a local directory or .tar.gz (uploaded), or a URI / server
        path the server copies itself. With ``parent_model`` it becomes that model's next
        version and takes the ``default`` alias unless ``is_default_version=False``."""
        request: dict[str, Any] = {
            "display_name": display_name,
            "framework": str(framework),
            "parent_model": parent_model,
            "description": description,
            "labels": labels or {},
            "version_aliases": list(aliases),
            "is_default_version": is_default_version,
            "predict_schema": predict_schema,
        }
        request = {k: v for k, v in request.items() if v is not None}
        local = Path(artifact)
        if "://" in str(artifact) or not local.exists():
            data = self._api.request(
                "POST", "/api/v1/models", json={**request, "artifact_uri": str(artifact)}
            )
            return ModelVersion.model_validate(data)
        with tempfile.TemporaryFile() as archive:
            if local.is_dir():
                _tar_directory(local, archive)
                return self._upload_archive(request, archive)
            with local.open("rb") as handle:
                return self._upload_archive(request, handle)

    def _upload_archive(self, request: dict[str, Any], archive: IO[bytes]) -> ModelVersion:
        try:
            response = self._api.http.post(
                "/api/v1/models:upload",
                data={"metadata": json.dumps(request)},
                files={"artifact": ("artifact.tar.gz", archive, "application/gzip")},
                timeout=_UPLOAD_TIMEOUT,
            )
        except httpx.HTTPError as exc:
            raise UnavailableError(
                f"cannot reach Raydeck server at {self._api.server}: {exc}"
            ) from exc
        raise_for_error(response)
        return ModelVersion.model_validate(response.json())

    def get(self, model: str) -> Model:
        return Model.model_validate(self._api.request("GET", f"/api/v1/models/{model}"))

    def list(
        self,
        *,
        label: str | None = None,
        framework: Framework | str | None = None,
        display_name: str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Page[Model]:
        data = self._api.request(
            "GET",
            "/api/v1/models",
            params={
                "label": label,
                "framework": None if framework is None else str(framework),
                "display_name": display_name,
                "page_size": page_size,
                "page_token": page_token,
            },
        )
        return Page[Model].model_validate(data)

    def versions(
        self,
        model: str,
        *,
        label: str | None = None,
        framework: Framework | str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Page[ModelVersion]:
        data = self._api.request(
            "GET",
            f"/api/v1/models/{model}/versions",
            params={
                "label": label,
                "framework": None if framework is None else str(framework),
                "page_size": page_size,
                "page_token": page_token,
            },
        )
        return Page[ModelVersion].model_validate(data)

    def get_version(self, ref: str) -> ModelVersion:
        """``"m@2"``, ``"m@prod"``, or ``"m"`` for its default version."""
        return ModelVersion.model_validate(self._api.request("GET", _version_path(ref)))

    def update(
        self, model: str, *, description: str | None = None, labels: dict[str, str] | None = None
    ) -> Model:
        body = {"description": description, "labels": labels}
        data = self._api.request(
            "PATCH",
            f"/api/v1/models/{model}",
            json={k: v for k, v in body.items() if v is not None},
        )
        return Model.model_validate(data)

    def update_version(
        self,
        ref: str,
        *,
        aliases: Sequence[str] | None = None,
        labels: dict[str, str] | None = None,
        description: str | None = None,
    ) -> ModelVersion:
        body = {
            "aliases": None if aliases is None else list(aliases),
            "labels": labels,
            "description": description,
        }
        data = self._api.request(
            "PATCH",
            _version_path(ref, require_version=True),
            json={k: v for k, v in body.items() if v is not None},
        )
        return ModelVersion.model_validate(data)

    def set_aliases(self, ref: str, aliases: Sequence[str]) -> ModelVersion:
        """Make ``aliases`` the version's full alias list (others move here; 'default' can
        only be moved, never dropped)."""
        return self.update_version(ref, aliases=aliases)

    def add_alias(self, ref: str, alias: str) -> ModelVersion:
        """Move ``alias`` to this version, from whichever version holds it now."""
        return self._merge(ref, [alias])

    def remove_alias(self, ref: str, alias: str) -> ModelVersion:
        return self._merge(ref, [f"-{alias}"])

    def _merge(self, ref: str, changes: Sequence[str]) -> ModelVersion:
        path = _version_path(ref, require_version=True) + ":mergeAliases"
        data = self._api.request("POST", path, json={"aliases": [*changes]})
        return ModelVersion.model_validate(data)

    def delete_version(self, ref: str) -> ModelVersion:
        path = _version_path(ref, require_version=True)
        return ModelVersion.model_validate(self._api.request("DELETE", path))

    def delete(self, model: str) -> Model:
        return Model.model_validate(self._api.request("DELETE", f"/api/v1/models/{model}"))
