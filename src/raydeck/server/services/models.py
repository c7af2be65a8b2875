"""Model registry: models, numbered versions, aliases, artifacts.

A delete removes rows first and artifacts only after the commit, so a failed delete keeps
every file a stored row points at. Uploads live in ``model_uploads``.
"""

from __future__ import annotations

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from raydeck.core.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from raydeck.core.models import (
    AliasChanges,
    Framework,
    Model,
    ModelUpdate,
    ModelVersion,
    ModelVersionUpdate,
    Page,
)
from raydeck.core.models.registry import DEFAULT_ALIAS, PredictSchema, parse_version_ref
from raydeck.db.models import ModelAliasRow, ModelRow, ModelVersionRow, utcnow
from raydeck.db.session import Database
from raydeck.server.services import deployments
from raydeck.server.services.artifacts import ArtifactStore
from raydeck.server.services.paging import fetch_page

__all__ = [
    "delete_model",
    "delete_version",
    "get_model",
    "get_model_row",
    "get_version",
    "get_version_row",
    "list_models",
    "list_versions",
    "merge_aliases",
    "move_alias",
    "resolve_version",
    "update_model",
    "update_version",
    "version_out",
]


# ---- lookups -------------------------------------------------------------------------------


def get_model_row(
    session: Session, ref: str, *, field: str = "model", project: str = "default"
) -> ModelRow:
    """By id (``mdl-…``) or display_name, within ``project`` (others' models are not found)."""
    row = session.get(ModelRow, ref) if ref.startswith("mdl-") else None
    if row is not None and row.project != project:
        row = None
    if row is None:
        row = session.scalar(
            select(ModelRow).where(ModelRow.project == project, ModelRow.display_name == ref)
        )
    if row is None:
        raise NotFoundError(f"model {ref!r} not found", field=field)
    return row


def get_version_row(
    session: Session, model: ModelRow, ref: str | None, *, field: str = "version"
) -> ModelVersionRow:
    """By version id ("3") or alias ("prod"); no ref means the default version."""
    ref = ref or DEFAULT_ALIAS
    row: ModelVersionRow | None
    if ref.isdigit():
        row = session.scalar(
            select(ModelVersionRow).where(
                ModelVersionRow.model_id == model.id, ModelVersionRow.version_id == ref
            )
        )
    else:
        alias = session.get(ModelAliasRow, (model.id, ref))
        row = session.get(ModelVersionRow, alias.version_row_id) if alias else None
    if row is None:
        raise NotFoundError(
            f"model {model.display_name!r} has no version or alias {ref!r}", field=field
        )
    return row


def resolve_version(session: Session, ref: str, project: str = "default") -> ModelVersion:
    """``model@3``, ``model@alias``, ``model`` (its default) or a version's global id, of a
    model in ``project``."""
    if ref.startswith("mv-") and (row := session.get(ModelVersionRow, ref)) is not None:
        model = session.get(ModelRow, row.model_id)
        assert model is not None
        if model.project == project:
            return version_out(session, model, row)
    model_ref, version_ref = parse_version_ref(ref)
    model = get_model_row(session, model_ref, project=project)
    return version_out(session, model, get_version_row(session, model, version_ref))


# ---- output --------------------------------------------------------------------------------


def _sorted_aliases(aliases: list[str]) -> list[str]:
    return sorted(aliases, key=lambda a: (a != DEFAULT_ALIAS, a))


