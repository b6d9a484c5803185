"""Settings of the scheduler process, read from ``Z4J_`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
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
    misfire_grace_seconds: float = Field(default=60.0, ge=0, allow_inf_nan=False)
    # Maximum sleep between two reads of the schedules table, in seconds,
    # while no change notifications arrive (SQLite, or PostgreSQL while the
    # listen connection is down). An edit, a disable or a new schedule is
    # seen within this time.
    poll_interval: float = Field(default=1.0, gt=0, le=60, allow_inf_nan=False)
    # The same while PostgreSQL notifies the leader of every schedule change
    # (LISTEN), which makes it re-read at once. Polling is then a fallback.
    listen_poll_interval: float = Field(default=30.0, gt=0, le=3600, allow_inf_nan=False)
    # Seconds ahead the leader reads and plans slots, which it then sends
    # from memory (see send_ahead). 0 reads only what is due.
    lookahead: float = Field(default=1.0, ge=0, le=60, allow_inf_nan=False)
    # Seconds before its instant a slot may be sent to the brain, which
    # records it and hands it to the broker at the instant. A slot with more
    # fires than one frame adds this much per further frame. An edit, disable
    # or delete in that last moment applies from the next slot. 0 sends each
    # slot at its instant.
    send_ahead: float = Field(default=0.1, ge=0, le=5, allow_inf_nan=False)
    # Schedules read per tick at most; a larger backlog drains over several ticks.
    batch_size: int = Field(default=5000, ge=1)
    # Fires per frame sent to the brain.
    frame_size: int = Field(default=2000, ge=1)
    # Name of this instance in logs and in the scheduler_leader row; the
    # default is HOST:PID.
    instance_id: str | None = Field(default=None, min_length=1, max_length=200)
    # Pid of the brain that spawned this process in embedded mode.
    parent_pid: int | None = None

    # Seconds between two reconcile passes over every enabled schedule's
    # cursor; 0 turns reconcile off.
    reconcile_interval: float = Field(default=900.0, ge=0, allow_inf_nan=False)
    # Schedules checked per transaction and per frame of corrections.
    reconcile_batch_size: int = Field(default=1000, ge=1, le=100_000)

    # Port of this process's /healthz, /readyz and /metrics; unset turns the
    # HTTP server off, 0 picks a free port.
    scheduler_http_port: int | None = Field(default=None, ge=0, le=65535)
    scheduler_http_host: str = "127.0.0.1"


def describe_settings_error(error: ValidationError, prefix: str = "Z4J_") -> str:
    """Return one clause per invalid setting, naming its variable, its value and the rule.

    For example: ``invalid Z4J_LOOKAHEAD '-1': must be greater than or equal to 0``.
    """
    clauses = []
    for item in error.errors(include_url=False):
        variable = prefix + "_".join(str(part) for part in item["loc"]).upper()
        rule = item["msg"]
        if rule.startswith("Input should be "):
            rule = "must be " + rule.removeprefix("Input should be ")
        clauses.append(f"invalid {variable} {item.get('input')!r}: {rule}")
    return "; ".join(clauses)
