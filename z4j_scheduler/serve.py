"""``z4j-scheduler serve``: the scheduler process, standalone or as the brain's child."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
from pydantic import ValidationError as SettingsError
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from z4j_brain_plugin.models import make_engine, make_session_factory
from z4j_scheduler.brain_client import BrainClient
from z4j_scheduler.errors import BrainUnavailableError, FrameError, LeadershipError
from z4j_scheduler.health import HealthApp, HealthServer, HttpBindError, LeaderView, bind_socket
from z4j_scheduler.leader import LeaderGate, SessionLockError, SqliteFileGate, gate_for
from z4j_scheduler.parent_guard import install_parent_death_signal, watch_parent
from z4j_scheduler.scheduler import REPEAT_LOG_EVERY, RETRY_INTERVAL, Scheduler
from z4j_scheduler.settings import SchedulerSettings, describe_settings_error

if TYPE_CHECKING:
    from z4j_scheduler.changes import ChangeListener

logger = logging.getLogger("z4j_scheduler")

# Exit status for an invalid setting, or a database URL the leader lock cannot use.
EXIT_CONFIG = 2
# Exit status when another instance holds the SQLite lock.
EXIT_NOT_LEADER = 3

_OVERRIDES = (
    "database_url",
    "brain_grpc_target",
    "tls_cert",
    "tls_key",
    "tls_ca",
    "tls_server_name",
    "misfire_grace_seconds",
    "instance_id",
    "scheduler_http_host",
    "scheduler_http_port",
    "reconcile_interval",
)


class ServeConfigError(ValueError):
    """A required setting of ``serve`` is missing; the message names it."""


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides = {
        name: getattr(args, name) for name in _OVERRIDES if getattr(args, name) is not None
    }
    try:
        settings = SchedulerSettings(**overrides)
    except SettingsError as error:
        return _fail(ServeConfigError(describe_settings_error(error)), EXIT_CONFIG)
    try:
        _require(settings)
        return anyio.run(serve, settings)
    except (ServeConfigError, HttpBindError, SessionLockError, FrameError) as error:
        return _fail(error, EXIT_CONFIG)
    except LeadershipError as error:
        return _fail(error, EXIT_NOT_LEADER)


def _fail(error: Exception, status: int) -> int:
    logger.error("scheduler stopped: %s", " ".join(str(error).split()))
    print(f"z4j-scheduler: {' '.join(str(error).split())}", file=sys.stderr)
    return status


def _require(settings: SchedulerSettings) -> None:
    for name in ("tls_cert", "tls_key", "tls_ca", "secret"):
        if getattr(settings, name) is None:
            flag = f" or --{name.replace('_', '-')}" if name != "secret" else ""
            raise ServeConfigError(f"missing {name}: set Z4J_{name.upper()}{flag}")


async def serve(settings: SchedulerSettings) -> int:
    """Run until SIGTERM, SIGINT or the parent's death; return the exit status."""
    if settings.parent_pid is not None:
        install_parent_death_signal(signal.SIGTERM)
    engine = make_engine(settings.database_url)
    gate = gate_for(engine)
    if isinstance(gate, SqliteFileGate):
        # Fail at once, before connecting, when another instance runs.
        gate.try_acquire()
    _check_readable(settings)
    client = _client(settings)
    scheduler = _scheduler(settings, engine, gate, client)
    listener = None
    if engine.dialect.name == "postgresql":
        # Imported here: psycopg comes with the postgres extra only.
        from z4j_scheduler.changes import ChangeListener

        listener = ChangeListener(engine, scheduler.notify_change)
        scheduler.listening = lambda: listener.listening
    health = _health_server(settings, scheduler, engine)
    logger.info(
        "scheduler %s starting against %s", scheduler.instance_id, settings.brain_grpc_target
    )
    try:
        await _run(settings, scheduler, client, health, listener)
    finally:
        with anyio.CancelScope(shield=True):
            await client.close()
        engine.dispose()
    logger.info("scheduler %s stopped", scheduler.instance_id)
    return 0


