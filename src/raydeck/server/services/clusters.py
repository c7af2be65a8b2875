"""Clusters: persisted desired state. The API writes rows; the reconciler acts on them."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from raydeck.backends.base import ClusterBackend, ClusterSpec, PoolSpec
from raydeck.core.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from raydeck.core.ids import new_id
from raydeck.core.models import (
    Cluster,
    ClusterCreate,
    ClusterState,
    ClusterUpdate,
    HeadNodeSpec,
    NodeStatus,
    Page,
    WorkerPoolSpec,
    WorkerPoolStatus,
)
from raydeck.core.models.limits import stored_data
from raydeck.core.settings import Settings
from raydeck.db.models import ClusterRow
from raydeck.server.secret_box import secret_box
from raydeck.server.services.budgets import check_budget_allows
from raydeck.server.services.paging import fetch_page

__all__ = [
    "ACTIVE_STATES",
    "backend_spec",
    "check_capacity",
    "cluster_credentials",
    "create_cluster",
    "delete_cluster",
    "get_cluster",
    "get_cluster_row",
    "list_clusters",
    "ray_token",
    "repair_cluster",
    "teardown_spec",
    "to_model",
    "update_cluster",
]

# States in which the cluster's Ray processes exist and accept work.
ACTIVE_STATES = frozenset({ClusterState.RUNNING.value, ClusterState.UPDATING.value})


def to_model(row: ClusterRow) -> Cluster:
    with stored_data():  # a row stored before a cap was lowered stays readable
        return _to_model(row)


def _to_model(row: ClusterRow) -> Cluster:
    spec = row.spec
    current = spec.get("current_replicas", {})
    return Cluster(
        id=row.id,
        name=row.name,
        project=row.project,
        state=ClusterState(row.state),
        state_reason=row.state_reason,
        ray_version=row.ray_version,
        backend=row.backend,
        head=HeadNodeSpec.model_validate(spec["head"]),
        worker_pools=[
            WorkerPoolStatus.model_validate(
                {**pool, "current_replica_count": current.get(pool["name"], 0)}
            )
            for pool in spec["worker_pools"]
        ],
        runtime_env=spec.get("runtime_env"),
        image=spec.get("image"),
        labels=row.labels,
        network=spec.get("network", "local"),
        dashboard_url=row.dashboard_url,
        ray_client_address=row.ray_client_address,
        gcs_address=row.gcs_address,
        nodes=[NodeStatus.model_validate(n) for n in spec.get("nodes", [])],
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def ray_token(settings: Settings, row: ClusterRow) -> str:
    """The cluster's Ray auth token (stored encrypted with the server's secret key)."""
    return secret_box(settings.secret_key_path).decrypt(row.ray_auth_token_ciphertext)


def cluster_credentials(
    session: Session, settings: Settings, name: str, project: str
) -> dict[str, str | None]:
    """What a Ray client needs to connect: address plus the cluster's Ray auth token."""
    row = get_cluster_row(session, name, project)
    return {
        "ray_client_address": row.ray_client_address,
        "ray_auth_token": ray_token(settings, row),
        "dashboard_url": row.dashboard_url,
    }


def backend_spec(row: ClusterRow, settings: Settings) -> ClusterSpec:
    """What the backend must make real for this row."""
    with stored_data():
        head = HeadNodeSpec.model_validate(row.spec["head"])
        pools = [WorkerPoolSpec.model_validate(p) for p in row.spec["worker_pools"]]
    return ClusterSpec(
        cluster_id=row.id,
        name=row.name,
        head=PoolSpec(
            name="head",
            replicas=1,
            num_cpus=head.num_cpus,
            num_gpus=head.num_gpus,
            memory=head.memory,
            resources=dict(head.resources),
            hosts=tuple(head.hosts),
            host_labels=dict(head.host_labels),
        ),
        worker_pools=tuple(
            PoolSpec(
                name=p.name,
                replicas=p.replica_count,
                num_cpus=p.num_cpus,
                num_gpus=p.num_gpus,
                memory=p.memory,
                resources=dict(p.resources),
                placement=p.placement,
                hosts=tuple(p.hosts),
                host_labels=dict(p.host_labels),
            )
            for p in pools
        ),
        ray_auth_token=ray_token(settings, row),
        env={k: str(v) for k, v in (row.spec.get("runtime_env") or {}).get("env_vars", {}).items()},
    )


