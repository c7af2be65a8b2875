"""The one place configuration is read from the environment (``RAYDECK_*``).

| variable | default | meaning |
|---|---|---|
| RAYDECK_HOME | ~/.raydeck | SQLite DB, cluster state, logs, credentials |
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
| RAYDECK_ARTIFACT_STORE | $RAYDECK_HOME/artifacts | registry artifacts: path or fsspec URI |
| RAYDECK_PRICE_CATALOG | built-in default | YAML price catalog (format: services/pricing.py) |
| RAYDECK_BILLING_INTERVAL | 10.0 | seconds between cost accrual / budget passes |
| RAYDECK_LOG_COLLECT_INTERVAL | 2.0 | seconds between log collector passes |
| RAYDECK_LOG_RETENTION_DAYS | 7 | collected log records older than this are deleted |
| RAYDECK_LOG_RETENTION_MAX_BYTES | 268435456 | oldest log records go first above this much text |
| RAYDECK_SECRET_KEY_FILE | $RAYDECK_HOME/secret.key | key encrypting stored connection secrets |
| RAYDECK_WAREHOUSE_DIR | $RAYDECK_HOME/warehouse | where `duckdb` connections keep their files |
| RAYDECK_MLFLOW_TRACKING_URI | (none) | MLflow server that jobs and trials are mirrored to |
| RAYDECK_MLFLOW_TRACKING_TOKEN | (none) | bearer token sent to that server, if it wants one |
| RAYDECK_MLFLOW_SYNC_INTERVAL | 5.0 | seconds between mirroring passes |
| RAYDECK_HOST_HEARTBEAT_TIMEOUT | 15.0 | a host whose agent is silent this long is LOST |
| RAYDECK_HOST_POLL_INTERVAL | 1.0 | seconds between a host agent's syncs (told to agents) |
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


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
    mlflow_tracking_uri: str | None = None
    mlflow_tracking_token: str | None = None
    mlflow_sync_interval: float = 5.0
    host_heartbeat_timeout: float = 15.0
    host_poll_interval: float = 1.0

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
        return self.home / "clusters"

    @property
    def secret_key_path(self) -> Path:
        return self.secret_key_file or self.home / "secret.key"

    @property
    def warehouse_root(self) -> Path:
        return self.warehouse_dir or self.home / "warehouse"

    @property
    def artifact_root(self) -> str:
        """Root of the artifact store: a local path or an fsspec URI, without trailing '/'."""
        return (self.artifact_store or str(self.home / "artifacts")).rstrip("/")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
