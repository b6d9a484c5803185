"""Peers and frames that the brain's gRPC server must reject before the handler runs."""

from __future__ import annotations

import logging
import time

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
    make_client,
    random_nonce,
)
from z4j_brain_plugin.grpc_server import RunningServer, start_grpc_server
from z4j_brain_plugin.pki import TlsFiles
from z4j_scheduler.errors import BrainUnavailableError, FrameError
from z4j_scheduler.wire import codec
from z4j_scheduler.wire import scheduler_pb2 as pb
from z4j_scheduler.wire import scheduler_pb2_grpc as pb_grpc
from z4j_scheduler.wire.signing import sign_frame

pytestmark = pytest.mark.anyio

FIRE = pb.Fire(
    fire_id="0b5b8a52-9e1c-5d0e-8f4e-3a1d2c9b7e60",
    schedule_id=1,
    scheduled_for_us=1_700_000_000_000_000,
    trigger=pb.TRIGGER_SCHEDULE,
    revision=1,
)
CALL_TIMEOUT = 30.0


def make_frame(
    *,
    sequence: int = 1,
    session_id: str = "session-a",
    nonce: bytes | None = None,
    secret: bytes = SECRET,
    sent_at_us: int | None = None,
    version: int = codec.PROTOCOL_VERSION,
) -> pb.FireFrame:
    frame = pb.FireFrame(
        version=version,
        session_id=session_id,
        sequence=sequence,
        nonce=nonce if nonce is not None else random_nonce(),
        epoch=1,
        fires=[FIRE],
        sent_at_us=sent_at_us if sent_at_us is not None else time.time_ns() // 1000,
    )
    frame.hmac = sign_frame(secret, frame)
    return frame


async def send(raw: RawConnection, frame: pb.FireFrame) -> pb.FireFrameReply:
    reply: pb.FireFrameReply = await raw.stub.FireSchedule(frame, timeout=CALL_TIMEOUT)
    return reply


async def send_rejected(raw: RawConnection, frame: pb.FireFrame) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await send(raw, frame)
    return raised.value


async def open_channel(
    port: int, credentials: grpc.ChannelCredentials | None
) -> tuple[grpc.aio.Channel, pb_grpc.SchedulerServiceStub]:
    target = f"127.0.0.1:{port}"
    if credentials is None:
        channel = grpc.aio.insecure_channel(target)
    else:
        channel = grpc.aio.secure_channel(target, credentials)
    return channel, pb_grpc.SchedulerServiceStub(channel)  # type: ignore[no-untyped-call]


async def call_with(port: int, credentials: grpc.ChannelCredentials | None) -> grpc.aio.AioRpcError:
    """Send one validly signed frame over a channel with ``credentials``; return the error."""
    channel, stub = await open_channel(port, credentials)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.FireSchedule(make_frame(), timeout=CALL_TIMEOUT)
    finally:
        await channel.close()
    return raised.value


# Peers


async def test_client_without_certificate_rejected(
    server: RunningServer, pki: Pki, handler: RecordingHandler
) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.client.ca_cert.read_bytes())

    error = await call_with(server.port, credentials)

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert handler.calls == []


async def test_plaintext_connection_rejected(
    server: RunningServer, handler: RecordingHandler
) -> None:
    error = await call_with(server.port, None)

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert handler.calls == []


async def test_certificate_from_other_ca_rejected(
    server: RunningServer, pki: Pki, foreign_pki: Pki, handler: RecordingHandler
) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.client.ca_cert.read_bytes(),
        private_key=foreign_pki.client.key.read_bytes(),
        certificate_chain=foreign_pki.client.cert.read_bytes(),
    )

    error = await call_with(server.port, credentials)

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert handler.calls == []


async def test_brain_client_with_other_ca_certificate_unavailable(
    server: RunningServer, pki: Pki, foreign_pki: Pki, handler: RecordingHandler
) -> None:
    files = TlsFiles(
        ca_cert=pki.client.ca_cert, cert=foreign_pki.client.cert, key=foreign_pki.client.key
    )
    client = make_client(server.port, files)

    with pytest.raises(BrainUnavailableError, match="same CA"):
        await client.connect()

    assert handler.calls == []


async def test_brain_client_distrusting_server_unavailable(
    server: RunningServer, foreign_pki: Pki, handler: RecordingHandler
) -> None:
    client = make_client(server.port, foreign_pki.client)

    with pytest.raises(BrainUnavailableError, match="UNAVAILABLE"):
        await client.connect()

    assert handler.calls == []


async def test_cn_not_allowed_rejected(
    pki: Pki, handler: RecordingHandler, caplog: pytest.LogCaptureFixture
) -> None:
    running = await start_grpc_server(
        host="127.0.0.1",
        port=0,
        tls=pki.server,
        allowed_cns=["another-scheduler"],
        secrets=[SECRET],
        handler=handler,
    )
    caplog.set_level(logging.WARNING, logger="z4j_brain_plugin.grpc_server")
    client = make_client(running.port, pki.client)
    try:
        with pytest.raises(FrameError, match=f"PERMISSION_DENIED.*CN '{CLIENT_CN}' is not in"):
            await client.connect()
    finally:
        await running.stop(grace=0)

    assert handler.calls == []
    assert f"client certificate CN '{CLIENT_CN}'" in caplog.text
    assert "ipv4:127.0.0.1:" in caplog.text