def _aliases_of(session: Session, version_row_ids: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {vid: [] for vid in version_row_ids}
    rows = session.execute(
        select(ModelAliasRow.version_row_id, ModelAliasRow.alias).where(
            ModelAliasRow.version_row_id.in_(version_row_ids)
        )
    )
    for version_row_id, alias in rows:
        found[version_row_id].append(alias)
    return {vid: _sorted_aliases(aliases) for vid, aliases in found.items()}


def version_out(
    session: Session,
    model: ModelRow,
    row: ModelVersionRow,
    aliases: list[str] | None = None,
) -> ModelVersion:
    if aliases is None:
        aliases = _aliases_of(session, [row.id])[row.id]
    return ModelVersion(
        id=row.id,
        model_id=model.id,
        model=model.display_name,
        version_id=row.version_id,
        framework=Framework(row.framework),
        artifact_uri=row.artifact_uri,
        source_uri=row.source_uri,
        aliases=aliases,
        labels=row.labels,
        description=row.description,
        predict_schema=PredictSchema.model_validate(row.predict_schema)
        if row.predict_schema
        else None,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _models_out(session: Session, rows: list[ModelRow]) -> list[Model]:
    ids = [r.id for r in rows]
    versions: dict[str, list[tuple[int, str]]] = {i: [] for i in ids}
    for model_id, version_id, framework in session.execute(
        select(
            ModelVersionRow.model_id, ModelVersionRow.version_id, ModelVersionRow.framework
        ).where(ModelVersionRow.model_id.in_(ids))
    ):
        versions[model_id].append((int(version_id), framework))
    defaults: dict[str, str] = {}
    for model_id, version_id in session.execute(
        select(ModelAliasRow.model_id, ModelVersionRow.version_id)
        .join(ModelVersionRow, ModelVersionRow.id == ModelAliasRow.version_row_id)
        .where(ModelAliasRow.alias == DEFAULT_ALIAS, ModelAliasRow.model_id.in_(ids))
    ):
        defaults[model_id] = version_id
    return [
        Model(
            id=row.id,
            display_name=row.display_name,
            project=row.project,
            description=row.description,
            labels=row.labels,
            default_version_id=defaults.get(row.id, ""),
            latest_version_id=str(max((n for n, _ in versions[row.id]), default=0)),
            version_count=len(versions[row.id]),
            frameworks=sorted({Framework(f) for _, f in versions[row.id]}),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        for row in rows
    ]


def _model_out(session: Session, row: ModelRow) -> Model:
    return _models_out(session, [row])[0]


# ---- reads ---------------------------------------------------------------------------------


def get_model(session: Session, ref: str, project: str = "default") -> Model:
    return _model_out(session, get_model_row(session, ref, project=project))


def get_version(
    session: Session, model_ref: str, version_ref: str, project: str = "default"
) -> ModelVersion:
    model = get_model_row(session, model_ref, project=project)
    return version_out(session, model, get_version_row(session, model, version_ref))


def _label_pair(label: str) -> tuple[str, str]:
    key, sep, value = label.partition("=")
    if not sep or not key:
        raise InvalidArgumentError("label filter must look like key=value", field="label")
    return key, value


def list_models(
    session: Session,
    *,
    page_size: int,
    page_token: str | None,
    label: str | None = None,
    framework: Framework | None = None,
    display_name: str | None = None,
    project: str = "default",
) -> Page[Model]:
    query = select(ModelRow).where(ModelRow.project == project)
    if display_name is not None:
        query = query.where(ModelRow.display_name == display_name)
    if framework is not None:  # models with at least one version of that framework
        query = query.where(
            exists().where(
                ModelVersionRow.model_id == ModelRow.id,
                ModelVersionRow.framework == framework.value,
            )
        )
    if label:
        key, value = _label_pair(label)
        query = query.where(ModelRow.labels[key].as_string() == value)
    rows, next_token = fetch_page(session, query, ModelRow.id, page_size, page_token)
    return Page[Model](items=_models_out(session, rows), next_page_token=next_token)


def list_versions(
    session: Session,
    model_ref: str,
    *,
    page_size: int,
    page_token: str | None,
    label: str | None = None,
    framework: Framework | None = None,
    project: str = "default",
) -> Page[ModelVersion]:
    model = get_model_row(session, model_ref, project=project)
    query = select(ModelVersionRow).where(ModelVersionRow.model_id == model.id)
    if framework is not None:
        query = query.where(ModelVersionRow.framework == framework.value)
    if label:
        key, value = _label_pair(label)
        query = query.where(ModelVersionRow.labels[key].as_string() == value)
    rows, next_token = fetch_page(session, query, ModelVersionRow.id, page_size, page_token)
    aliases = _aliases_of(session, [r.id for r in rows])
    items = [version_out(session, model, r, aliases[r.id]) for r in rows]
    return Page[ModelVersion](items=items, next_page_token=next_token)


# ---- updates -------------------------------------------------------------------------------


def move_alias(session: Session, model_id: str, alias: str, version_row_id: str) -> None:
    row = session.get(ModelAliasRow, (model_id, alias))
    if row is None:
        session.add(ModelAliasRow(model_id=model_id, alias=alias, version_row_id=version_row_id))
    else:
        row.version_row_id = version_row_id


def update_model(
    session: Session, ref: str, request: ModelUpdate, project: str = "default"
) -> Model:
    row = get_model_row(session, ref, project=project)
    if request.description is not None:
        row.description = request.description
    if request.labels is not None:
        row.labels = dict(request.labels)
    row.updated_at = utcnow()
    return _model_out(session, row)


def update_version(
    session: Session,
    model_ref: str,
    version_ref: str,
    request: ModelVersionUpdate,
    project: str = "default",
) -> ModelVersion:
    model = get_model_row(session, model_ref, project=project)
    row = get_version_row(session, model, version_ref)
    if request.aliases is not None:
        current = set(_aliases_of(session, [row.id])[row.id])
        wanted = set(request.aliases)
        if DEFAULT_ALIAS in current - wanted:
            raise InvalidArgumentError(
                "the default alias cannot be removed, only moved: add 'default' to the "
                "aliases of another version",
                field="aliases",
            )
        for alias in current - wanted:
            session.delete(session.get(ModelAliasRow, (model.id, alias)))
        for alias in sorted(wanted - current):
            move_alias(session, model.id, alias, row.id)
    if request.labels is not None:
        row.labels = dict(request.labels)
    if request.description is not None:
        row.description = request.description
    row.updated_at = model.updated_at = utcnow()
    session.flush()
    return version_out(session, model, row)


def merge_aliases(
    session: Session,
    model_ref: str,
    version_ref: str,
    request: AliasChanges,
    project: str = "default",
) -> ModelVersion:
    """``"prod"`` moves prod here; ``"-prod"`` removes it from this version."""
    model = get_model_row(session, model_ref, project=project)
    row = get_version_row(session, model, version_ref)
    for item in request.aliases:
        alias = item.removeprefix("-")
        if not item.startswith("-"):
            move_alias(session, model.id, alias, row.id)
            continue
        if alias == DEFAULT_ALIAS:
            raise InvalidArgumentError(
                "the default alias cannot be removed, only moved to another version",
                field="aliases",
            )
        existing = session.get(ModelAliasRow, (model.id, alias))
        if existing is None or existing.version_row_id != row.id:
            raise InvalidArgumentError(
                f"alias {alias!r} is not on version {row.version_id}", field="aliases"
            )
        session.delete(existing)
    row.updated_at = model.updated_at = utcnow()
    session.flush()
    return version_out(session, model, row)


# ---- deletes -------------------------------------------------------------------------------


def _refuse_if_deployed(session: Session, model: ModelRow, rows: list[ModelVersionRow]) -> None:
    deployed = deployments.deployed_version_ids(session)
    busy = [r.version_id for r in rows if r.id in deployed]
    if busy:
        raise FailedPreconditionError(
            f"{model.display_name}@{busy[0]} is deployed to an endpoint; undeploy it first",
            field="version" if len(rows) == 1 else "model",
        )


def delete_version(
    db: Database, store: ArtifactStore, model_ref: str, version_ref: str, project: str = "default"
) -> ModelVersion:
    with db.session() as session:
        model = get_model_row(session, model_ref, project=project)
        row = get_version_row(session, model, version_ref)
        _refuse_if_deployed(session, model, [row])
        result = version_out(session, model, row)
        count = len(
            session.scalars(
                select(ModelVersionRow.id).where(ModelVersionRow.model_id == model.id)
            ).all()
        )
        if count == 1:
            raise FailedPreconditionError(
                f"version {row.version_id} is the only version of {model.display_name!r}; "
                "delete the model instead",
                field="version",
            )
        if DEFAULT_ALIAS in result.aliases:
            raise FailedPreconditionError(
                f"version {row.version_id} holds the default alias; move 'default' to another "
                "version first",
                field="version",
            )
        for alias in result.aliases:
            session.delete(session.get(ModelAliasRow, (model.id, alias)))
        session.delete(row)
        model.updated_at = utcnow()
    store.remove(result.artifact_uri)  # after the commit: a failed delete keeps the files
    return result


def delete_model(
    db: Database, store: ArtifactStore, model_ref: str, project: str = "default"
) -> Model:
    with db.session() as session:
        model = get_model_row(session, model_ref, project=project)
        rows = list(
            session.scalars(select(ModelVersionRow).where(ModelVersionRow.model_id == model.id))
        )
        _refuse_if_deployed(session, model, rows)
        result = _model_out(session, model)
        uris = [r.artifact_uri for r in rows]
        for alias in session.scalars(
            select(ModelAliasRow).where(ModelAliasRow.model_id == model.id)
        ):
            session.delete(alias)
        session.flush()
        for row in rows:
            session.delete(row)
        session.flush()
        session.delete(model)
    for uri in uris:
        store.remove(uri)
    return result
