"""The one place configuration is read from the environment (``RAYDECK_*``).

| variable | default | meaning |
|---|---|---|
| RAYDECK_HOME | ~/.raydeck | SQLite DB, keys, credentials, cluster state: 0700, server only |
| RAYDECK_DATABASE_URL | sqlite:///$RAYDECK_HOME/raydeck.db | SQLAlchemy URL (or Postgres) |
| RAYDECK_HOST / RAYDECK_PORT | 127.0.0.1 / 8770 | where `raydeck server` listens |
| RAYDECK_PUBLIC_URL | http://$RAYDECK_HOST:$RAYDECK_PORT | how clusters reach the server back |
| RAYDECK_SERVER | from $RAYDECK_HOME/server.json | base URL clients talk to |
| RAYDECK_TOKEN | from $RAYDECK_HOME/credentials | bearer token clients send |
| RAYDECK_PROJECT | default | project clients act in (X-Raydeck-Project header) |
| RAYDECK_RAY_BIND_HOST | 127.0.0.1 | interface Ray's own ports bind to |
| RAYDECK_PORT_RANGE_START | 30000 | first port handed to local Ray nodes |
| RAYDECK_RECONCILE_INTERVAL | 1.0 | seconds between reconciler passes |
| RAYDECK_AUTOSCALE_IDLE_SECONDS | 60 | idle time before an autoscaled replica is removed |
| RAYDECK_AUTOSCALE_INTERVAL | 2.0 | seconds between autoscaler passes |
| RAYDECK_MODEL_ARTIFACT_MAX_FILES | 1000 | most files one uploaded model artifact may hold |
| RAYDECK_MODEL_ARTIFACT_MAX_BYTES | 5368709120 | most bytes one model artifact may hold (5 GiB) |
| RAYDECK_MODEL_SOURCE_MAX_BYTES | 1048576 | largest custom predictor module/manifest checked |
| RAYDECK_RAY_OS_USER | raydeck-ray as root, else off | OS user Ray processes run as, or `off` |
| RAYDECK_RAY_OS_USER_PER_CLUSTER | true | each cluster its own user `<user>-<8 hex>` |
| RAYDECK_CLUSTER_DATA_DIR | see below | what clusters read and write ($CLUSTER_DATA) |
| RAYDECK_ARTIFACT_STORE | $CLUSTER_DATA/artifacts | registry artifacts: path or fsspec URI |
| RAYDECK_PRICE_CATALOG | built-in default | YAML price catalog (format: services/pricing.py) |
| RAYDECK_BILLING_INTERVAL | 10.0 | seconds between cost accrual / budget passes |
| RAYDECK_LOG_COLLECT_INTERVAL | 2.0 | seconds between log collector passes |
| RAYDECK_LOG_RETENTION_DAYS | 7 | collected log records older than this are deleted |
| RAYDECK_LOG_RETENTION_MAX_BYTES | 268435456 | oldest log records go first above this much text |
| RAYDECK_SECRET_KEY_FILE | $RAYDECK_HOME/secret.key | key encrypting stored connection secrets |
| RAYDECK_WAREHOUSE_DIR | $CLUSTER_DATA/warehouse | where `duckdb` connections keep their files |
| RAYDECK_DATA_LOAD_MAX_BYTES | 268435456 | largest file `raydeck data load` accepts |
| RAYDECK_ALLOWED_ROOTS | (none) | more roots users may name (below), comma-separated |
| RAYDECK_ALLOWED_PRIVATE_NETWORKS | (none) | private addresses user URLs may reach (below) |
| RAYDECK_MLFLOW_TRACKING_URI | (none) | MLflow server that jobs and trials are mirrored to |
| RAYDECK_MLFLOW_TRACKING_TOKEN | (none) | bearer token sent to that server, if it wants one |
| RAYDECK_MLFLOW_SYNC_INTERVAL | 5.0 | seconds between mirroring passes |
| RAYDECK_HOST_HEARTBEAT_TIMEOUT | 15.0 | a host whose agent is silent this long is LOST |
| RAYDECK_HOST_POLL_INTERVAL | 1.0 | seconds between a host agent's syncs (told to agents) |
| RAYDECK_MAX_REQUEST_BYTES | 8388608 | largest request body on any route (413 above) |
| RAYDECK_MAX_UPLOAD_BYTES | 2147483648 | largest upload body (model archives, Ray packages) |
| RAYDECK_MAX_PAGE_SIZE | 1000 | largest page_size of a list call |
| RAYDECK_MAX_LABELS | 64 | labels per resource (keys and values up to 63 characters) |
| RAYDECK_MAX_WORKER_POOLS | 16 | worker pools per cluster |
| RAYDECK_MAX_POOL_REPLICAS | 1000 | replica_count / min / max of one worker pool |
| RAYDECK_MAX_NODE_CPUS | 1024 | num_cpus of one node (cluster head/worker, endpoint/job replica) |
| RAYDECK_MAX_NODE_GPUS | 64 | num_gpus of one node or replica |
| RAYDECK_MAX_NODE_MEMORY | 4398046511104 | memory (bytes) of one node or replica (4 TiB) |
| RAYDECK_MAX_CUSTOM_RESOURCES | 32 | custom resources per node or replica |
| RAYDECK_MAX_RESOURCE_QUANTITY | 1000000 | quantity of one custom resource |
| RAYDECK_MAX_ENDPOINT_REPLICAS | 100 | min/max replicas of one deployed model |
| RAYDECK_MAX_SERVE_BATCH_SIZE | 1024 | max_batch_size of an endpoint's dynamic batching |
| RAYDECK_MAX_PREDICT_INSTANCES | 10000 | instances in one predict request |
| RAYDECK_MAX_JOB_REPLICAS | 256 | replicas of one custom-job worker pool |
| RAYDECK_MAX_TRIAL_COUNT | 10000 | max_trial_count / max_failed_trial_count of a tuning job |
| RAYDECK_MAX_PARALLEL_TRIALS | 64 | parallel_trial_count of a tuning job |
| RAYDECK_MAX_BATCH_CONCURRENCY | 256 | concurrency (model replicas) of a batch prediction job |
| RAYDECK_MAX_BATCH_ROWS | 1000000 | batch_size (rows per predict call) of a batch prediction job |
| RAYDECK_LOCAL_MAX_WORKERS | 64 | worker replicas of one local-backend cluster (all pools) |
| RAYDECK_LOCAL_CPU_OVERSUBSCRIPTION | 4.0 | local node: at most this × the machine's cores |
| RAYDECK_AUDIT_ANONYMOUS_WINDOW | 60 | one audit row per source/action of anonymous writes |

What users may make the server open (``server/services/uri_policy.py``): local paths inside
their project's warehouse directory (``$RAYDECK_WAREHOUSE_DIR``, ``projects/<project>/``
under it outside ``default``) and under the directories listed in ``RAYDECK_ALLOWED_ROOTS``
(which may also list URI prefixes such as ``s3://bucket/raydeck``: other URIs than http(s)
are refused without one), never anything inside ``RAYDECK_HOME`` or the server's database,
key and artifact store. That covers duckdb paths, files roots and sqlite/duckdb URLs of
connections, model ``artifact_uri``, batch prediction input/output and ``base_output_dir``.
URLs the server connects to for users (sql hosts, BigQuery ``api_endpoint``, http(s)
artifacts, endpoints in storage options) must resolve to public addresses only, unless listed
in ``RAYDECK_ALLOWED_PRIVATE_NETWORKS``: CIDRs, addresses or host names, ``*`` for all (e.g.
``127.0.0.1/32`` for a Postgres on this host).

Isolation (``RAYDECK_RAY_OS_USER``): when the server runs as root, every Ray process (heads,
workers, hence jobs, Serve replicas and trials) runs as an unprivileged OS user that cannot
enter ``RAYDECK_HOME``; the server creates ``raydeck-ray`` (and one user per cluster) when
missing, or uses the existing user named here (its primary group owns the data area). Each
cluster runs as a user of its own in that group, ``<user>-<8 hex of the cluster id>``, created
at its first start and removed with it, unless ``RAYDECK_RAY_OS_USER_PER_CLUSTER=false`` (then
every cluster runs as the named user). Not root: off, and
``raydeck server`` says so in one warning line (naming a user is then an error: switching
users takes root). ``off`` turns it off explicitly.

The cluster data area (``$CLUSTER_DATA``: ``/var/lib/raydeck/<10 hex of the home's path>``
when isolated, else ``$RAYDECK_HOME`` itself, so a laptop's layout is unchanged) holds what
clusters legitimately read and write, outside the 0700 home, each place through one accessor:

| path | accessor | owner, mode (isolated) |
|---|---|---|
| $CLUSTER_DATA | cluster_data_root | root:<Ray group> 0750 |
| $CLUSTER_DATA/artifacts | artifact_root | root:<Ray group> 2770: models, batch outputs |
| $CLUSTER_DATA/warehouse | warehouse_root | root:<Ray group> 2770: DuckDB/files data |
| $CLUSTER_DATA/training | training_root | root:<Ray group> 2770: default base_output_dir |
| $CLUSTER_DATA/clusters | ray_temp_root | root:<Ray group> 0750; each cluster's Ray temp |
|   | | dirs' parent is 0700, owned by that cluster's user (/tmp/rd-<hash> when the path |
|   | | would be too long for Ray's sockets) |
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_RAY_OS_USER", "Settings", "get_settings"]

DEFAULT_RAY_OS_USER = "raydeck-ray"
_ISOLATED_DATA_PARENT = Path("/var/lib/raydeck")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAYDECK_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".raydeck")
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8770
    server: str | None = None
    public_url: str | None = None
    token: str | None = None
    project: str | None = None
    ray_bind_host: str = "127.0.0.1"
    port_range_start: int = 30000
    port_range_end: int = 60000
    reconcile_interval: float = 1.0
    autoscale_interval: float = 2.0
    autoscale_idle_seconds: float = 60.0
    default_backend: str = "local"
    artifact_store: str | None = None
    model_artifact_max_files: int = Field(default=1000, ge=1)
    model_artifact_max_bytes: int = Field(default=5 * 1024**3, ge=1)
    model_source_max_bytes: int = Field(default=1024**2, ge=1)
    price_catalog: Path | None = None
    billing_interval: float = 10.0
    log_collect_interval: float = 2.0
    log_retention_days: float = 7.0
    log_retention_max_bytes: int = 256 * 1024**2
    data_load_max_bytes: int = 256 * 1024**2
    secret_key_file: Path | None = None
    warehouse_dir: Path | None = None
    allowed_roots: str = ""
    allowed_private_networks: str = ""
    ray_os_user: str | None = None
    ray_os_user_per_cluster: bool = True
    cluster_data_dir: Path | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_tracking_token: str | None = None
    mlflow_sync_interval: float = 5.0
    host_heartbeat_timeout: float = 15.0
    host_poll_interval: float = 1.0
    # Caps on what one request may ask for (core/models/limits.py reads them).
    max_request_bytes: int = 8 * 1024**2
    max_upload_bytes: int = 2 * 1024**3
    max_page_size: int = 1000
    max_labels: int = 64
    max_worker_pools: int = 16
    max_pool_replicas: int = 1000
    max_node_cpus: float = 1024
    max_node_gpus: float = 64
    max_node_memory: int = 4 * 1024**4
    max_custom_resources: int = 32
    max_resource_quantity: float = 1_000_000
    max_endpoint_replicas: int = 100
    max_serve_batch_size: int = 1024
    max_predict_instances: int = 10_000
    max_job_replicas: int = 256
    max_trial_count: int = 10_000
    max_parallel_trials: int = 64
    max_batch_concurrency: int = 256
    max_batch_rows: int = 1_000_000
    local_max_workers: int = 64
    local_cpu_oversubscription: float = 4.0
    audit_anonymous_window: float = 60.0

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'raydeck.db'}"

    @property
    def advertised_url(self) -> str:
        """Where processes on clusters reach this server (e.g. endpoints checking tokens)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def credentials_path(self) -> Path:
        return self.home / "credentials"

    @property
    def server_info_path(self) -> Path:
        return self.home / "server.json"

    @property
    def clusters_dir(self) -> Path:
        """The local backend's per-cluster state (ports, nodes): the server's only."""
        return self.home / "clusters"

    @property
    def ray_user(self) -> str | None:
        """The OS user Ray processes run as; None: the server's own (isolation off)."""
        value = (self.ray_os_user or "").strip()
        if value.lower() == "off":
            return None
        if value:
            return value
        return DEFAULT_RAY_OS_USER if os.geteuid() == 0 else None

    @property
    def cluster_data_root(self) -> Path:
        """What clusters read and write, outside the 0700 home when Ray runs as another user."""
        if self.cluster_data_dir is not None:
            return self.cluster_data_dir
        if self.ray_user is None:
            return self.home
        digest = hashlib.sha256(str(self.home.absolute()).encode()).hexdigest()[:10]
        return _ISOLATED_DATA_PARENT / digest

    @property
    def ray_temp_root(self) -> Path:
        """Parent of each cluster's Ray temp dirs (``<root>/<cluster id>/ray``)."""
        return self.cluster_data_root / "clusters"

    @property
    def training_root(self) -> Path:
        """Where training runs write when they name no base_output_dir."""
        return self.cluster_data_root / "training"

    @property
    def secret_key_path(self) -> Path:
        return self.secret_key_file or self.home / "secret.key"

    @property
    def warehouse_root(self) -> Path:
        return self.warehouse_dir or self.cluster_data_root / "warehouse"

    @property
    def artifact_root(self) -> str:
        """Root of the artifact store: a local path or an fsspec URI, without trailing '/'."""
        return (self.artifact_store or str(self.cluster_data_root / "artifacts")).rstrip("/")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
