"""Endpoints: deployed model versions and their traffic split, as persisted desired state.

The API validates and stores; the endpoint reconciler turns each cluster's endpoints into one
Ray Serve config. Traffic follows Vertex AI's rules: the first model gets 100 %, a model
deployed with ``traffic_percentage`` p takes p and the others shrink proportionally, and a
split set explicitly must name only deployed models and sum to 100.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from raydeck.core.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from raydeck.core.ids import new_id
from raydeck.core.models import (
    ClusterState,
    DeployedModel,
    DeployModel,
    Endpoint,
    EndpointCreate,
    EndpointState,
    EndpointUpdate,
    Page,
)
from raydeck.core.models.limits import cap_value
from raydeck.db.models import EndpointRow, utcnow
from raydeck.server.services.clusters import get_cluster_row
from raydeck.server.services.models import resolve_version
from raydeck.server.services.paging import fetch_page

__all__ = [
    "check_relay_body",
    "create_endpoint",
    "delete_endpoint",
    "deploy_model",
    "get_endpoint",
    "get_endpoint_row",
    "list_endpoints",
    "rebalance",
    "scale_to_minimum",
    "to_model",
    "undeploy_model",
    "update_endpoint",
    "without_failed_models",
]


def to_model(row: EndpointRow) -> Endpoint:
    return Endpoint(
        id=row.id,
        display_name=row.name,
        project=row.project,
        cluster=row.cluster_name,
        description=row.spec.get("description"),
        labels=row.labels,
        state=EndpointState(row.state),
        state_reason=row.state_reason,
        deployed_models=[DeployedModel.model_validate(m) for m in row.spec["deployed_models"]],
        traffic_split=dict(row.spec["traffic_split"]),
        predict_url=row.predict_url,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def get_endpoint_row(session: Session, ref: str, project: str = "default") -> EndpointRow:
    """By id or name, within ``project`` (other projects' endpoints are not found)."""
    row = session.get(EndpointRow, ref)
    if row is None or row.project != project:
        row = session.scalar(
            select(EndpointRow).where(EndpointRow.project == project, EndpointRow.name == ref)
        )
    if row is None:
        raise NotFoundError(f"endpoint {ref!r} not found", field="endpoint")
    return row


def get_endpoint(session: Session, ref: str, project: str = "default") -> Endpoint:
    return to_model(get_endpoint_row(session, ref, project))


def create_endpoint(
    session: Session, request: EndpointCreate, project: str = "default"
) -> Endpoint:
    cluster = get_cluster_row(session, request.cluster, project)  # only a cluster of its project
    if session.scalar(
        select(EndpointRow.id).where(
            EndpointRow.project == project, EndpointRow.name == request.display_name
        )
    ):
        raise AlreadyExistsError(
            f"endpoint {request.display_name!r} already exists", field="display_name"
        )
    row = EndpointRow(
        id=new_id("ep"),
        project=project,
        name=request.display_name,
        cluster_id=cluster.id,
        cluster_name=cluster.name,
        state=EndpointState.CREATING.value,
        spec={"deployed_models": [], "traffic_split": {}, "description": request.description},
        labels=dict(request.labels),
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        raise AlreadyExistsError(
            f"endpoint {request.display_name!r} already exists", field="display_name"
        ) from exc
    return to_model(row)


def list_endpoints(
    session: Session,
    *,
    page_size: int,
    page_token: str | None,
    cluster: str | None = None,
    state: EndpointState | None = None,
    project: str = "default",
) -> Page[Endpoint]:
    query = select(EndpointRow).where(EndpointRow.project == project)
    if cluster is not None:
        query = query.where(EndpointRow.cluster_name == cluster)
    if state is not None:
        query = query.where(EndpointRow.state == state.value)
    rows, next_token = fetch_page(session, query, EndpointRow.id, page_size, page_token)
    return Page[Endpoint](items=[to_model(r) for r in rows], next_page_token=next_token)


def rebalance(split: dict[str, int], new_id_: str | None, share: int | None) -> dict[str, int]:
    """Give ``new_id_`` its ``share`` and scale the others to fill the rest; sums to 100
    (or is empty when nothing is deployed)."""
    others = {k: v for k, v in split.items() if k != new_id_}
    if new_id_ is not None and not others:
        return {new_id_: 100}
    if new_id_ is None and not others:
        return {}
    share = share or 0
    rest = 100 - share
    total = sum(others.values())
    if total == 0:  # nobody had traffic: give the rest to the oldest remaining model
        scaled = {k: 0 for k in others}
        scaled[next(iter(others))] = rest
    else:
        scaled = {k: v * rest // total for k, v in others.items()}
        leftover = rest - sum(scaled.values())
        for key in sorted(others, key=lambda k: -others[k])[:leftover]:
            scaled[key] += 1
    return {**scaled, new_id_: share} if new_id_ is not None else scaled


def _mark_changed(row: EndpointRow, spec: dict[str, Any]) -> None:
    row.spec = spec
    row.generation += 1
    row.state_reason = None
    if row.state != EndpointState.CREATING.value:
        row.state = EndpointState.UPDATING.value
    # Written even when unchanged: the reconciler may have recorded READY since this row was
    # read, and the new generation must be pending whatever it wrote.
    flag_modified(row, "state")


def _require_changeable(row: EndpointRow) -> None:
    if row.state == EndpointState.DELETING.value:
        raise FailedPreconditionError(f"endpoint {row.name!r} is being deleted", field="endpoint")


def deploy_model(
    session: Session, ref: str, request: DeployModel, project: str = "default"
) -> Endpoint:
    row = get_endpoint_row(session, ref, project)
    _require_changeable(row)
    cluster = get_cluster_row(session, row.cluster_name, row.project)
    if cluster.state in (ClusterState.STOPPING.value, ClusterState.ERROR.value):
        raise FailedPreconditionError(
            f"cluster {cluster.name!r} is {cluster.state}", field="endpoint"
        )
    # Only a model of the endpoint's own project: others' are "not found" (field "model").
    version = resolve_version(session, request.model, row.project)
    deployed_id = new_id("dm")
    deployed = DeployedModel(
        id=deployed_id,
        display_name=request.display_name or f"{version.model}-v{version.version_id}",
        model=version.model,
        model_id=version.model_id,
        model_version_id=version.id,
        version_id=version.version_id,
        framework=version.framework.value,
        artifact_uri=version.artifact_uri,
        min_replica_count=request.min_replica_count,
        max_replica_count=request.max_replica_count or request.min_replica_count,
        num_cpus=request.num_cpus,
        num_gpus=request.num_gpus,
        memory=request.memory,
        batching=request.batching,
        created_at=utcnow(),
    )
    models = [*row.spec["deployed_models"], deployed.model_dump(mode="json")]
    split = rebalance(row.spec["traffic_split"], deployed_id, request.traffic_percentage)
    _mark_changed(row, {**row.spec, "deployed_models": models, "traffic_split": split})
    return to_model(row)


def undeploy_model(
    session: Session, ref: str, deployed_model_id: str, project: str = "default"
) -> Endpoint:
    row = get_endpoint_row(session, ref, project)
    _require_changeable(row)
    models = row.spec["deployed_models"]
    if deployed_model_id not in {m["id"] for m in models}:
        raise NotFoundError(
            f"model {deployed_model_id!r} is not deployed on endpoint {row.name!r}",
            field="deployed_model_id",
        )
    remaining = [m for m in models if m["id"] != deployed_model_id]
    split = {k: v for k, v in row.spec["traffic_split"].items() if k != deployed_model_id}
    if remaining and sum(split.values()) != 100:
        split = rebalance(split, None, None)
    _mark_changed(row, {**row.spec, "deployed_models": remaining, "traffic_split": split})
    return to_model(row)


def without_failed_models(
    spec: dict[str, Any], errors: dict[str, str]
) -> tuple[dict[str, Any], str]:
    """Roll back deployed models that failed to load on the cluster (``errors``: deployed
    model id → the load error): (the spec without them, the reason). The others keep their
    share of traffic and keep serving; the endpoint reconciler stores the spec with a new
    generation and the reason in ``state_reason`` (pending), and records the endpoint FAILED
    with it once the rest is deployed."""
    models = spec["deployed_models"]
    failed = [m for m in models if m["id"] in errors]
    remaining = [m for m in models if m["id"] not in errors]
    split = {k: v for k, v in spec["traffic_split"].items() if k not in errors}
    if remaining and sum(split.values()) != 100:
        split = rebalance(split, None, None)
    reason = "; ".join(
        f"deployed model {m['id']} ({m['model']}@{m['version_id']}) failed to load on the "
        f"cluster and was undeployed: {errors[m['id']]}"
        for m in failed
    )
    return {**spec, "deployed_models": remaining, "traffic_split": split}, reason[:2000]


def _check_split(split: dict[str, int], deployed: set[str]) -> None:
    unknown = sorted(set(split) - deployed)
    if unknown:
        raise InvalidArgumentError(
            f"traffic_split names models not deployed here: {', '.join(unknown)}",
            field="traffic_split",
        )
    total = sum(split.values())
    if deployed and total != 100:
        raise InvalidArgumentError(
            f"traffic_split must sum to 100, not {total}", field="traffic_split"
        )


def update_endpoint(
    session: Session, ref: str, request: EndpointUpdate, project: str = "default"
) -> Endpoint:
    row = get_endpoint_row(session, ref, project)
    _require_changeable(row)
    spec = dict(row.spec)
    if request.description is not None:
        spec["description"] = request.description
    if request.labels is not None:
        row.labels = dict(request.labels)
    if request.traffic_split is not None:
        deployed = {m["id"] for m in spec["deployed_models"]}
        _check_split(request.traffic_split, deployed)
        spec["traffic_split"] = {k: request.traffic_split.get(k, 0) for k in deployed}
        _mark_changed(row, spec)
    else:
        row.spec = spec
    return to_model(row)


def delete_endpoint(session: Session, ref: str, project: str = "default") -> Endpoint:
    row = get_endpoint_row(session, ref, project)
    if row.state != EndpointState.DELETING.value:
        row.state = EndpointState.DELETING.value
        row.generation += 1
    return to_model(row)


def check_relay_body(action: str, body: Any) -> None:
    """A relayed predict/explain holds at most RAYDECK_MAX_PREDICT_INSTANCES instances
    (rawPredict bodies are the model's own: only the byte limit applies)."""
    if action == "rawPredict" or not isinstance(body, dict):
        return
    instances = body.get("instances")
    cap = cap_value("max_predict_instances")
    if isinstance(instances, list) and len(instances) > cap:
        raise InvalidArgumentError(
            f"instances: at most {cap} items allowed (RAYDECK_MAX_PREDICT_INSTANCES), "
            f"got {len(instances)}",
            field="instances",
        )


def scale_to_minimum(row: EndpointRow) -> bool:
    """Cap every deployed model at its minimum replicas (budget limit); True if changed."""
    models = [dict(m) for m in row.spec.get("deployed_models", [])]
    changed = False
    for model in models:
        low = int(model.get("min_replica_count", 1))
        if int(model.get("max_replica_count", low)) != low:
            model["max_replica_count"] = low
            changed = True
    if changed:
        _mark_changed(row, {**row.spec, "deployed_models": models})
    return changed
