"""The scheduler's client of the brain's fire protocol endpoint (gRPC over mTLS).

Each :meth:`BrainClient.fire` call sends one signed frame. Frames are sent
one at a time per client, so their sequence numbers reach the brain in
order. A batch is never split: a frame may be up to ``MAX_MESSAGE_BYTES``
(64 MiB, several hundred thousand fires), and a larger one raises ValueError
before anything is sent.
"""

from __future__ import annotations

import asyncio
import logging
import secrets as random_source
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from z4j_scheduler.errors import BrainUnavailableError, FrameError
from z4j_scheduler.wire import codec
from z4j_scheduler.wire import scheduler_pb2 as pb
from z4j_scheduler.wire import scheduler_pb2_grpc as pb_grpc
from z4j_scheduler.wire.messages import CursorAdvance, FireBatchResult, FireRequest
from z4j_scheduler.wire.signing import sign_frame

logger = logging.getLogger(__name__)

_NONCE_SIZE = 16
# Status codes that mean the brain received the call and rejected it. Any
# other failure counts as the brain being unavailable, so a retry may work.
_REJECTION_CODES = frozenset(
    {
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)


class BrainClient:
    """Sends signed fire frames to the brain over one mTLS gRPC channel.

    ``target`` is ``host:port`` (``[::1]:port`` for IPv6). ``server_name``
    overrides the name checked against the brain's certificate, for a target
    that the certificate does not name. ``timeout`` (seconds) bounds
    :meth:`connect` and each :meth:`fire` call. Use as ``async with
    BrainClient(...) as client:`` or call :meth:`connect` and :meth:`close`.
    """

    def __init__(
        self,
        target: str,
        *,
        ca_cert: Path,
        cert: Path,
        key: Path,
        secret: bytes,
        server_name: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not secret:
            raise ValueError("the frame secret is empty; set Z4J_SECRET to a long random value")
        if timeout <= 0:
            raise ValueError(f"invalid timeout {timeout}: must be positive seconds")
        self._target = target
        self._ca_cert = ca_cert
        self._cert = cert
        self._key = key
        self._secret = secret
        self._server_name = server_name
        self._timeout = timeout
        self._session_id = uuid.uuid4().hex
        self._sequence = 0
        self._send_lock = asyncio.Lock()
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.SchedulerServiceStub | None = None

    async def connect(self) -> None:
        """Open the channel and check that the brain accepts this client.

        Raises BrainUnavailableError when the TLS handshake fails or the brain
        does not respond to a ping within the timeout, FrameError when it rejects
        the certificate CN or protocol version, and ValueError or OSError
        naming a certificate or key file that cannot be used. Does nothing
        when already connected.
        """
        # The lock keeps two concurrent calls from opening two channels.
        async with self._send_lock:
            if self._channel is not None:
                return
            channel = grpc.aio.secure_channel(self._target, self._credentials(), self._options())
            # The generated gRPC module has no type annotations.
            stub = pb_grpc.SchedulerServiceStub(channel)  # type: ignore[no-untyped-call]
            try:
                await self._handshake(channel, stub)
            except BaseException:
                await channel.close()
                raise
            self._channel, self._stub = channel, stub
        logger.info("connected to brain at %s (session %s)", self._target, self._session_id)

    async def fire(
        self,
        epoch: int,
        fires: Sequence[FireRequest],
        advances: Sequence[CursorAdvance] = (),
    ) -> FireBatchResult:
        """Send ``fires`` and ``advances`` in one signed frame and return the brain's result.

        Raises BrainUnavailableError when the call fails or times out. The
        frame may then have been recorded or not, and a resend is safe because
        the brain stores each fire id once. Raises FrameError when the brain
        rejects the frame or sends a reply this client cannot read, and
        ValueError when the frame would exceed ``MAX_MESSAGE_BYTES`` or a value
        cannot be encoded.
        """
        stub = self._require_stub()
        frame = codec.encode_frame_body(epoch, fires, advances)
        async with self._send_lock:
            self._sign(frame)
            reply = await self._send(stub, frame)
        try:
            return codec.decode_batch_result(reply)
        except ValueError as err:
            raise FrameError(
                f"brain at {self._target} sent a reply this client cannot read: {err};"
                " run the same z4j-scheduler release on both sides"
            ) from err

    async def close(self) -> None:
        """Close the channel; calls still running fail. Does nothing when not connected."""
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()
            logger.info("closed connection to brain at %s", self._target)

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "connected" if self._channel is not None else "closed"
        return (
            f"BrainClient(target={self._target!r}, session={self._session_id[:8]},"
            f" sequence={self._sequence}, {state})"
        )

    def _credentials(self) -> grpc.ChannelCredentials:
        ca_pem = _read_certificate(self._ca_cert)
        cert_pem = _read_certificate(self._cert)
        key_pem = _read_private_key(self._key)
        return grpc.ssl_channel_credentials(
            root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
        )

    def _options(self) -> list[tuple[str, str | int]]:
        options: list[tuple[str, str | int]] = [
            ("grpc.max_receive_message_length", codec.MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", codec.MAX_MESSAGE_BYTES),
            # The link is point to point, so an http_proxy variable in the
            # environment must not divert it.
            ("grpc.enable_http_proxy", 0),
        ]
        if self._server_name is not None:
            options.append(("grpc.ssl_target_name_override", self._server_name))
        return options

    async def _handshake(
        self, channel: grpc.aio.Channel, stub: pb_grpc.SchedulerServiceStub
    ) -> None:
        try:
            # Without wait_for_ready a failed TLS handshake fails the ping at
            # once, with grpc's reason in the details.
            await stub.Ping(pb.PingRequest(version=codec.PROTOCOL_VERSION), timeout=self._timeout)
        except TimeoutError as err:
            raise BrainUnavailableError(
                f"brain at {self._target} did not respond to a ping within {self._timeout} s;"
                " check that the brain is running and not overloaded"
            ) from err
        except grpc.aio.AioRpcError as err:
            raise _translate(err, self._target) from err

    def _require_stub(self) -> pb_grpc.SchedulerServiceStub:
        if self._stub is None:
            raise RuntimeError(f"{self!r} is not connected; call connect() first")
        return self._stub

    def _sign(self, frame: pb.FireFrame) -> None:
        self._sequence += 1
        frame.session_id = self._session_id
        frame.sequence = self._sequence
        frame.nonce = random_source.token_bytes(_NONCE_SIZE)
        frame.sent_at_us = time.time_ns() // 1000
        frame.hmac = sign_frame(self._secret, frame)
        size = frame.ByteSize()
        if size > codec.MAX_MESSAGE_BYTES:
            raise ValueError(
                f"frame of {len(frame.fires)} fires and {len(frame.advances)} advances is"
                f" {size} bytes, above the limit of {codec.MAX_MESSAGE_BYTES} bytes;"
                " send the batch in smaller calls"
            )

    async def _send(
        self, stub: pb_grpc.SchedulerServiceStub, frame: pb.FireFrame
    ) -> pb.FireFrameReply:
        try:
            reply: pb.FireFrameReply = await stub.FireSchedule(frame, timeout=self._timeout)
        except grpc.aio.AioRpcError as err:
            raise _translate(err, self._target) from err
        return reply


def _translate(err: grpc.aio.AioRpcError, target: str) -> FrameError | BrainUnavailableError:
    code = err.code()
    if code in _REJECTION_CODES:
        return FrameError(f"brain at {target} rejected the call: {code.name}: {err.details()}")
    message = f"brain at {target} failed the call: {code.name}: {err.details()}"
    if code == grpc.StatusCode.UNAVAILABLE:
        # A TLS rejection by the brain also ends here, as a closed socket.
        message += (
            "; check the address, that the brain is running, and that both sides"
            " use certificates from the same CA"
        )
    return BrainUnavailableError(message)


def _read_certificate(path: Path) -> bytes:
    pem = path.read_bytes()
    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError as err:
        raise ValueError(f"{path} is not a PEM certificate: {err}") from err
    return pem


def _read_private_key(path: Path) -> bytes:
    pem = path.read_bytes()
    try:
        serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path} is not an unencrypted PEM private key: {err}") from err
    return pem
