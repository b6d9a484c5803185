"""Settings of the brain process, read from ``Z4J_`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///z4j.db"


class BrainSettings(BaseSettings):
    """Settings of ``z4j-brain``; each field is also the variable ``Z4J_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="Z4J_", frozen=True, extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=7700, ge=0, le=65535)

    embedded_scheduler: bool = False
    scheduler_grpc_enabled: bool = False
    scheduler_grpc_host: str = "127.0.0.1"
    # 0 picks a free port, which suits embedded mode on loopback.
    scheduler_grpc_port: int = Field(default=7701, ge=0, le=65535)
    scheduler_grpc_allowed_cns: Annotated[tuple[str, ...], NoDecode] = ("z4j-scheduler",)
    # Certificates for standalone schedulers; embedded mode mints its own.
    scheduler_grpc_tls_cert: Path | None = None
    scheduler_grpc_tls_key: Path | None = None
    scheduler_grpc_tls_ca: Path | None = None
    pki_dir: Path = Path(".z4j/pki")

    # Signs fire frames and the audit chain. When unset, a SQLite brain
    # creates one in ``secret_file`` (default: beside the database file, so
    # every command run against that database finds it) and reuses it.
    secret: SecretStr | None = None
    previous_secrets: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    secret_file: Path | None = None

    # The ``default`` broker connection of each engine.
    celery_broker_url: str | None = None
    rq_redis_url: str | None = None
    dramatiq_broker_url: str | None = None
    huey_url: str | None = None
    arq_redis_url: str | None = None
    taskiq_broker_url: str | None = None
    # Further named connections, as JSON: {"dramatiq": {"rabbit": "amqp://..."}}.
    # A schedule picks one by name in its ``connection`` field.
    connections: dict[str, dict[str, str]] = Field(default_factory=dict)

    # Seconds a slot may be late and still fire on time; older slots are missed.
    misfire_grace_seconds: float = Field(default=60.0, ge=0)

    supervisor_max_crashes: int = Field(default=5, ge=1)
    supervisor_crash_window: float = Field(default=60.0, gt=0)
    supervisor_stop_grace: float = Field(default=10.0, ge=0)

    # Outbox retry backoff for fires a broker did not take, in seconds.
    dispatch_retry_initial: float = Field(default=1.0, gt=0)
    dispatch_retry_max: float = Field(default=60.0, gt=0)

    @field_validator("scheduler_grpc_allowed_cns", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("previous_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("connections")
    @classmethod
    def _check_connections(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for engine, named in value.items():
            if engine not in ENGINE_URL_SETTINGS:
                raise ValueError(
                    f"unknown engine {engine!r} in Z4J_CONNECTIONS; "
                    f"use one of {', '.join(ENGINE_URL_SETTINGS)}"
                )
            if "default" in named:
                raise ValueError(
                    f"Z4J_CONNECTIONS must not name {engine}'s 'default' connection; "
                    f"set Z4J_{ENGINE_URL_SETTINGS[engine].upper()} instead"
                )
        return value

    def broker_urls(self) -> dict[tuple[str, str], str]:
        """Return the URL of every configured connection, keyed by (engine, connection name)."""
        urls: dict[tuple[str, str], str] = {}
        for engine, setting in ENGINE_URL_SETTINGS.items():
            default = getattr(self, setting)
            if default:
                urls[(engine, "default")] = default
            for name, url in self.connections.get(engine, {}).items():
                urls[(engine, name)] = url
        return urls


# The setting that contains each engine's default connection URL.
ENGINE_URL_SETTINGS = {
    "celery": "celery_broker_url",
    "rq": "rq_redis_url",
    "dramatiq": "dramatiq_broker_url",
    "huey": "huey_url",
    "arq": "arq_redis_url",
    "taskiq": "taskiq_broker_url",
}


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value