async def _run(
    settings: SchedulerSettings,
    scheduler: Scheduler,
    client: BrainClient,
    health: HealthServer | None,
    listener: ChangeListener | None,
) -> None:
    stop = anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(_stop_on_signal, stop)
        if listener is not None:
            group.start_soon(listener.run)
        if settings.parent_pid is not None:
            group.start_soon(_stop_when_orphaned, settings.parent_pid, stop)
        if health is not None:
            group.start_soon(health.serve)
        await anyio.to_thread.run_sync(_warm_pool, scheduler)
        await _connect(client, stop)
        if not stop.is_set():
            scheduler.brain_ok = True
        await scheduler.run(stop)
        if health is not None:
            health.stop()
        group.cancel_scope.cancel()


def _scheduler(
    settings: SchedulerSettings, engine: Engine, gate: LeaderGate, client: BrainClient
) -> Scheduler:
    return Scheduler(
        make_session_factory(engine),
        gate,
        client,
        grace=timedelta(seconds=settings.misfire_grace_seconds),
        poll_interval=settings.poll_interval,
        listen_poll_interval=settings.listen_poll_interval,
        lookahead=settings.lookahead,
        send_ahead=settings.send_ahead,
        batch_size=settings.batch_size,
        frame_size=settings.frame_size,
        instance_id=settings.instance_id or f"{socket.gethostname()}:{os.getpid()}",
        reconcile_interval=settings.reconcile_interval,
        reconcile_batch_size=settings.reconcile_batch_size,
    )


def _health_server(
    settings: SchedulerSettings, scheduler: Scheduler, engine: Engine
) -> HealthServer | None:
    if settings.scheduler_http_port is None:
        return None
    sock = bind_socket(settings.scheduler_http_host, settings.scheduler_http_port)
    target = settings.brain_grpc_target

    def view() -> LeaderView:
        return LeaderView(
            scheduler.instance_id, scheduler.epoch, target, scheduler.brain_ok is True
        )

    app = HealthApp(view, make_session_factory(engine)).app()
    return HealthServer(app, sock)


def _warm_pool(scheduler: Scheduler) -> None:
    # A follower opens a pooled database connection at start, so taking over
    # does not wait for a new connection; the gate has its own.
    try:
        with scheduler.sessions() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        logger.warning("database not reachable at start, the scheduler retries: %s", error)


def _check_readable(settings: SchedulerSettings) -> None:
    for name in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(settings, name)
        if not os.access(path, os.R_OK):
            raise ServeConfigError(
                f"invalid {name} {str(path)!r}: the file does not exist or is not readable"
            )


def _client(settings: SchedulerSettings) -> BrainClient:
    assert settings.tls_ca is not None
    assert settings.tls_cert is not None
    assert settings.tls_key is not None
    assert settings.secret is not None
    return BrainClient(
        settings.brain_grpc_target,
        ca_cert=settings.tls_ca,
        cert=settings.tls_cert,
        key=settings.tls_key,
        secret=settings.secret.get_secret_value().encode(),
        server_name=settings.tls_server_name,
    )


async def _connect(client: BrainClient, stop: anyio.Event) -> None:
    attempts = 0
    while not stop.is_set():
        try:
            await client.connect()
            return
        except BrainUnavailableError as error:
            attempts += 1
            if attempts == 1 or attempts % REPEAT_LOG_EVERY == 0:
                logger.warning(
                    "brain not reachable yet (%d attempts), retrying every %.0f s: %s",
                    attempts,
                    RETRY_INTERVAL,
                    error,
                )
            with anyio.move_on_after(RETRY_INTERVAL):
                await stop.wait()


async def _stop_on_signal(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for received in signals:
            logger.info("received %s: finishing the fires in flight", signal.Signals(received).name)
            stop.set()
            return


async def _stop_when_orphaned(parent_pid: int, stop: anyio.Event) -> None:
    await watch_parent(parent_pid)
    logger.warning("parent process %d is gone: stopping", parent_pid)
    stop.set()
