"""FastAPI application factory and lifespan (migrations, reconcilers)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from fastapi import FastAPI

from raydeck.backends.base import ClusterBackend
from raydeck.backends.hosts import HostsClusterBackend
from raydeck.backends.local import LocalClusterBackend
from raydeck.backends.os_user import RayUsers
from raydeck.core.settings import Settings, get_settings
from raydeck.db.models import utcnow
from raydeck.db.session import Database
from raydeck.server.audit import AuditMiddleware
from raydeck.server.body_limit import BodyLimitMiddleware
from raydeck.server.errors import ERROR_RESPONSES, install_error_handlers
from raydeck.server.filesystem import (
    prepare_cluster_data,
    ray_users,
    secure_database_files,
    secure_home,
)
from raydeck.server.metrics import MetricsMiddleware
from raydeck.server.reconcilers.autoscaler import Autoscaler
from raydeck.server.reconcilers.batch_predictions import BatchPredictionReconciler
from raydeck.server.reconcilers.billing import BillingReconciler
from raydeck.server.reconcilers.clusters import ClusterReconciler
from raydeck.server.reconcilers.endpoints import EndpointReconciler
from raydeck.server.reconcilers.jobs import JobReconciler
from raydeck.server.reconcilers.logs import LogCollector
from raydeck.server.reconcilers.mlflow_mirror import MlflowMirrorReconciler
from raydeck.server.reconcilers.serve_stats import ServeStatsPoller
from raydeck.server.reconcilers.training import TrainingReconciler
from raydeck.server.reconcilers.training_pipelines import PipelineReconciler
from raydeck.server.routers import (
    access,
    batch_predictions,
    cluster_metrics,
    clusters,
    connections,
    custom_jobs,
    endpoints,
    health,
    hosts,
    jobs,
    models,
    operations,
    ray_proxy,
    tokens,
    training_pipelines,
    tuning_jobs,
)
from raydeck.server.secret_box import secret_box
from raydeck.server.services.pricing import load_catalog
from raydeck.server.state import ServerState

__all__ = ["create_app", "default_backends"]


def default_backends(
    settings: Settings, db: Database, users: RayUsers | None = None
) -> dict[str, ClusterBackend]:
    return {
        "local": LocalClusterBackend(
            settings.clusters_dir,
            bind_host=settings.ray_bind_host,
            port_range=(settings.port_range_start, settings.port_range_end),
            max_workers=settings.local_max_workers,
            cpu_oversubscription=settings.local_cpu_oversubscription,
            ray_dir=settings.ray_temp_root,
            users=users,
        ),
        "hosts": HostsClusterBackend(
            db,
            heartbeat_timeout=settings.host_heartbeat_timeout,
            port_range=(settings.port_range_start, settings.port_range_end),
        ),
    }


def create_app(
    settings: Settings | None = None,
    *,
    backends: dict[str, ClusterBackend] | None = None,
    run_reconcilers: bool = True,
    clock: Callable[[], datetime] = utcnow,
) -> FastAPI:
    """``clock`` is what cost metering and budgets read the time from (tests inject one)."""
    settings = settings or get_settings()
    catalog = load_catalog(settings.price_catalog)
    secure_home(settings)
    users = ray_users(settings)
    if users is not None:
        prepare_cluster_data(settings, users)
    db = Database(settings.db_url)
    db.migrate(secret_box(settings.secret_key_path))  # 0009 encrypts stored Ray tokens
    secure_database_files(settings)
    state = ServerState(
        settings=settings,
        db=db,
        backends=backends if backends is not None else default_backends(settings, db, users),
        clock=clock,
        price_catalog=catalog,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        loops = []
        if run_reconcilers:
            loops = [
                ClusterReconciler(state).loop,
                JobReconciler(state).loop,
                EndpointReconciler(state).loop,
                Autoscaler(state).loop,
                BatchPredictionReconciler(state).loop,
                BillingReconciler(state, catalog).loop,
                LogCollector(state).loop,
                ServeStatsPoller(state).loop,
                TrainingReconciler(state).loop,
                PipelineReconciler(state).loop,
            ]
            if settings.mlflow_tracking_uri:  # experiment tracking, opt-in
                loops.append(MlflowMirrorReconciler(state, settings.mlflow_tracking_uri).loop)
            for loop in loops:
                loop.start()
        try:
            yield
        finally:
            for loop in loops:
                await loop.stop()
            state.wake_callbacks.clear()
            state.observation_callbacks.clear()

    app = FastAPI(
        title="Raydeck",
        version="0.1.0",
        description="Self-hosted control plane for Ray clusters, jobs and models.",
        lifespan=lifespan,
    )
    app.state.raydeck = state
    install_error_handlers(app)
    for module in (
        health,
        tokens,
        access,
        operations,
        clusters,
        cluster_metrics,
        jobs,
        ray_proxy,
        models,
        endpoints,
        batch_predictions,
        custom_jobs,  # training (issue 5)
        tuning_jobs,
        training_pipelines,
        connections,  # warehouse (issue 6)
        hosts,  # many hosts (issue 14)
    ):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    # Added innermost first: the body limit runs before anything; metrics see the audit's time
    # too; audit sees the final status.
    app.add_middleware(AuditMiddleware, state=state)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    return app
