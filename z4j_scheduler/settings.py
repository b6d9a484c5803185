"""Settings of the scheduler process, read from ``Z4J_`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///z4j.db"


class SchedulerSettings(BaseSettings):
    """Settings of ``z4j-scheduler serve``; each field is also ``Z4J_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="Z4J_", frozen=True, extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    brain_grpc_target: str = "127.0.0.1:7701"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    # Name checked against the brain's certificate, when it differs from the target host.
    tls_server_name: str | None = None
    secret: SecretStr | None = None

    # Seconds a slot may be late and still fire on time; older slots are missed.
    misfire_grace_seconds: float = Field(default=60.0, ge=0)
    # Longest sleep between two reads of the schedules table, in seconds; an
    # edit, a disable or a new schedule is seen within this time.
    poll_interval: float = Field(default=1.0, gt=0, le=60)
    # Schedules read per tick at most; a larger backlog drains over several ticks.
    batch_size: int = Field(default=5000, ge=1)
    # Fires per frame sent to the brain.
    frame_size: int = Field(default=2000, ge=1)
    instance_id: str | None = None
    # Pid of the brain that spawned this process in embedded mode.
    parent_pid: int | None = None
