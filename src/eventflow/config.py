"""Runtime configuration: one typed settings class, read only by entry points."""

from __future__ import annotations

import os
import socket
import uuid
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_consumer_name() -> str:
    """A consumer name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Settings(BaseSettings):
    """Every knob of EventFlow. Environment variables use the ``EVENTFLOW_`` prefix,
    except the two connection URLs, which also accept the 12-factor names
    ``DATABASE_URL`` and ``REDIS_URL``."""

    model_config = SettingsConfigDict(
        env_prefix="EVENTFLOW_", extra="ignore", populate_by_name=True
    )

    # Secrets: never printed (repr, logs); read them through database_dsn/redis_dsn.
    database_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "EVENTFLOW_DATABASE_URL"),
        description="PostgreSQL URL; unset means `eventflow dev` starts a local one.",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "EVENTFLOW_REDIS_URL"),
        description="Redis URL; unset means `eventflow dev` starts a local one.",
    )

    # Queue layout and consumer identity.
    stream_name: str = "eventflow:events"
    consumer_group: str = "eventflow-workers"
    consumer_name: str | None = None
    partitions: int = Field(default=8, ge=1, le=1024)
    redis_cluster: bool = False
    lease_ttl_ms: int = Field(default=10_000, ge=500)

    # Worker.
    worker_batch_size: int = Field(default=500, ge=1, le=10_000)
    worker_block_ms: int = Field(default=1000, ge=1)
    claim_idle_ms: int = Field(default=15_000, ge=100)
    max_deliveries: int = Field(default=5, ge=1)
    housekeeping_interval_s: float = Field(default=5.0, gt=0)
    idle_consumer_timeout_s: float = Field(default=60.0, gt=0)
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    worker_metrics_port: int = Field(default=9100, ge=0, le=65535)

    # Retries of transient failures (exponential backoff with jitter).
    retry_attempts: int = Field(default=5, ge=1)
    retry_initial_s: float = Field(default=0.05, gt=0)
    retry_max_s: float = Field(default=5.0, gt=0)

    # Data lifecycle: the event tables are partitioned by acceptance time.
    partition_interval_days: int = Field(default=1, ge=1, le=366)
    partition_ahead_days: int = Field(default=7, ge=1, le=366)
    # 0 keeps everything; a per-table value overrides retention_days.
    retention_days: int = Field(default=0, ge=0)
    retention_days_raw: int | None = Field(default=None, ge=0)
    retention_days_processed: int | None = Field(default=None, ge=0)
    retention_days_failed: int | None = Field(default=None, ge=0)
    duplicate_window_days: float = Field(default=7.0, gt=0)
    maintenance_interval_s: float = Field(default=600.0, gt=0)
    # Reprocessing runs execute in a child process of the worker, at this niceness.
    reprocess_nice: int = Field(default=10, ge=0, le=19)

    # Reconciler: republishes accepted events that Redis no longer holds.
    reconcile_interval_s: float = Field(default=5.0, gt=0)
    reconcile_min_age_s: float = Field(default=10.0, ge=0)
    reconcile_batch_size: int = Field(default=5000, ge=1)
    reconcile_publish_slack_s: float = Field(default=5.0, ge=0)

    # Connections.
    db_connect_timeout_s: float = Field(default=5.0, gt=0)
    db_command_timeout_s: float = Field(default=60.0, gt=0)
    redis_connect_timeout_s: float = Field(default=2.0, gt=0)
    redis_socket_timeout_s: float = Field(default=5.0, gt=0)
    health_check_timeout_s: float = Field(default=2.0, gt=0)
    publish_backoff_s: float = Field(default=1.0, ge=0)
    ingest_retry_attempts: int = Field(default=3, ge=1)
    ingest_queue_limit: int = Field(default=20_000, ge=1)
    ingest_deadline_s: float = Field(default=10.0, gt=0)

    # API.
    api_host: str = "0.0.0.0"
    api_port: int = Field(default=8000, ge=0, le=65535)
    ingest_max_batch: int = Field(default=2000, ge=1)
    max_batch_request: int = Field(default=1000, ge=1)
    max_future_skew_s: float = Field(default=300.0, ge=0)
    max_consumer_lag: int = Field(default=1_000_000, ge=0)
    db_pool_size: int = Field(default=10, ge=1)
    max_json_depth: int = Field(default=32, ge=2, le=200)

    # Security.
    auth_required: bool = True
    anonymous_ingest: bool = False
    anonymous_rate_limit: float = Field(default=20.0, gt=0)
    key_refresh_s: float = Field(default=2.0, gt=0, le=5.0)
    api_metrics_port: int = Field(default=0, ge=0, le=65535)
    api_metrics_host: str = "127.0.0.1"
    cors_origins: list[str] = Field(default_factory=list)
    # The operator console (/console): signs its session and CSRF cookies; unset,
    # each process makes its own (sessions then last until it restarts).
    console_secret: SecretStr | None = None
    console_session_hours: float = Field(default=12.0, gt=0, le=24 * 30)

    # Request limits.
    max_event_bytes: int = Field(default=64 * 1024, ge=256)
    max_batch_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    body_timeout_s: float = Field(default=10.0, gt=0)
    max_headers: int = Field(default=100, ge=8)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    header_timeout_s: float = Field(default=10.0, gt=0)

    # Event types (the schema registry).
    unknown_event_types: Literal["reject", "accept"] = "reject"
    schema_refresh_s: float = Field(default=2.0, gt=0, le=5.0)

    # Logs.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    # Local mode.
    data_dir: str = ".eventflow"

    @field_validator("database_url", mode="before")
    @classmethod
    def _asyncpg_driver(cls, value: object) -> object:
        """Accept plain ``postgresql://`` URLs and use the asyncpg driver for them."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            for prefix in ("postgresql://", "postgres://"):
                if value.startswith(prefix):
                    return "postgresql+asyncpg://" + value[len(prefix) :]
        return value

    @property
    def database_dsn(self) -> str | None:
        """The PostgreSQL URL itself (a secret: do not log it)."""
        return _reveal(self.database_url)

    @property
    def redis_dsn(self) -> str | None:
        """The Redis URL itself (a secret: do not log it)."""
        return _reveal(self.redis_url)

    def resolved_consumer_name(self) -> str:
        return self.consumer_name or default_consumer_name()

    def require_urls(self) -> tuple[str, str]:
        """Both connection URLs, or a clear error naming the missing variable."""
        database, redis = self.database_dsn, self.redis_dsn
        missing = [
            name
            for name, value in (("DATABASE_URL", database), ("REDIS_URL", redis))
            if not value
        ]
        if missing:
            raise RuntimeError(
                f"{' and '.join(missing)} not set; set it, or run `eventflow dev` "
                "to start local PostgreSQL and Redis automatically"
            )
        assert database is not None and redis is not None
        return database, redis


def _reveal(value: SecretStr | str | None) -> str | None:
    # model_copy(update=...) does not validate, so a plain str may be there.
    return value.get_secret_value() if isinstance(value, SecretStr) else value
