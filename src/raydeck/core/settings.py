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
| RAYDECK_MLFLOW_TRACKING_URI | (none) | MLflow server that jobs and trials are mirrored to |
| RAYDECK_MLFLOW_TRACKING_TOKEN | (none) | bearer token sent to that server, if it wants one |
| RAYDECK_MLFLOW_SYNC_INTERVAL | 5.0 | seconds between mirroring passes |

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
    price_catalog: Path | None = None
    billing_interval: float = 10.0
    log_collect_interval: float = 2.0
    log_retention_days: float = 7.0
    log_retention_max_bytes: int = 256 * 1024**2
    secret_key_file: Path | None = None
    warehouse_dir: Path | None = None
    ray_os_user: str | None = None
    ray_os_user_per_cluster: bool = True
    cluster_data_dir: Path | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_tracking_token: str | None = None
    mlflow_sync_interval: float = 5.0

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