def teardown_spec(row: ClusterRow, settings: Settings) -> ClusterSpec:
    """Enough to delete the cluster of any row, even one whose stored spec no longer
    validates: deleting never depends on what the cluster was meant to be."""
    return ClusterSpec(
        cluster_id=row.id,
        name=row.name,
        head=PoolSpec(name="head", replicas=1),
        worker_pools=(),
        ray_auth_token=ray_token(settings, row),
    )


def get_cluster_row(session: Session, name: str, project: str = "default") -> ClusterRow:
    row = session.scalar(
        select(ClusterRow).where(ClusterRow.project == project, ClusterRow.name == name)
    )
    if row is None:
        raise NotFoundError(f"cluster {name!r} not found", field="cluster")
    return row


def get_cluster(session: Session, name: str, project: str = "default") -> Cluster:
    return to_model(get_cluster_row(session, name, project))


def check_capacity(
    backend: ClusterBackend, head: HeadNodeSpec, pools: Sequence[WorkerPoolSpec]
) -> None:
    """400 naming the field when the backend's hosts could never hold this shape, each pool
    at its largest (``max_replica_count`` when it autoscales)."""
    backend.check_capacity(
        ClusterSpec(
            cluster_id="capacity-check",
            name="capacity-check",
            head=_pool_spec("head", head, 1),
            worker_pools=tuple(_pool_spec(p.name, p, p.max_replicas) for p in pools),
            ray_auth_token="",
        )
    )


def _pool_spec(name: str, pool: HeadNodeSpec | WorkerPoolSpec, replicas: int) -> PoolSpec:
    return PoolSpec(
        name=name,
        replicas=replicas,
        num_cpus=pool.num_cpus,
        num_gpus=pool.num_gpus,
        memory=pool.memory,
        resources=dict(pool.resources),
        placement=pool.placement if isinstance(pool, WorkerPoolSpec) else "pack",
        hosts=tuple(pool.hosts),
        host_labels=dict(pool.host_labels),
    )


