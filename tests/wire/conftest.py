"""Fixtures of the fire protocol tests: a loopback PKI, a recording handler, a running server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from tests.wire.support import (
    CLIENT_CN,
    PREVIOUS_SECRET,
    SECRET,
    Pki,
    RawConnection,
    RecordingHandler,
)
from z4j_brain_plugin.grpc_server import RunningServer, start_grpc_server
from z4j_brain_plugin.pki import mint_loopback_pki
from z4j_scheduler.wire import scheduler_pb2_grpc as pb_grpc


@pytest.fixture(scope="package")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="package", autouse=True)
async def shared_event_loop(anyio_backend: str) -> AsyncIterator[None]:
    """Run every test of this package in one event loop.

    grpc.aio delivers some completions after a server or channel was closed,
    to the event loop that created it. When that loop is already closed, grpc
    raises "Event loop is closed" in whichever loop runs next, so the tests
    keep one loop open for as long as they use grpc.
    """
    yield


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    server, client = mint_loopback_pki(tmp_path / "pki", client_cn=CLIENT_CN)
    return Pki(server=server, client=client)


@pytest.fixture
def foreign_pki(tmp_path: Path) -> Pki:
    """A second, unrelated CA with the same CNs."""
    server, client = mint_loopback_pki(tmp_path / "foreign-pki", client_cn=CLIENT_CN)
    return Pki(server=server, client=client)


@pytest.fixture
def handler() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
async def server(pki: Pki, handler: RecordingHandler) -> AsyncIterator[RunningServer]:
    running = await start_grpc_server(
        host="127.0.0.1",
        port=0,
        tls=pki.server,
        allowed_cns={CLIENT_CN},
        secrets=[SECRET, PREVIOUS_SECRET],
        handler=handler,
    )
    try:
        yield running
    finally:
        await running.stop(grace=0)


@pytest.fixture
async def raw(server: RunningServer, pki: Pki) -> AsyncIterator[RawConnection]:
    """A channel to ``server`` with the valid client certificate."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.client.ca_cert.read_bytes(),
        private_key=pki.client.key.read_bytes(),
        certificate_chain=pki.client.cert.read_bytes(),
    )
    channel = grpc.aio.secure_channel(f"127.0.0.1:{server.port}", credentials)
    try:
        yield RawConnection(channel, pb_grpc.SchedulerServiceStub(channel))  # type: ignore[no-untyped-call]
    finally:
        await channel.close()
