"""Tables. JSON columns hold nested specs; everything queried on is a real column."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "AccountRow",
    "AuditRow",
    "Base",
    "BatchPredictionJobRow",
    "BudgetRow",
    "ClusterRow",
    "ConnectionRow",
    "CostMeterRow",
    "CostRecordRow",
    "CustomRoleRow",
    "EndpointRow",
    "HostNodeRow",
    "HostRow",
    "JobRow",
    "JoinTokenRow",
    "LogCursorRow",
    "LogRecordRow",
    "MlflowRunRow",
    "ModelAliasRow",
    "ModelRow",
    "ModelVersionRow",
    "ProjectRow",
    "RoleBindingRow",
    "TokenRow",
    "TrainingJobRow",
    "TrainingMetricRow",
    "TrainingPipelineRow",
    "TrialRow",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """SQLite drops tzinfo; store UTC and hand back aware datetimes on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime stored")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime}


class TokenRow(Base):
    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str | None] = mapped_column(String(64), default=None)  # as created (display)
    account_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("accounts.id", ondelete="CASCADE"), index=True, default=None
    )
    prefix: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    # A scoped token (a job's): usable only in this project, only for these permissions
    # (on top of what its account's role bindings grant). None: unscoped.
    scope_project: Mapped[str | None] = mapped_column(String(64), default=None)
    scope_permissions: Mapped[list[Any] | None] = mapped_column(JSON, default=None)


