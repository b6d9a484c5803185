"""The brain's lifespan hook, an async context manager any ASGI application can enter.

It opens and migrates the database, starts the fire outbox and, when enabled,
the mutually authenticated gRPC server and the supervised scheduler child. In
a Starlette or FastAPI application::

    from contextlib import asynccontextmanager
    from z4j_brain_plugin.lifespan import brain_lifespan

    @asynccontextmanager
    async def lifespan(app):
        async with brain_lifespan() as brain:
            app.state.brain = brain
            yield

Leaving the context stops the child first (it finishes the fires in flight
over gRPC), then the gRPC server, then the outbox.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio

from z4j_brain_plugin.brain import Brain
from z4j_brain_plugin.dispatchers import create_dispatcher
from z4j_brain_plugin.dispatchers.base import Dispatcher
from z4j_brain_plugin.errors import ConfigurationError
from z4j_brain_plugin.fires import FireRecorder
from z4j_brain_plugin.grpc_server import RunningServer, start_grpc_server
from z4j_brain_plugin.keys import signing_secrets
from z4j_brain_plugin.migrate import upgrade
from z4j_brain_plugin.models import make_engine, make_session_factory
from z4j_brain_plugin.outbox import Outbox, RetryPolicy
from z4j_brain_plugin.pki import TlsFiles, mint_loopback_pki
from z4j_brain_plugin.schedules import ScheduleService
from z4j_brain_plugin.settings import BrainSettings
from z4j_brain_plugin.supervisor import ChildSupervisor, SupervisorPolicy

logger = logging.getLogger(__name__)


@asynccontextmanager
async def brain_lifespan(settings: BrainSettings | None = None) -> AsyncIterator[Brain]:
    """Run the brain's background parts for the lifetime of the ``async with`` block."""
    settings = settings or BrainSettings()
    _check(settings)
    brain = open_brain(settings)
    try:
        async with anyio.create_task_group() as group, AsyncExitStack() as stack:
            await group.start(brain.outbox.run)
            if settings.scheduler_grpc_enabled:
                server, client_tls = await _start_grpc(brain)
                stack.push_async_callback(server.stop, 5.0)
                brain.components["grpc"] = server
                if settings.embedded_scheduler:
                    supervisor = _supervisor(brain, server, client_tls)
                    await group.start(supervisor.run)
                    stack.push_async_callback(supervisor.stop)
                    brain.components["scheduler"] = supervisor
            logger.info("brain started: %r", brain)
            try:
                yield brain
            finally:
                await stack.aclose()
                group.cancel_scope.cancel()
    finally:
        _close_dispatchers(brain)
        brain.engine.dispose()
        logger.info("brain stopped")


def open_brain(settings: BrainSettings) -> Brain:
    """Open and migrate the database and build the parts that need no event loop."""
    engine = make_engine(settings.database_url)
    upgrade(engine)
    writes = make_session_factory(engine, write=True)
    dispatchers = _dispatchers(settings)
    retry = RetryPolicy(settings.dispatch_retry_initial, settings.dispatch_retry_max)
    outbox = Outbox(writes, dispatchers, retry)
    service = ScheduleService(frozenset(dispatchers), signing_secrets(settings)[0])
    brain = Brain(settings, engine, make_session_factory(engine), writes, service, outbox)
    brain.components["dispatchers"] = dispatchers
    return brain


def _check(settings: BrainSettings) -> None:
    if settings.embedded_scheduler and not settings.scheduler_grpc_enabled:
        raise ConfigurationError(
            "Z4J_EMBEDDED_SCHEDULER=true needs Z4J_SCHEDULER_GRPC_ENABLED=true: "
            "the scheduler child fires over gRPC"
        )


def _dispatchers(settings: BrainSettings) -> dict[tuple[str, str], Dispatcher]:
    return {key: create_dispatcher(key[0], url) for key, url in settings.broker_urls().items()}


def _close_dispatchers(brain: Brain) -> None:
    for dispatcher in brain.components.get("dispatchers", {}).values():
        dispatcher.close()


async def _start_grpc(brain: Brain) -> tuple[RunningServer, TlsFiles | None]:
    settings = brain.settings
    server_tls, client_tls = _tls_files(settings)
    recorder = FireRecorder(brain.writes, on_recorded=brain.outbox.wake)
    host = "127.0.0.1" if settings.embedded_scheduler else settings.scheduler_grpc_host
    server = await start_grpc_server(
        host=host,
        port=settings.scheduler_grpc_port,
        tls=server_tls,
        allowed_cns=settings.scheduler_grpc_allowed_cns,
        secrets=signing_secrets(settings),
        handler=recorder,
    )
    logger.info("gRPC SchedulerService listening on %s:%d (mutual TLS)", host, server.port)
    return server, client_tls


def _tls_files(settings: BrainSettings) -> tuple[TlsFiles, TlsFiles | None]:
    if settings.embedded_scheduler:
        return mint_loopback_pki(settings.pki_dir.resolve())
    paths = (
        settings.scheduler_grpc_tls_ca,
        settings.scheduler_grpc_tls_cert,
        settings.scheduler_grpc_tls_key,
    )
    if any(path is None for path in paths):
        raise ConfigurationError(
            "Z4J_SCHEDULER_GRPC_ENABLED=true without the embedded scheduler needs "
            "Z4J_SCHEDULER_GRPC_TLS_CA, Z4J_SCHEDULER_GRPC_TLS_CERT and Z4J_SCHEDULER_GRPC_TLS_KEY "
            "(`z4j-brain pki mint` creates them)"
        )
    ca, cert, key = (Path(str(path)) for path in paths)
    return TlsFiles(ca_cert=ca, cert=cert, key=key), None


def _supervisor(
    brain: Brain, server: RunningServer, client_tls: TlsFiles | None
) -> ChildSupervisor:
    settings = brain.settings
    assert client_tls is not None
    env = {
        **os.environ,
        "Z4J_DATABASE_URL": settings.database_url,
        "Z4J_BRAIN_GRPC_TARGET": f"127.0.0.1:{server.port}",
        "Z4J_TLS_CA": str(client_tls.ca_cert),
        "Z4J_TLS_CERT": str(client_tls.cert),
        "Z4J_TLS_KEY": str(client_tls.key),
        "Z4J_SECRET": signing_secrets(settings)[0].decode(),
        "Z4J_MISFIRE_GRACE_SECONDS": str(settings.misfire_grace_seconds),
        "Z4J_PARENT_PID": str(os.getpid()),
    }
    policy = SupervisorPolicy(
        max_crashes=settings.supervisor_max_crashes,
        crash_window=settings.supervisor_crash_window,
        stop_grace=settings.supervisor_stop_grace,
    )
    return ChildSupervisor([sys.executable, "-m", "z4j_scheduler", "serve"], env=env, policy=policy)
