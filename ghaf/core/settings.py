"""Installation settings, read from ``GHAF_*`` environment variables and an optional file.

Precedence, highest first: explicit keyword arguments, environment variables, the config
file (``GHAF_CONFIG``, else ``<home>/config.toml`` when it exists), defaults.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_HOME = Path(".ghaf")


class Settings(BaseSettings):
    """Everything an operator can configure. Each field maps to ``GHAF_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="GHAF_", extra="forbid")

    home: Path = Field(default=DEFAULT_HOME, description="Platform home folder.")
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means SQLite at <home>/ghaf.db.",
    )
    database_pool_size: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="PostgreSQL connections each server process keeps open in its pool.",
    )
    database_max_overflow: int = Field(
        default=20,
        ge=0,
        le=1000,
        description="PostgreSQL connections a server process may open beyond the pool "
        "under load (closed again when returned).",
    )
    host: str = Field(default="127.0.0.1", description="Address the server binds.")
    port: int = Field(default=8080, ge=0, le=65535, description="Port the server binds.")
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Server processes sharing the port (each with its own caches; the "
        "database keeps them consistent).",
    )
    tls_cert: Path | None = Field(default=None, description="PEM certificate for HTTPS.")
    tls_key: Path | None = Field(default=None, description="PEM private key for HTTPS.")
    log_format: Literal["text", "json"] = Field(default="text", description="Log format.")
    log_level: str = Field(default="info", description="Log level.")
    access_log: bool = Field(
        default=True,
        description="One log line per request (logger ghaf.access): request id, principal, "
        "method, route, status, duration and bytes; JSON with log_format=json.",
    )
    region: str = Field(
        default="local", description="Region this installation runs in, e.g. ae-abudhabi."
    )
    master_key: SecretStr | None = Field(
        default=None,
        description="Base64 master key that seals the keyring in the database; else "
        "master_key_file, else <home>/master.key is used.",
    )
    master_key_file: Path | None = Field(
        default=None,
        description="File (mode 0600) holding the base64 master key, e.g. a mounted secret "
        "shared by every replica; unset means <home>/master.key.",
    )
    kms_url: str = Field(
        default="",
        description="aws-kms://<key-id, alias/name or ARN>: an AWS KMS (or compatible) key "
        "seals the keyring instead of a local master key.",
    )
    kms_endpoint_url: str | None = Field(
        default=None, description="KMS API endpoint (a compatible service); unset means AWS."
    )
    kms_region: str | None = Field(default=None, description="KMS API region name.")
    kms_access_key_id: str | None = Field(default=None, description="KMS access key id.")
    kms_secret_access_key: SecretStr | None = Field(default=None, description="KMS secret key.")
    audit_checkpoint_every: int = Field(
        default=100, ge=1, description="Rows between signed audit checkpoints."
    )
    audit_witness_url: str = Field(
        default="",
        description="file:///path or s3://bucket/prefix for the audit witness (append-only "
        "checkpoint copies); empty means the artifact store.",
    )
    audit_witness_retention_days: float = Field(
        default=365,
        gt=0,
        description="S3 Object Lock (COMPLIANCE) retention of each witnessed checkpoint.",
    )
    audit_witness_interval_s: float = Field(
        default=300,
        gt=0,
        description="Seconds between time-based audit checkpoints (when the trail moved).",
    )
    audit_webhook_url: str | None = Field(
        default=None, description="URL each audit checkpoint is also POSTed to, as JSON."
    )
    audit_syslog_address: str | None = Field(
        default=None,
        description="host:port (UDP) or unix socket path each audit checkpoint is sent to.",
    )
    project_retention_days: float = Field(
        default=30, ge=0, description="Days a deleted project is kept before purge."
    )
    storage_url: str = Field(
        default="", description="file:///path or s3://bucket/prefix; empty means <home>/artifacts."
    )
    storage_region: str = Field(
        default="", description="Region the artifact store keeps data in; empty means region."
    )
    storage_chunk_bytes: int = Field(
        default=1 << 20, ge=4096, le=64 << 20, description="Plaintext bytes per encrypted chunk."
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint (MinIO, Ceph RGW); unset means AWS."
    )
    s3_region: str | None = Field(default=None, description="S3 API region name.")
    s3_access_key_id: str | None = Field(default=None, description="S3 access key id.")
    s3_secret_access_key: SecretStr | None = Field(default=None, description="S3 secret key.")
    model_check_timeout_s: float = Field(
        default=120,
        gt=0,
        description="Wall-clock limit for loading and predicting a model in the checker "
        "child process (registration, latency gates, evaluation gates).",
    )
    run_heartbeat_timeout_s: float = Field(
        default=120,
        ge=1,
        description="A running run not heard from for this long is marked failed.",
    )
    login_token_hours: float = Field(
        default=12, gt=0, description="Lifetime of tokens issued by password login."
    )
    login_rate_per_address: str = Field(
        default="20/minute",
        description="Password logins allowed per client address (moving window), e.g. "
        "'20/minute' or '100/hour'; more are answered 429 before any password is checked.",
    )
    login_rate_per_name: str = Field(
        default="10/minute",
        description="Password logins allowed per user name (moving window), whatever "
        "address they come from.",
    )
    login_lockout_failures: int = Field(
        default=10,
        ge=1,
        description="Failed logins within login_lockout_window_s that lock the account.",
    )
    login_lockout_window_s: float = Field(
        default=900, gt=0, description="Window in which failed logins are counted."
    )
    login_lockout_s: float = Field(
        default=900,
        gt=0,
        description="How long a locked account refuses logins (a platform admin can "
        "unlock it earlier: `ghaf users unlock NAME`).",
    )
    rate_limit_storage_url: str = Field(
        default="memory://",
        description="Where rate-limit counters live: memory:// (per server process) or a "
        "redis:// URI shared by every server.",
    )
    max_body_bytes: int = Field(
        default=256 << 20,
        ge=1024,
        description="Largest request body (JSON, Arrow) a route accepts; larger ones are "
        "answered 413 while being read. Fits a 1,000,000-file dataset manifest.",
    )
    max_upload_bytes: int = Field(
        default=64 << 30,
        ge=1024,
        description="Largest streamed upload (artifacts, blobs, blob packs).",
    )
    # Slow clients (ghaf/server/serve.py, ghaf/server/guards.py): a client that sends
    # its request a byte at a time must not hold a connection for ever.
    keep_alive_timeout_s: float = Field(
        default=5,
        gt=0,
        description="How long an idle keep-alive connection stays open between requests.",
    )
    header_timeout_s: float = Field(
        default=10,
        gt=0,
        description="A request's line and headers must arrive within this many seconds of "
        "the connection opening (or the previous response ending); else it is closed.",
    )
    max_header_bytes: int = Field(
        default=64 << 10,
        ge=4096,
        description="Largest request line plus headers; larger ones are answered 431.",
    )
    body_timeout_s: float = Field(
        default=60,
        gt=0,
        description="Seconds the server waits for a request body, plus one second per "
        "body_min_rate bytes received; a slower body is answered 408 and its connection "
        "closed. Only time spent waiting on the client counts.",
    )
    body_min_rate: int = Field(
        default=1024,
        ge=1,
        description="Bytes per second of body that extend body_timeout_s (large uploads "
        "on a working link are never cut off).",
    )
    # Deployments on the embedded host (docs/deployments.md).
    deployment_max_replicas: int = Field(
        default=16,
        ge=1,
        le=4096,
        description="Most replica processes one server runs for all deployments; a request "
        "that would start one more is answered 503.",
    )
    deployment_max_project_replicas: int = Field(
        default=8,
        ge=1,
        le=4096,
        description="Most replica processes one server runs for one project's deployments.",
    )
    deployment_max_body_bytes: int = Field(
        default=32 << 20,
        ge=1024,
        description="Largest request body the gateway forwards to a replica (413 beyond); "
        "each replica is started with the same limit.",
    )
    deployment_request_timeout_s: float = Field(
        default=60,
        gt=0,
        description="Longest the gateway waits for a replica's answer (504 beyond).",
    )
    deployment_start_timeout_s: float = Field(
        default=60,
        gt=0,
        description="Longest a replica may take to start and answer ready.",
    )
    deployment_traffic_flush_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="How often each server writes what it counted of each variant's "
        "answers (the evidence canary rollouts are judged on).",
    )
    deployment_rollout_interval_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="How often running canary rollouts are judged and moved on.",
    )
    deployment_shadow_queue: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Most request copies waiting for shadow variants; more are dropped "
        "and counted.",
    )
    deployment_shadow_queue_bytes: int = Field(
        default=64 << 20,
        ge=1024,
        description="Most bytes of request copies waiting for shadow variants.",
    )
    ray_address: str | None = Field(
        default=None,
        description="The Ray that host ray deployments run on: auto (one already running on "
        "this machine, whose Serve proxy the gateway reaches on 127.0.0.1); unset: a local "
        "Ray started by the server when one is first needed.",
    )
    ray_http_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="The port of Ray Serve's HTTP proxy on 127.0.0.1 (0: a free one).",
    )
    deployment_shadow_log_rotate_s: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description="Longest a shadow log file stays open before it is stored (it is "
        "stored sooner once it holds 5,000 rows or 16 MiB).",
    )
    # ``ghaf serve`` (docs/serving.md); its command-line options override these.
    serve_tls_cert: Path | None = Field(
        default=None, description="PEM certificate with which ghaf serve answers HTTPS."
    )
    serve_tls_key: Path | None = Field(
        default=None, description="PEM private key of serve_tls_cert."
    )
    serve_invoke_key: SecretStr | None = Field(
        default=None,
        description="A per-server invoke key: ghaf serve accepts 'Authorization: Bearer "
        "<key>' without asking the platform (at least 32 characters).",
    )
    serve_invoke_key_file: Path | None = Field(
        default=None, description="File (mode 0600) holding ghaf serve's invoke key."
    )
    serve_prediction_log: bool = Field(
        default=True,
        description="ghaf serve writes every answered request to the prediction log "
        "(Parquet artifacts of the model's project).",
    )
    serve_prediction_log_queue: int = Field(
        default=10_000,
        ge=1,
        description="Records the prediction log buffers; more are dropped and counted, "
        "never waited for.",
    )
    serve_prediction_log_rotate_bytes: int = Field(
        default=32 << 20,
        ge=4096,
        description="A prediction log file is stored once it holds this many bytes.",
    )
    serve_prediction_log_rotate_s: float = Field(
        default=300,
        gt=0,
        description="A prediction log file is stored at the latest this many seconds "
        "after its first record.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @field_validator("region", "storage_region")
    @classmethod
    def _region_is_a_slug(cls, value: str) -> str:
        from ghaf.core.names import validate_name

        return validate_name(value, field="region") if value else value

    @field_validator("login_rate_per_address", "login_rate_per_name")
    @classmethod
    def _rate_parses(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a rate: write e.g. '20/minute' or '100 per hour'"
            ) from None
        return value

    @model_validator(mode="after")
    def _tls_needs_both(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        if (self.serve_tls_cert is None) != (self.serve_tls_key is None):
            raise ValueError("serve_tls_cert and serve_tls_key must be set together")
        return self

    @cached_property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the home folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'ghaf.db').resolve()}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{self.artifacts_dir.resolve()}"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def keyring_path(self) -> Path:
        return self.home / "keyring.json"

    @property
    def master_key_path(self) -> Path:
        return self.master_key_file or self.home / "master.key"


def _config_file() -> Path | None:
    explicit = os.environ.get("GHAF_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"GHAF_CONFIG points to {path}, which is not a file")
        return path
    home = Path(os.environ.get("GHAF_HOME", str(DEFAULT_HOME)))
    candidate = home / "config.toml"
    return candidate if candidate.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment and config file, with explicit overrides."""
    return Settings(**overrides)
