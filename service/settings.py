"""The service's settings: one validated model, from arguments and ``FUNCX_FLOWS_*``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from funcx_flows.errors import ConfigError
from funcx_flows.home import home_dir


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FUNCX_FLOWS_", extra="forbid")

    home: Path = Field(default_factory=home_dir)
    # Blank: SQLite (WAL) at <home>/service/service.db.
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # Where endpoints dial in (ZeroMQ ROUTER). Port 0 picks a free one.
    zmq_host: str = "127.0.0.1"
    zmq_port: int = Field(0, ge=0, le=65535)
    # The address endpoints are told to dial; blank: tcp://zmq_host:bound port.
    zmq_public_url: str = ""

    # TLS served by the service itself (one host, no proxy); blank: plain HTTP.
    tls_certfile: str = ""
    tls_keyfile: str = ""
    # Proxies whose X-Forwarded-For/-Proto are believed (comma-separated addresses,
    # or "*"): the service then sees the client's address, not the proxy's.
    forwarded_allow_ips: str = "127.0.0.1"

    max_payload_bytes: int = Field(10 * 1024 * 1024, gt=0)
    max_result_bytes: int = Field(10 * 1024 * 1024, gt=0)
    max_batch_tasks: int = Field(10_000, gt=0)
    heartbeat_period_s: float = Field(2.0, gt=0)
    heartbeat_threshold_s: float = Field(10.0, gt=0)
    # Terminal tasks (and their results) are purged this long after completion.
    result_retention_s: float = Field(7 * 86400, gt=0)
    # Requests per second per user (token bucket, burst = 5 s worth); 0 disables.
    rate_limit_per_s: float = Field(0, ge=0)
    # Non-terminal tasks a user may have at once; 0 disables.
    max_tasks_in_flight: int = Field(0, ge=0)
    # Several replicas of the service on one PostgreSQL (see docs/deploy.md): tasks,
    # results, cancels and endpoint status reach whichever replica needs them.
    cluster: bool = False
    log_level: str = "info"
    # Globus Auth as identity provider (blank: service-issued tokens only).
    globus_client_id: str = ""
    globus_client_secret: str = ""
    globus_required_scope: str = ""
    globus_groups: bool = False  # look up Globus groups, for sharing with groups
    # The web dashboard at /ui and the trigger report route (docs/dashboard.md).
    dashboard: bool = True
    # Signs the dashboard's session cookies (docs/dashboard.md); blank: a key kept in
    # the service's folder. Replicas behind one address must share one.
    ui_session_secret: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSettings:
        if self.heartbeat_threshold_s <= self.heartbeat_period_s:
            raise ValueError("heartbeat_threshold_s must be larger than heartbeat_period_s")
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            raise ValueError("tls_certfile and tls_keyfile go together")
        if self.cluster and not self.db_url.startswith("postgresql"):
            raise ValueError("cluster needs a PostgreSQL database_url (replicas share it; "
                             "SQLite serves one process)")
        for path in (self.tls_certfile, self.tls_keyfile):
            if path and not Path(path).is_file():
                raise ValueError(f"no TLS file at {path}")
        return self

    @property
    def folder(self) -> Path:
        return self.home / "service"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.folder / 'service.db'}"


def load_settings(**overrides: Any) -> ServiceSettings:
    """Settings from the environment with explicit overrides; errors name the key."""
    try:
        return ServiceSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid service settings: {problems}") from None