def create_cluster(
    session: Session,
    request: ClusterCreate,
    *,
    backend: str,
    ray_version: str,
    capacity: ClusterBackend,
    settings: Settings,
    project: str = "default",
) -> Cluster:
    """``capacity``: the backend named by ``backend``, asked whether its hosts fit."""
    check_capacity(capacity, request.head, request.worker_pools)
    check_budget_allows(session, project, "creating clusters")
    if request.ray_version is not None and request.ray_version != ray_version:
        raise InvalidArgumentError(
            f"ray_version {request.ray_version!r} is not available; this server runs {ray_version}",
            field="ray_version",
        )
    taken = select(ClusterRow.id).where(
        ClusterRow.project == project, ClusterRow.name == request.name
    )
    if session.scalar(taken) is not None:
        raise AlreadyExistsError(f"cluster {request.name!r} already exists", field="name")
    spec: dict[str, Any] = {
        "head": request.head.model_dump(mode="json"),
        "worker_pools": [p.model_dump(mode="json") for p in request.worker_pools],
        "runtime_env": request.runtime_env,
        "image": request.image,
        "network": request.network,
    }
    row = ClusterRow(
        id=new_id("cl"),
        project=project,
        name=request.name,
        state=ClusterState.PROVISIONING.value,
        backend=backend,
        ray_version=ray_version,
        spec=spec,
        labels=dict(request.labels),
        ray_auth_token_ciphertext=secret_box(settings.secret_key_path).encrypt(
            secrets.token_hex(32)
        ),
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:  # lost a race with a concurrent create of the same name
        raise AlreadyExistsError(f"cluster {request.name!r} already exists", field="name") from exc
    return to_model(row)


def list_clusters(
    session: Session,
    *,
    page_size: int,
    page_token: str | None,
    state: ClusterState | None = None,
    label: str | None = None,
    project: str = "default",
) -> Page[Cluster]:
    query = select(ClusterRow).where(ClusterRow.project == project)
    if state is not None:
        query = query.where(ClusterRow.state == state.value)
    rows, next_token = fetch_page(session, query, ClusterRow.id, page_size, page_token)
    if label:
        key, sep, value = label.partition("=")
        if not sep or not key:
            raise InvalidArgumentError("label filter must look like key=value", field="label")
        rows = [r for r in rows if r.labels.get(key) == value]
    return Page[Cluster](items=[to_model(r) for r in rows], next_page_token=next_token)


def update_cluster(
    session: Session,
    name: str,
    request: ClusterUpdate,
    backends: Callable[[str], ClusterBackend],
    project: str = "default",
) -> Cluster:
    """``backends``: looks a backend up by kind (the row's, asked whether its hosts fit)."""
    row = get_cluster_row(session, name, project)
    if row.state not in {*ACTIVE_STATES, ClusterState.PROVISIONING.value}:
        raise FailedPreconditionError(
            f"cluster {name!r} is {row.state}; only a running cluster can be resized",
            field="cluster",
        )
    pools = {p["name"]: dict(p) for p in row.spec["worker_pools"]}
    for index, change in enumerate(request.worker_pools):
        field = f"worker_pools[{index}]"
        if change.name not in pools:
            known = ", ".join(pools) or "none"
            raise InvalidArgumentError(
                f"unknown worker pool {change.name!r} (pools: {known})", field=f"{field}.name"
            )
        merged = {**pools[change.name], **change.model_dump(exclude_none=True)}
        if change.replica_count is None:  # bounds moved: keep the target inside them
            low = merged.get("min_replica_count") or merged["replica_count"]
            high = merged.get("max_replica_count") or merged["replica_count"]
            merged["replica_count"] = min(max(merged["replica_count"], low), high)
        try:
            pools[change.name] = WorkerPoolSpec.model_validate(merged).model_dump(mode="json")
        except ValueError as exc:
            raise InvalidArgumentError(_first_error(exc), field=field) from exc
    with stored_data():
        head = HeadNodeSpec.model_validate(row.spec["head"])
        resized = [WorkerPoolSpec.model_validate(p) for p in pools.values()]
    check_capacity(backends(row.backend), head, resized)
    row.spec = {**row.spec, "worker_pools": list(pools.values())}
    row.generation += 1
    if row.state == ClusterState.RUNNING.value:
        row.state = ClusterState.UPDATING.value
    row.state_reason = None
    return to_model(row)


def repair_cluster(session: Session, name: str, project: str = "default") -> Cluster:
    """ERROR → PROVISIONING: the reconciler applies the spec again (a dead head means the
    backend starts the whole cluster over, on other hosts for the `hosts` backend)."""
    row = get_cluster_row(session, name, project)
    if row.state != ClusterState.ERROR.value:
        raise FailedPreconditionError(
            f"cluster {name!r} is {row.state}; only a cluster in ERROR needs a repair",
            field="cluster",
        )
    row.state = ClusterState.PROVISIONING.value
    row.state_reason = "repairing"
    row.generation += 1
    return to_model(row)


def delete_cluster(session: Session, name: str, project: str = "default") -> Cluster:
    row = get_cluster_row(session, name, project)
    if row.state != ClusterState.STOPPING.value:
        row.state = ClusterState.STOPPING.value
        row.state_reason = None
        row.generation += 1
    return to_model(row)


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return str(first.get("msg", exc)).removeprefix("Value error, ")
    return str(exc)
