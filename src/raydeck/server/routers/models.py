"""/api/v1/models: the model registry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile

from raydeck.core.models import (
    AliasChanges,
    Framework,
    Model,
    ModelUpdate,
    ModelUpload,
    ModelVersion,
    ModelVersionUpdate,
    Page,
)
from raydeck.server.auth import Principal, require
from raydeck.server.routers.common import DbSession, PageSize, PageToken, State
from raydeck.server.services import model_uploads as uploads
from raydeck.server.services import models as service
from raydeck.server.services.artifacts import ArtifactStore

router = APIRouter(prefix="/api/v1/models", tags=["models"])

Label = Annotated[str | None, Query(description="key=value")]


@router.post("", status_code=201)
def upload_model(
    body: ModelUpload, state: State, caller: Annotated[Principal, Depends(require("models.upload"))]
) -> ModelVersion:
    """Register a version from ``artifact_uri``, copied into the registry by the server."""
    store = ArtifactStore.from_settings(state.settings, user_project=caller.project)
    return uploads.upload_model(state.db, store, body, project=caller.project)


@router.post(":upload", status_code=201)
def upload_model_archive(
    state: State,
    caller: Annotated[Principal, Depends(require("models.upload"))],
    metadata: Annotated[str, Form(description="ModelUpload as JSON, without artifact_uri")],
    artifact: Annotated[UploadFile, File(description="the artifact directory as a .tar.gz")],
) -> ModelVersion:
    """Register a version from an uploaded ``.tar.gz`` (for clients on other machines)."""
    request = uploads.parse_upload_metadata(metadata)
    store = ArtifactStore.from_settings(state.settings, user_project=caller.project)
    return uploads.upload_model(
        state.db, store, request, archive=artifact.file, project=caller.project
    )


@router.get("")
def list_models(
    session: DbSession,
    caller: Annotated[Principal, Depends(require("models.list"))],
    page_size: PageSize = 100,
    page_token: PageToken = None,
    label: Label = None,
    framework: Annotated[Framework | None, Query()] = None,
    display_name: Annotated[str | None, Query()] = None,
) -> Page[Model]:
    return service.list_models(
        session,
        page_size=page_size,
        page_token=page_token,
        label=label,
        framework=framework,
        display_name=display_name,
        project=caller.project,
    )


@router.get("/{model}")
def get_model(
    model: str, session: DbSession, caller: Annotated[Principal, Depends(require("models.get"))]
) -> Model:
    return service.get_model(session, model, caller.project)


@router.patch("/{model}")
def update_model(
    model: str,
    body: ModelUpdate,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("models.update"))],
) -> Model:
    return service.update_model(session, model, body, caller.project)


@router.delete("/{model}")
def delete_model(
    model: str, state: State, caller: Annotated[Principal, Depends(require("models.delete"))]
) -> Model:
    """Delete every version and its artifacts; refused while any version is deployed."""
    store = ArtifactStore.from_settings(state.settings, user_project=caller.project)
    return service.delete_model(state.db, store, model, caller.project)


@router.get("/{model}/versions")
def list_versions(
    model: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("models.list"))],
    page_size: PageSize = 100,
    page_token: PageToken = None,
    label: Label = None,
    framework: Annotated[Framework | None, Query()] = None,
) -> Page[ModelVersion]:
    return service.list_versions(
        session,
        model,
        page_size=page_size,
        page_token=page_token,
        label=label,
        framework=framework,
        project=caller.project,
    )


@router.get("/{model}/versions/{version}")
def get_version(
    model: str,
    version: str,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("models.get"))],
) -> ModelVersion:
    """``version`` is a version id ("2") or an alias ("default", "prod")."""
    return service.get_version(session, model, version, caller.project)


@router.patch("/{model}/versions/{version}")
def update_version(
    model: str,
    version: str,
    body: ModelVersionUpdate,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("models.update"))],
) -> ModelVersion:
    return service.update_version(session, model, version, body, caller.project)


@router.post("/{model}/versions/{version}:mergeAliases")
def merge_aliases(
    model: str,
    version: str,
    body: AliasChanges,
    session: DbSession,
    caller: Annotated[Principal, Depends(require("models.update"))],
) -> ModelVersion:
    """Move aliases to this version (``"prod"``) or remove them from it (``"-prod"``)."""
    return service.merge_aliases(session, model, version, body, caller.project)


@router.delete("/{model}/versions/{version}")
def delete_version(
    model: str,
    version: str,
    state: State,
    caller: Annotated[Principal, Depends(require("models.delete"))],
) -> ModelVersion:
    """Delete one version and its artifact; refused while deployed or while it is the default."""
    store = ArtifactStore.from_settings(state.settings, user_project=caller.project)
    return service.delete_version(state.db, store, model, version, caller.project)