class ClusterRow(Base):
    __tablename__ = "clusters"
    __table_args__ = (UniqueConstraint("project", "name", name="uq_clusters_project_name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    name: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), index=True)
    state_reason: Mapped[str | None] = mapped_column(Text, default=None)
    backend: Mapped[str] = mapped_column(String(32))
    ray_version: Mapped[str] = mapped_column(String(32))
    # head, worker_pools (incl. autoscaler targets), runtime_env, image, network
    spec: Mapped[dict[str, Any]] = mapped_column()
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Ray's own auth token for this cluster, encrypted at rest (server/secret_box.py); read it
    # with services.clusters.ray_token.
    ray_auth_token_ciphertext: Mapped[str] = mapped_column("ray_auth_token_encrypted", Text)
    dashboard_url: Mapped[str | None] = mapped_column(String(256), default=None)
    ray_client_address: Mapped[str | None] = mapped_column(String(256), default=None)
    gcs_address: Mapped[str | None] = mapped_column(String(256), default=None)
    generation: Mapped[int] = mapped_column(default=1)  # bumped on every desired-state change
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("cluster_id", "submission_id", name="uq_jobs_cluster_submission"),
        Index("ix_jobs_project_id", "project", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    cluster_id: Mapped[str] = mapped_column(String(40), index=True)
    cluster_name: Mapped[str] = mapped_column(String(64), index=True)
    submission_id: Mapped[str] = mapped_column(String(128))
    entrypoint: Mapped[str] = mapped_column(Text)
    runtime_env: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    job_metadata: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), index=True)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    start_time: Mapped[datetime | None] = mapped_column(default=None)
    end_time: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ModelRow(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("project", "display_name", name="uq_models_project_name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    display_name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Last version number handed out; never reused, so "m@3" always means the same artifact.
    version_counter: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version_id", name="uq_model_versions_model_version"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("models.id", ondelete="CASCADE"), index=True
    )
    version_id: Mapped[str] = mapped_column(String(16))
    framework: Mapped[str] = mapped_column(String(32), index=True)
    artifact_uri: Mapped[str] = mapped_column(Text)
    source_uri: Mapped[str | None] = mapped_column(Text, default=None)
    description: Mapped[str | None] = mapped_column(Text, default=None)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    predict_schema: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ModelAliasRow(Base):
    """One row per (model, alias): the primary key makes "an alias is on one version" hold."""

    __tablename__ = "model_version_aliases"

    model_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_row_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )


class EndpointRow(Base):
    __tablename__ = "endpoints"
    __table_args__ = (UniqueConstraint("project", "name", name="uq_endpoints_project_name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    name: Mapped[str] = mapped_column(String(64))
    cluster_id: Mapped[str] = mapped_column(String(40), index=True)
    cluster_name: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), index=True)
    state_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # deployed_models (list of DeployedModel dicts), traffic_split, description
    spec: Mapped[dict[str, Any]] = mapped_column()
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    predict_url: Mapped[str | None] = mapped_column(String(256), default=None)
    generation: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class BatchPredictionJobRow(Base):
    __tablename__ = "batch_prediction_jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    display_name: Mapped[str] = mapped_column(String(128))
    model_ref: Mapped[str] = mapped_column(String(256))  # as given
    model_version_id: Mapped[str] = mapped_column(String(40), index=True)
    cluster_id: Mapped[str] = mapped_column(String(40), index=True)
    cluster_name: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    state_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # the create request (input format resolved) plus framework, artifact_uri, model_version
    spec: Mapped[dict[str, Any]] = mapped_column()
    submission_id: Mapped[str] = mapped_column(String(128))
    job_id: Mapped[str | None] = mapped_column(String(40), default=None)
    rows_total: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_succeeded: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_failed: Mapped[int] = mapped_column(BigInteger, default=0)
    output_files: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"files": [...]}
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    start_time: Mapped[datetime | None] = mapped_column(default=None)
    end_time: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TrainingJobRow(Base):
    """A CustomJob (kind "custom") or a HyperparameterTuningJob (kind "tuning"): both are one
    Ray job per attempt on a cluster, so they share the lifecycle columns."""

    __tablename__ = "training_jobs"
    __table_args__ = (Index("ix_training_jobs_kind_id", "kind", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    project: Mapped[str] = mapped_column(String(64), default="default")
    display_name: Mapped[str] = mapped_column(String(128))
    cluster_id: Mapped[str | None] = mapped_column(String(40), index=True, default=None)
    cluster_name: Mapped[str | None] = mapped_column(String(64), default=None)
    ephemeral_cluster: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(String(16), index=True)
    state_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # the create request (job spec, study spec, counts) plus resolved base_output_dir
    spec: Mapped[dict[str, Any]] = mapped_column()
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    attempt: Mapped[int] = mapped_column(default=0)
    submission_id: Mapped[str | None] = mapped_column(String(128), default=None)
    job_id: Mapped[str | None] = mapped_column(String(40), default=None)
    best_trial_id: Mapped[str | None] = mapped_column(String(40), default=None)
    pipeline_id: Mapped[str | None] = mapped_column(String(40), index=True, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    start_time: Mapped[datetime | None] = mapped_column(default=None)
    end_time: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TrialRow(Base):
    __tablename__ = "training_trials"
    __table_args__ = (UniqueConstraint("tuning_job_id", "number", name="uq_trials_job_number"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tuning_job_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("training_jobs.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column()
    state: Mapped[str] = mapped_column(String(16), index=True)
    state_reason: Mapped[str | None] = mapped_column(Text, default=None)
    params: Mapped[dict[str, Any]] = mapped_column()
    # Optuna's per-trial sampler state (e.g. CMA-ES generation), so a restart resumes it
    sampler_attrs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    final_value: Mapped[float | None] = mapped_column(Float, default=None)
    final_step: Mapped[int | None] = mapped_column(default=None)
    start_time: Mapped[datetime | None] = mapped_column(default=None)
    end_time: Mapped[datetime | None] = mapped_column(default=None)


class TrainingMetricRow(Base):
    """One metric point of a custom job or a trial (run_id is either id)."""

    __tablename__ = "training_metrics"
    __table_args__ = (Index("ix_training_metrics_run_metric", "run_id", "metric", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(40))
    metric: Mapped[str] = mapped_column(String(128))
    step: Mapped[int | None] = mapped_column(default=None)
    value: Mapped[float] = mapped_column(Float)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class MlflowRunRow(Base):
    """How far a custom job or trial (``run_id``) has been mirrored to the MLflow tracking
    server: its MLflow run once created (never created twice), the last metric point sent,
    the last state sent, and the retry schedule after a failure."""

    __tablename__ = "mlflow_runs"

    run_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "custom" or "trial"
    experiment_id: Mapped[str | None] = mapped_column(String(64), default=None)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), default=None)
    params_logged: Mapped[bool] = mapped_column(default=False)
    last_metric_id: Mapped[int] = mapped_column(default=0)
    mirrored_state: Mapped[str | None] = mapped_column(String(16), default=None)
    closed: Mapped[bool] = mapped_column(default=False, index=True)  # ended and all sent
    failures: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TrainingPipelineRow(Base):
    __tablename__ = "training_pipelines"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    display_name: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), index=True)
    state_reason: Mapped[str | None] = mapped_column(Text, default=None)
    spec: Mapped[dict[str, Any]] = mapped_column()  # training_task + model_to_upload
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    training_job_id: Mapped[str | None] = mapped_column(String(40), default=None)
    model_version_id: Mapped[str | None] = mapped_column(String(40), default=None)
    model_version: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    start_time: Mapped[datetime | None] = mapped_column(default=None)
    end_time: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ConnectionRow(Base):
    """A warehouse connection. ``config`` holds the kind's fields (never the secret);
    ``secret_ciphertext`` is the Fernet-encrypted secret, when one is stored."""

    __tablename__ = "connections"
    __table_args__ = (UniqueConstraint("project", "name", name="uq_connections_project_name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), index=True)
    description: Mapped[str | None] = mapped_column(Text, default=None)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    secret_ciphertext: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ProjectRow(Base):
    __tablename__ = "projects"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AccountRow(Base):
    """A user or a service account; tokens act as one, role bindings grant it permissions."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    display_name: Mapped[str | None] = mapped_column(String(128), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RoleBindingRow(Base):
    __tablename__ = "role_bindings"
    __table_args__ = (
        UniqueConstraint("account_id", "project", "role", name="uq_role_bindings_binding"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    project: Mapped[str] = mapped_column(String(64), index=True)  # "*": every project
    role: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CustomRoleRow(Base):
    __tablename__ = "custom_roles"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    permissions: Mapped[list[Any]] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditRow(Base):
    __tablename__ = "audit_log"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    time: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128), index=True)
    token_id: Mapped[str | None] = mapped_column(String(40), default=None)
    project: Mapped[str | None] = mapped_column(String(64), default=None)
    action: Mapped[str] = mapped_column(String(128))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(Text)
    status_code: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text, default=None)


class LogRecordRow(Base):
    __tablename__ = "log_records"
    __table_args__ = (Index("ix_log_records_resource", "resource_kind", "resource_id", "id"),)

    # Integer autoincrement: insertion order is the order lines were read, and a stable cursor.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    resource_kind: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(64))
    resource_name: Mapped[str] = mapped_column(String(128), index=True)
    source: Mapped[str] = mapped_column(String(256))
    severity: Mapped[str] = mapped_column(String(8))
    time: Mapped[datetime] = mapped_column(index=True)
    text: Mapped[str] = mapped_column(Text)


class LogCursorRow(Base):
    """How far a log source was read, so a restarted collector neither skips nor repeats."""

    __tablename__ = "log_cursors"

    source_key: Mapped[str] = mapped_column(String(512), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CostMeterRow(Base):
    """The last observation of a cluster: accrual runs from it to the next observation."""

    __tablename__ = "cost_meters"

    cluster_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(64))
    cluster_name: Mapped[str] = mapped_column(String(64))
    observed_at: Mapped[datetime] = mapped_column()
    billable: Mapped[bool] = mapped_column(default=False)
    # [{"node", "pool", "hour_price"}] alive at observed_at; [{"kind","id","name"}] attributed
    nodes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    subjects: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # record ids of the interval that ended at observed_at, extended while nothing changes
    open_records: Mapped[dict[str, Any]] = mapped_column(default=dict)


class CostRecordRow(Base):
    __tablename__ = "cost_records"
    __table_args__ = (
        Index("ix_cost_records_project_end", "project", "end_at"),
        Index("ix_cost_records_subject", "kind", "subject_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # cluster | job | endpoint
    subject_id: Mapped[str] = mapped_column(String(40))
    subject_name: Mapped[str] = mapped_column(String(128))
    cluster_id: Mapped[str] = mapped_column(String(40), index=True)
    start_at: Mapped[datetime] = mapped_column()
    end_at: Mapped[datetime] = mapped_column()
    node_seconds: Mapped[float] = mapped_column(Float)
    amount: Mapped[float] = mapped_column(Float)


class BudgetRow(Base):
    __tablename__ = "budgets"

    project: Mapped[str] = mapped_column(String(64), primary_key=True)
    alert_amount: Mapped[float | None] = mapped_column(Float, default=None)
    limit_amount: Mapped[float | None] = mapped_column(Float, default=None)
    webhook_url: Mapped[str | None] = mapped_column(Text, default=None)
    since: Mapped[datetime] = mapped_column()
    alerted_at: Mapped[datetime | None] = mapped_column(default=None)
    exhausted_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# --- hosts backend (issue 14) -----------------------------------------------------------


class JoinTokenRow(Base):
    """A single-purpose token that can only register hosts; stored as a SHA-256 hash."""

    __tablename__ = "host_join_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    hosts_joined: Mapped[int] = mapped_column(default=0)


class HostRow(Base):
    """A machine whose agent runs Ray nodes; ``credential_hash`` authenticates that agent."""

    __tablename__ = "hosts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    address: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # READY | DRAINING (LOST is computed)
    num_cpus: Mapped[float] = mapped_column(Float)
    num_gpus: Mapped[float] = mapped_column(Float, default=0)
    memory: Mapped[int] = mapped_column(BigInteger, default=0)
    resources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    credential_hash: Mapped[str] = mapped_column(String(64), unique=True)
    agent_version: Mapped[str] = mapped_column(String(64), default="")
    join_token_id: Mapped[str | None] = mapped_column(String(40), default=None)
    # The agent's last report: host-node id -> state of every node it still has processes of.
    observed: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(default=None)


class HostNodeRow(Base):
    """One Ray node of a ``hosts`` cluster placed on one host: desired, plus what its agent
    last reported."""

    __tablename__ = "host_nodes"
    __table_args__ = (UniqueConstraint("cluster_id", "node", name="uq_host_nodes_cluster_node"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    cluster_id: Mapped[str] = mapped_column(String(40), index=True)
    host_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("hosts.id", ondelete="CASCADE"), index=True
    )
    node: Mapped[str] = mapped_column(String(80))
    pool: Mapped[str] = mapped_column(String(64))
    port_base: Mapped[int] = mapped_column(Integer)
    # num_cpus, num_gpus, memory, resources, env: what `ray start` needs
    launch: Mapped[dict[str, Any]] = mapped_column()
    state: Mapped[str] = mapped_column(String(16))
    node_ip: Mapped[str | None] = mapped_column(String(64), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