async def test_cn_not_allowed_frame_rejected(pki: Pki, handler: RecordingHandler) -> None:
    running = await start_grpc_server(
        host="127.0.0.1",
        port=0,
        tls=pki.server,
        allowed_cns=["another-scheduler"],
        secrets=[SECRET],
        handler=handler,
    )
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.client.ca_cert.read_bytes(),
        private_key=pki.client.key.read_bytes(),
        certificate_chain=pki.client.cert.read_bytes(),
    )
    try:
        error = await call_with(running.port, credentials)
    finally:
        await running.stop(grace=0)

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert handler.calls == []


# Frames


async def test_valid_raw_frame_accepted(raw: RawConnection, handler: RecordingHandler) -> None:
    reply = await send(raw, make_frame())

    assert reply.fires[0].fire_id == FIRE.fire_id
    assert len(handler.calls) == 1


async def test_bad_hmac_rejected(raw: RawConnection, handler: RecordingHandler) -> None:
    error = await send_rejected(raw, make_frame(secret=b"w" * 32))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "matches none of the 2 configured secrets" in (error.details() or "")
    assert handler.calls == []


async def test_tampered_frame_rejected(raw: RawConnection, handler: RecordingHandler) -> None:
    frame = make_frame()
    frame.fires[0].schedule_id = 2

    error = await send_rejected(raw, frame)

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert handler.calls == []


async def test_previous_secret_accepted(raw: RawConnection, handler: RecordingHandler) -> None:
    await send(raw, make_frame(secret=PREVIOUS_SECRET))

    assert len(handler.calls) == 1


async def test_brain_client_with_previous_secret_accepted(
    server: RunningServer, pki: Pki, handler: RecordingHandler
) -> None:
    async with make_client(server.port, pki.client, secret=PREVIOUS_SECRET) as client:
        await client.fire(1, [])

    assert len(handler.calls) == 1


async def test_brain_client_with_unknown_secret_rejected(
    server: RunningServer, pki: Pki, handler: RecordingHandler
) -> None:
    async with make_client(server.port, pki.client, secret=b"u" * 32) as client:
        with pytest.raises(FrameError, match=r"PERMISSION_DENIED.*share Z4J_SECRET"):
            await client.fire(1, [])

    assert handler.calls == []


async def test_replayed_frame_rejected(raw: RawConnection, handler: RecordingHandler) -> None:
    frame = make_frame(sequence=1)
    await send(raw, frame)

    error = await send_rejected(raw, frame)

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "replayed frame: sequence 1" in (error.details() or "")
    assert len(handler.calls) == 1


async def test_reordered_frame_rejected(raw: RawConnection, handler: RecordingHandler) -> None:
    later = make_frame(sequence=2)
    earlier = make_frame(sequence=1)
    await send(raw, later)

    error = await send_rejected(raw, earlier)

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "reordered frame: sequence 1" in (error.details() or "")
    assert len(handler.calls) == 1


async def test_reused_nonce_rejected(raw: RawConnection, handler: RecordingHandler) -> None:
    nonce = random_nonce()
    await send(raw, make_frame(session_id="a", nonce=nonce))

    error = await send_rejected(raw, make_frame(session_id="b", nonce=nonce))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "was already used" in (error.details() or "")
    assert len(handler.calls) == 1


async def test_stale_frame_rejected(raw: RawConnection, handler: RecordingHandler) -> None:
    an_hour_ago = time.time_ns() // 1000 - 3600 * 1_000_000

    error = await send_rejected(raw, make_frame(sent_at_us=an_hour_ago))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "replay window" in (error.details() or "")
    assert handler.calls == []


async def test_unsupported_version_rejected(raw: RawConnection, handler: RecordingHandler) -> None:
    error = await send_rejected(raw, make_frame(version=codec.PROTOCOL_VERSION + 1))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"unsupported protocol version {codec.PROTOCOL_VERSION + 1}" in (error.details() or "")
    assert handler.calls == []


async def test_ping_with_unsupported_version_rejected(raw: RawConnection) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await raw.stub.Ping(pb.PingRequest(version=0), timeout=CALL_TIMEOUT)

    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_rejections_logged_at_doubling_counts(
    raw: RawConnection, handler: RecordingHandler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="z4j_brain_plugin.grpc_server")
    for sequence in range(1, 6):
        await send_rejected(raw, make_frame(sequence=sequence, secret=b"w" * 32))

    warnings = [
        record.getMessage() for record in caplog.records if record.levelno == logging.WARNING
    ]
    assert len(warnings) == 3
    assert "(bad_hmac, 1 so far)" in warnings[0]
    assert "(bad_hmac, 2 so far)" in warnings[1]
    assert "(bad_hmac, 4 so far)" in warnings[2]
    assert handler.calls == []
