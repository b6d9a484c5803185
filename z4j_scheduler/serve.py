"""``z4j-scheduler serve``: the scheduler process, standalone or as the brain's child."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from datetime import timedelta
from typing import Any

import anyio
from pydantic import ValidationError as SettingsError

from z4j_brain_plugin.models import make_engine, make_session_factory
from z4j_scheduler.brain_client import BrainClient
from z4j_scheduler.errors import BrainUnavailableError, LeadershipError
from z4j_scheduler.leader import SqliteFileGate, gate_for
from z4j_scheduler.parent_guard import install_parent_death_signal, watch_parent
from z4j_scheduler.scheduler import RETRY_INTERVAL, Scheduler
from z4j_scheduler.settings import SchedulerSettings

logger = logging.getLogger("z4j_scheduler")

# Exit status when another instance holds the SQLite lock.
EXIT_NOT_LEADER = 3


class ServeConfigError(ValueError):
    """A required setting of ``serve`` is missing; the message names it."""


def add_command(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the scheduler: lead, plan and fire due slots")
    serve.add_argument("--database-url", help="database shared with the brain (Z4J_DATABASE_URL)")
    serve.add_argument("--brain", dest="brain_grpc_target", help="brain gRPC address HOST:PORT (Z4J_BRAIN_GRPC_TARGET)")
    serve.add_argument("--tls-cert", help="client certificate, PEM (Z4J_TLS_CERT)")
    serve.add_argument("--tls-key", help="client private key, PEM (Z4J_TLS_KEY)")
    serve.add_argument("--tls-ca", help="CA that signed the brain's certificate (Z4J_TLS_CA)")
    serve.add_argument("--tls-server-name", help="name in the brain's certificate, if not the host (Z4J_TLS_SERVER_NAME)")
    serve.add_argument("--grace", dest="misfire_grace_seconds", type=float,
                       help="seconds a slot may be late and still fire on time (Z4J_MISFIRE_GRACE_SECONDS)")
    serve.add_argument("--log-level", default=os.environ.get("Z4J_LOG_LEVEL", "INFO"),
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = ("database_url", "brain_grpc_target", "tls_cert", "tls_key", "tls_ca", "tls_server_name", "misfire_grace_seconds")
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    try:
        settings = SchedulerSettings(**overrides)
        _require(settings)
        return anyio.run(serve, settings)
    except (ServeConfigError, SettingsError) as error:
        print(f"z4j-scheduler: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except LeadershipError as error:
        print(f"z4j-scheduler: {error}", file=sys.stderr)
        return EXIT_NOT_LEADER


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
    stop = anyio.Event()
    client = _client(settings)
    scheduler = Scheduler(
        make_session_factory(engine),
        gate,
        client,
        grace=timedelta(seconds=settings.misfire_grace_seconds),
        poll_interval=settings.poll_interval,
        batch_size=settings.batch_size,
        frame_size=settings.frame_size,
        instance_id=settings.instance_id or f"{socket.gethostname()}:{os.getpid()}",
    )
    logger.info("scheduler %s starting against %s", scheduler.instance_id, settings.brain_grpc_target)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(_stop_on_signal, stop)
            if settings.parent_pid is not None:
                group.start_soon(_stop_when_orphaned, settings.parent_pid, stop)
            await _connect(client, stop)
            await scheduler.run(stop)
            group.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await client.close()
        engine.dispose()
    logger.info("scheduler %s stopped", scheduler.instance_id)
    return 0


def _check_readable(settings: SchedulerSettings) -> None:
    for name in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(settings, name)
        if not os.access(path, os.R_OK):
            raise ServeConfigError(f"invalid {name} {str(path)!r}: the file does not exist or is not readable")


def _client(settings: SchedulerSettings) -> BrainClient:
    assert settings.tls_ca and settings.tls_cert and settings.tls_key and settings.secret
    return BrainClient(
        settings.brain_grpc_target,
        ca_cert=settings.tls_ca,
        cert=settings.tls_cert,
        key=settings.tls_key,
        secret=settings.secret.get_secret_value().encode(),
        server_name=settings.tls_server_name,
    )


async def _connect(client: BrainClient, stop: anyio.Event) -> None:
    while not stop.is_set():
        try:
            await client.connect()
            return
        except BrainUnavailableError as error:
            logger.warning("brain not reachable yet, retrying: %s", error)
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
