"""Signed frames through a real mTLS gRPC server and client on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.wire.support import CLIENT_CN, SECRET, Pki, RecordingHandler, make_client
from z4j_brain_plugin.errors import ConfigurationError, PkiError
from z4j_brain_plugin.grpc_server import RunningServer, start_grpc_server
from z4j_scheduler.brain_client import BrainClient
from z4j_scheduler.errors import BrainUnavailableError, FrameError
from z4j_scheduler.wire import codec
from z4j_scheduler.wire.messages import (
    AdvanceResult,
    CursorAdvance,
    FireBatchResult,
    FireOutcome,
    FireRequest,
    FireResult,
    Trigger,
    manual_fire_id,
    slot_fire_id,
)

pytestmark = pytest.mark.anyio

START = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def make_fires(count: int, schedule_id: int = 1) -> list[FireRequest]:
    slots = [START + timedelta(minutes=index) for index in range(count)]
    return [
        FireRequest(
            fire_id=slot_fire_id(schedule_id, slot),
            schedule_id=schedule_id,
            scheduled_for=slot,
            trigger=Trigger.CATCH_UP,
            revision=2,
            next_cursor=slot + timedelta(minutes=1),
        )
        for slot in slots
    ]


class DetailedHandler:
    """Returns results with every optional field set, so the reply exercises the whole codec."""

    async def __call__(
        self, epoch: int, fires: Sequence[FireRequest], advances: Sequence[CursorAdvance]
    ) -> FireBatchResult:
        return FireBatchResult(
            fires=tuple(
                FireResult(
                    fire.fire_id,
                    FireOutcome.STALE_REVISION,
                    "",
                    live_revision=fire.revision + 1,
                    live_next_run_at=fire.scheduled_for + timedelta(hours=1),
                )
                for fire in fires
            ),
            advances=tuple(
                AdvanceResult(advance.schedule_id, False, advance.revision + 1, None)
                for advance in advances
            ),
            stale_epoch=True,
            current_epoch=epoch + 10,
        )


class FailingHandler:
    async def __call__(
        self, epoch: int, fires: Sequence[FireRequest], advances: Sequence[CursorAdvance]
    ) -> FireBatchResult:
        raise RuntimeError("database is down")


async def test_fire_round_trip(server: RunningServer, pki: Pki, handler: RecordingHandler) -> None:
    eastern = timezone(timedelta(hours=-4))
    fires = [
        *make_fires(2),
        FireRequest(
            fire_id=manual_fire_id(9, START, "n1"),
            schedule_id=9,
            scheduled_for=START.astimezone(eastern),
            trigger=Trigger.MANUAL,
            revision=0,
            next_cursor=None,
        ),
    ]
    advances = [CursorAdvance(schedule_id=4, revision=8, next_cursor=None, skipped=3)]

    async with make_client(server.port, pki.client) as client:
        result = await client.fire(17, fires, advances)

    assert handler.calls == [(17, fires, advances)]
    assert result == handler.results[0]


async def test_reply_optional_fields_round_trip(pki: Pki) -> None:
    detailed = DetailedHandler()
    running = await start_grpc_server(
        host="127.0.0.1",
        port=0,
        tls=pki.server,
        allowed_cns=[CLIENT_CN],
        secrets=[SECRET],
        handler=detailed,
    )
    fires = make_fires(3)
    advances = [CursorAdvance(5, 1, START, 0)]
    try:
        async with make_client(running.port, pki.client) as client:
            result = await client.fire(3, fires, advances)
    finally:
        await running.stop(grace=0)

    assert result == await detailed(3, fires, advances)


async def test_ten_thousand_fires_in_one_frame(
    server: RunningServer, pki: Pki, handler: RecordingHandler
) -> None:
    fires = make_fires(10_000)

    async with make_client(server.port, pki.client) as client:
        result = await client.fire(1, fires)

    assert len(handler.calls) == 1
    assert handler.calls[0][1] == fires
    assert result == handler.results[0]
    assert len(result.fires) == 10_000


async def test_consecutive_fires_accepted(
    server: RunningServer, pki: Pki, handler: RecordingHandler
) -> None:
    async with make_client(server.port, pki.client) as client:
        for epoch in range(1, 4):
            await client.fire(epoch, make_fires(1, schedule_id=epoch))

    assert [call[0] for call in handler.calls] == [1, 2, 3]


async def test_concurrent_fires_accepted(
    server: RunningServer, pki: Pki, handler: RecordingHandler
) -> None:
    async with make_client(server.port, pki.client) as client:
        results = await asyncio.gather(
            *(client.fire(1, make_fires(2, schedule_id=index)) for index in range(1, 9))
        )

    assert len(handler.calls) == 8
    assert all(len(result.fires) == 2 for result in results)


async def test_empty_frame_accepted(
    server: RunningServer, pki: Pki, handler: RecordingHandler
) -> None:
    async with make_client(server.port, pki.client) as client:
        result = await client.fire(5, [])

    assert handler.calls == [(5, [], [])]
    assert result.current_epoch == 5


async def test_ipv6_loopback(pki: Pki, handler: RecordingHandler) -> None:
    running = await start_grpc_server(
        host="::1",
        port=0,
        tls=pki.server,
        allowed_cns=[CLIENT_CN],
        secrets=[SECRET],
        handler=handler,
    )
    client = BrainClient(
        f"[::1]:{running.port}",
        ca_cert=pki.client.ca_cert,
        cert=pki.client.cert,
        key=pki.client.key,
        secret=SECRET,
    )
    try:
        async with client:
            await client.fire(1, make_fires(1))
    finally:
        await running.stop(grace=0)

    assert len(handler.calls) == 1


async def test_server_name_override_accepted(
    server: RunningServer, pki: Pki, handler: RecordingHandler
) -> None:
    client = BrainClient(
        f"127.0.0.1:{server.port}",
        ca_cert=pki.client.ca_cert,
        cert=pki.client.cert,
        key=pki.client.key,
        secret=SECRET,
        server_name="localhost",
    )

    async with client:
        await client.fire(1, make_fires(1))

    assert len(handler.calls) == 1


async def test_server_name_not_in_certificate_rejected(
    server: RunningServer, pki: Pki, handler: RecordingHandler
) -> None:
    client = BrainClient(
        f"127.0.0.1:{server.port}",
        ca_cert=pki.client.ca_cert,
        cert=pki.client.cert,
        key=pki.client.key,
        secret=SECRET,
        server_name="brain.example.com",
    )

    with pytest.raises(BrainUnavailableError, match="UNAVAILABLE"):
        await client.connect()

    assert repr(client).endswith("closed)")
    assert handler.calls == []


async def test_handler_error_is_brain_unavailable(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    running = await start_grpc_server(
        host="127.0.0.1",
        port=0,
        tls=pki.server,
        allowed_cns=[CLIENT_CN],
        secrets=[SECRET],
        handler=FailingHandler(),
    )
    try:
        async with make_client(running.port, pki.client) as client:
            with pytest.raises(BrainUnavailableError, match="INTERNAL") as raised:
                await client.fire(1, make_fires(1))
    finally:
        await running.stop(grace=0)

    assert "database is down" not in str(raised.value)
    assert "fire handler failed" in caplog.text
    assert "database is down" in caplog.text


async def test_invalid_fire_rejected_before_handler(
    server: RunningServer, pki: Pki, handler: RecordingHandler
) -> None:
    fire = make_fires(1)[0]
    bad = FireRequest("not-a-uuid", 1, fire.scheduled_for, fire.trigger, 1, None)

    async with make_client(server.port, pki.client) as client:
        with pytest.raises(FrameError, match=r"INVALID_ARGUMENT.*fires\[0\].fire_id 'not-a-uuid'"):
            await client.fire(1, [bad])

    assert handler.calls == []


async def test_connect_to_closed_port_raises(pki: Pki) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client(port, pki.client, timeout=5)

    with pytest.raises(BrainUnavailableError, match=f"brain at 127.0.0.1:{port}"):
        await client.connect()


async def test_fire_before_connect_raises(pki: Pki) -> None:
    client = make_client(1, pki.client)

    with pytest.raises(RuntimeError, match="not connected; call connect"):
        await client.fire(1, make_fires(1))


async def test_oversized_frame_rejected_before_send(
    server: RunningServer,
    pki: Pki,
    handler: RecordingHandler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with make_client(server.port, pki.client) as client:
        monkeypatch.setattr(codec, "MAX_MESSAGE_BYTES", 1000)
        with pytest.raises(ValueError, match=r"frame of 50 fires and 0 advances is .* bytes"):
            await client.fire(1, make_fires(50))

    assert handler.calls == []


async def test_close_twice_and_reconnect(
    server: RunningServer, pki: Pki, handler: RecordingHandler
) -> None:
    client = make_client(server.port, pki.client)
    await client.connect()
    await client.close()
    await client.close()

    await client.connect()
    try:
        await client.fire(1, make_fires(1))
    finally:
        await client.close()

    assert len(handler.calls) == 1


async def test_repr_shows_state_without_secret(server: RunningServer, pki: Pki) -> None:
    client = make_client(server.port, pki.client)
    assert repr(client).endswith("sequence=0, closed)")

    async with client:
        await client.fire(1, [])
        assert repr(client).endswith("sequence=1, connected)")

    assert SECRET.decode() not in repr(client)
    assert repr(server) == f"RunningServer(host='127.0.0.1', port={server.port}, serving)"


async def test_stopped_server_repr(pki: Pki, handler: RecordingHandler) -> None:
    running = await start_grpc_server(
        host="127.0.0.1",
        port=0,
        tls=pki.server,
        allowed_cns=[CLIENT_CN],
        secrets=[SECRET],
        handler=handler,
    )

    await running.stop(grace=0)

    assert repr(running).endswith("stopped)")


async def test_port_in_use_raises(
    server: RunningServer, pki: Pki, handler: RecordingHandler
) -> None:
    with pytest.raises(
        OSError, match=f"could not bind the fire protocol server to 127.0.0.1:{server.port}"
    ):
        await start_grpc_server(
            host="127.0.0.1",
            port=server.port,
            tls=pki.server,
            allowed_cns=[CLIENT_CN],
            secrets=[SECRET],
            handler=handler,
        )


@pytest.mark.parametrize(
    ("allowed_cns", "secrets", "message"),
    [
        ([], [SECRET], "allowed_cns is empty"),
        ("z4j-scheduler", [SECRET], "is a single string"),
        ([CLIENT_CN], [], "no frame secrets"),
        ([CLIENT_CN], [SECRET, b""], "a frame secret is empty"),
    ],
)
async def test_invalid_server_settings_raise(
    pki: Pki,
    handler: RecordingHandler,
    allowed_cns: list[str],
    secrets: list[bytes],
    message: str,
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        await start_grpc_server(
            host="127.0.0.1",
            port=0,
            tls=pki.server,
            allowed_cns=allowed_cns,
            secrets=secrets,
            handler=handler,
        )


async def test_missing_server_key_raises(pki: Pki, handler: RecordingHandler) -> None:
    pki.server.key.unlink()

    with pytest.raises(PkiError, match=f"could not read {pki.server.key}"):
        await start_grpc_server(
            host="127.0.0.1",
            port=0,
            tls=pki.server,
            allowed_cns=[CLIENT_CN],
            secrets=[SECRET],
            handler=handler,
        )


async def test_client_invalid_certificate_file_raises(pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("garbage")
    client = BrainClient(
        "127.0.0.1:1", ca_cert=garbage, cert=pki.client.cert, key=pki.client.key, secret=SECRET
    )

    with pytest.raises(ValueError, match=f"{garbage} is not a PEM certificate"):
        await client.connect()


@pytest.mark.parametrize(
    ("secret", "timeout", "message"),
    [(b"", 10.0, "secret is empty"), (SECRET, 0.0, "invalid timeout 0.0")],
)
def test_client_invalid_arguments(pki: Pki, secret: bytes, timeout: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_client(1, pki.client, secret=secret, timeout=timeout)
