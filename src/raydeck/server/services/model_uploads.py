"""Model uploads: copy the artifact into staging, check it statically, then store it.

The server never loads the model (no unpickling, no import of a custom predictor: that would
run the uploader's code here): ``model_artifacts`` checks names, sizes and format magic, and
the model is loaded on the cluster when it is deployed or used for batch prediction.
Order of work keeps failures harmless: nothing is written before the artifact passed its
checks; the files move into the store inside the transaction and are removed if it fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from raydeck.core.errors import AlreadyExistsError, InvalidArgumentError
from raydeck.core.ids import new_id
from raydeck.core.models import ModelUpload, ModelVersion
from raydeck.core.models.registry import DEFAULT_ALIAS
from raydeck.db.models import ModelAliasRow, ModelRow, ModelVersionRow, utcnow
from raydeck.db.session import Database
from raydeck.runtime.artifacts import tree_digest
from raydeck.runtime.predictors import predictor_class
from raydeck.server.errors import validation_error
from raydeck.server.services.artifacts import ArtifactStore
from raydeck.server.services.model_artifacts import check_model_artifact
from raydeck.server.services.models import get_model_row, move_alias, version_out

__all__ = ["parse_upload_metadata", "upload_model"]


def parse_upload_metadata(text: str) -> ModelUpload:
    """The ``metadata`` form field of a multipart upload, with the JSON route's error shape."""
    try:
        return ModelUpload.model_validate_json(text)
    except ValidationError as exc:
        if exc.errors()[0].get("type") == "json_invalid":
            raise InvalidArgumentError("metadata is not valid JSON", field="metadata") from exc
        raise validation_error(RequestValidationError(exc.errors())) from exc


def _target_model(
    session: Session, request: ModelUpload, project: str = "default"
) -> ModelRow | None:
    """The parent model, or None when the upload creates a model (checked to be free)."""
    if request.parent_model is not None:
        model = get_model_row(session, request.parent_model, field="parent_model", project=project)
        if request.display_name is not None and request.display_name != model.display_name:
            raise InvalidArgumentError(
                f"display_name {request.display_name!r} differs from parent model "
                f"{model.display_name!r}; leave it out when adding a version",
                field="display_name",
            )
        taken = [
            a
            for a in request.version_aliases
            if a != DEFAULT_ALIAS and session.get(ModelAliasRow, (model.id, a)) is not None
        ]
        if taken:
            raise AlreadyExistsError(
                f"alias {taken[0]!r} is already on another version of {model.display_name!r}; "
                "move it after the upload (PATCH the new version's aliases)",
                field="version_aliases",
            )
        return model
    if request.display_name is None:
        raise InvalidArgumentError(
            "display_name is required (or parent_model to add a version)", field="display_name"
        )
    existing = session.scalar(
        select(ModelRow.id).where(
            ModelRow.project == project, ModelRow.display_name == request.display_name
        )
    )
    if existing is not None:
        raise AlreadyExistsError(
            f"model {request.display_name!r} already exists; pass "
            f"parent_model={request.display_name!r} to upload a new version of it",
            field="display_name",
        )
    return None


def _precheck(
    db: Database, request: ModelUpload, *, uploaded: bool, project: str = "default"
) -> None:
    """Everything that can be refused before copying a possibly large artifact."""
    if uploaded and request.artifact_uri is not None:
        raise InvalidArgumentError(
            "give artifact_uri or an uploaded archive, not both", field="artifact_uri"
        )
    if not uploaded and request.artifact_uri is None:
        raise InvalidArgumentError("artifact_uri is required", field="artifact_uri")
    if DEFAULT_ALIAS in request.version_aliases and not request.is_default_version:
        raise InvalidArgumentError(
            "'default' in version_aliases contradicts is_default_version=false",
            field="version_aliases",
        )
    predictor_class(request.framework.value)  # framework known and installed here
    with db.session() as session:
        _target_model(session, request, project)


def upload_model(
    db: Database,
    store: ArtifactStore,
    request: ModelUpload,
    *,
    archive: IO[bytes] | None = None,
    project: str = "default",
) -> ModelVersion:
    """Register a version from ``request.artifact_uri`` or an uploaded ``.tar.gz``."""
    _precheck(db, request, uploaded=archive is not None, project=project)
    field = "artifact" if archive is not None else "artifact_uri"
    with store.staging() as staged:
        if archive is not None:
            store.stage_tarball(archive, staged, field=field)
        else:
            assert request.artifact_uri is not None
            store.stage_uri(request.artifact_uri, staged)
        # Static checks only: the model is loaded on the cluster, where it is used.
        check_model_artifact(request.framework.value, staged, store.limits, field=field)
        sha256, size = tree_digest(staged)
        return _register(db, store, request, staged, sha256=sha256, size=size, project=project)


def _register(
    db: Database,
    store: ArtifactStore,
    request: ModelUpload,
    staged: Path,
    *,
    sha256: str,
    size: int,
    project: str = "default",
) -> ModelVersion:
    committed: str | None = None
    try:
        with db.session() as session:
            model = _target_model(session, request, project)
            if model is None:
                model = ModelRow(
                    id=new_id("mdl"),
                    project=project,
                    display_name=request.display_name,
                    description=request.description,
                    labels=dict(request.labels),
                    version_counter=0,
                )
                session.add(model)
            model.version_counter += 1
            model.updated_at = utcnow()
            row = ModelVersionRow(
                id=new_id("mv"),
                model_id=model.id,
                version_id=str(model.version_counter),
                framework=request.framework.value,
                artifact_uri=store.version_uri(model.id, str(model.version_counter)),
                source_uri=request.artifact_uri or "upload",
                description=request.description,
                labels=dict(request.labels),
                predict_schema=request.predict_schema.model_dump(mode="json", exclude_none=True)
                if request.predict_schema
                else None,
                sha256=sha256,
                size_bytes=size,
            )
            session.add(row)
            session.flush()
            aliases = list(request.version_aliases)
            if model.version_counter == 1 or request.is_default_version:
                aliases.append(DEFAULT_ALIAS)  # the first version is always the default
            for alias in dict.fromkeys(aliases):
                move_alias(session, model.id, alias, row.id)
            store.commit(staged, row.artifact_uri)
            committed = row.artifact_uri
            result = version_out(session, model, row)
    except BaseException as exc:
        if committed is not None:  # the rows were not stored: neither are the files
            store.remove(committed)
        if isinstance(exc, IntegrityError):  # a concurrent upload took the name or number
            field = "parent_model" if request.parent_model else "display_name"
            raise AlreadyExistsError(
                "a concurrent upload changed this model; retry", field=field
            ) from exc
        raise
    return result
