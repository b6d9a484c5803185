"""The brain's gRPC endpoint of the fire protocol.

Every connection is TLS with a client certificate signed by the brain's CA;
there is no plaintext listener. grpc core rejects a client without such a
certificate during the handshake. For each call the servicer then checks, in
this order, before the handler sees anything: the certificate's CN is in the
allow-list, the frame's HMAC matches one of the secrets, its protocol version
is supported, it is neither replayed nor reordered, and its fields are valid.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
import grpc.aio

from z4j_brain_plugin.errors import ConfigurationError
from z4j_brain_plugin.pki import TlsFiles, read_tls_files
from z4j_scheduler.errors import FrameError
from z4j_scheduler.wire import codec
from z4j_scheduler.wire import scheduler_pb2 as pb
from z4j_scheduler.wire import scheduler_pb2_grpc as pb_grpc
from z4j_scheduler.wire.messages import CursorAdvance, FireBatchResult, FireRequest
from z4j_scheduler.wire.signing import DEFAULT_REPLAY_WINDOW, SequenceGuard, verify_frame

logger = logging.getLogger(__name__)

_SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", codec.MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", codec.MAX_MESSAGE_BYTES),
    # grpc enables SO_REUSEPORT by default on Linux, which would let a second
    # process bind the same port and receive part of the connections.
    ("grpc.so_reuseport", 0),
)


class FireHandler(Protocol):
    """Records one verified frame's fires and advances; the brain's database transaction."""

    async def __call__(
        self, epoch: int, fires: Sequence[FireRequest], advances: Sequence[CursorAdvance]
    ) -> FireBatchResult: ...


class RunningServer:
    """A started gRPC server of the fire protocol."""

    def __init__(self, server: grpc.aio.Server, host: str, port: int) -> None:
        self._server = server
        self._host = host
        self._port = port
        self._stopped = False

    @property
    def port(self) -> int:
        """The bound TCP port, also when 0 was requested."""
        return self._port

    async def stop(self, grace: float) -> None:
        """Stop accepting calls and cancel the calls still running after ``grace`` seconds."""
        await self._server.stop(grace)
        if not self._stopped:
            self._stopped = True
            logger.info("fire protocol server on %s port %d stopped", self._host, self._port)

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "serving"
        return f"RunningServer(host={self._host!r}, port={self._port}, {state})"


async def start_grpc_server(
    *,
    host: str,
    port: int,
    tls: TlsFiles,
    allowed_cns: Collection[str],
    secrets: Sequence[bytes],
    handler: FireHandler,
    replay_window: float = DEFAULT_REPLAY_WINDOW,
) -> RunningServer:
    """Start the mTLS gRPC server of the fire protocol on ``host:port``; port 0 picks a free port.

    ``allowed_cns`` lists the client certificate CNs allowed to call.
    ``secrets`` contains the current frame secret followed by previous ones still
    accepted. Raises ConfigurationError for an empty allow-list or secret
    list, PkiError naming an unreadable or invalid TLS file, and OSError when
    the address cannot be bound.
    """
    servicer = _SchedulerServicer(
        allowed_cns=_check_allowed_cns(allowed_cns),
        secrets=_check_secrets(secrets),
        handler=handler,
        guard=SequenceGuard(window=replay_window),
    )
    credentials = _server_credentials(tls)
    server = grpc.aio.server(options=_SERVER_OPTIONS)
    # The generated gRPC module has no type annotations.
    pb_grpc.add_SchedulerServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    bound_port = await _bind(server, host, port, credentials)
    await server.start()
    logger.info(
        "fire protocol server listening on %s port %d (mTLS; allowed client CNs: %s)",
        host,
        bound_port,
        ", ".join(sorted(servicer.allowed_cns)),
    )
    return RunningServer(server, host, bound_port)


def _check_allowed_cns(allowed_cns: Collection[str]) -> frozenset[str]:
    if isinstance(allowed_cns, str):
        raise ConfigurationError(
            f"allowed_cns {allowed_cns!r} is a single string; pass a collection of CNs"
        )
    if not allowed_cns:
        raise ConfigurationError(
            "allowed_cns is empty, so every client would be rejected;"
            " set Z4J_SCHEDULER_GRPC_ALLOWED_CNS"
        )
    return frozenset(allowed_cns)


def _check_secrets(secrets: Sequence[bytes]) -> tuple[bytes, ...]:
    if not secrets:
        raise ConfigurationError("no frame secrets given; set Z4J_SECRET")
    if not all(secrets):
        raise ConfigurationError(
            "a frame secret is empty; check Z4J_SECRET and Z4J_PREVIOUS_SECRETS"
        )
    return tuple(secrets)


def _server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    ca_pem, cert_pem, key_pem = read_tls_files(tls)
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=True
    )


async def _bind(
    server: grpc.aio.Server, host: str, port: int, credentials: grpc.ServerCredentials
) -> int:
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        bound_port = server.add_secure_port(address, credentials)
    except RuntimeError as err:
        await _discard(server)
        raise OSError(f"could not bind the fire protocol server to {address}: {err}") from err
    # A port of 0 also means that binding failed.
    if bound_port == 0:
        await _discard(server)
        raise OSError(f"could not bind the fire protocol server to {address}")
    return bound_port


async def _discard(server: grpc.aio.Server) -> None:
    # The server was never started, but it owns grpc core resources.
    await server.stop(None)


class _RejectionLog:
    """WARNING log of rejected calls: the first of each reason, then each time its count doubles."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def record(self, reason: str, peer: str, detail: str) -> None:
        self._counts[reason] += 1
        count = self._counts[reason]
        if count & (count - 1) == 0:
            logger.warning("rejected call from %s (%s, %d so far): %s", peer, reason, count, detail)


def _peer_common_name(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """Return the CN of the verified client certificate, or None when there is none."""
    for value in auth_context.get("x509_common_name", ()):
        return value.decode("utf-8", errors="replace")
    return None


_Context = grpc.aio.ServicerContext[object, object]


@dataclass(frozen=True)
class _Rejection:
    code: grpc.StatusCode
    # Short category for the rejection log, one of a fixed set.
    reason: str
    detail: str


class _SchedulerServicer(pb_grpc.SchedulerServiceServicer):
    """Checks each call and hands accepted frames to the handler.

    A rejected call gets its status through ``set_code`` and an empty reply;
    the client sees only the status.
    """

    def __init__(
        self,
        *,
        allowed_cns: frozenset[str],
        secrets: tuple[bytes, ...],
        handler: FireHandler,
        guard: SequenceGuard,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.allowed_cns = allowed_cns
        self._secrets = secrets
        self._handler = handler
        self._guard = guard
        self._clock = clock
        self._rejections = _RejectionLog()

    async def Ping(self, request: pb.PingRequest, context: _Context) -> pb.PingReply:
        rejection = self._check_peer(context) or _check_version(request.version)
        if rejection is not None:
            self._reject(context, rejection)
            return pb.PingReply()
        return pb.PingReply(version=codec.PROTOCOL_VERSION)

    async def FireSchedule(self, request: pb.FireFrame, context: _Context) -> pb.FireFrameReply:
        rejection = self._check_peer(context) or self._check_frame(request)
        if rejection is not None:
            self._reject(context, rejection)
            return pb.FireFrameReply()
        try:
            fires, advances = codec.decode_frame_body(request)
        except ValueError as err:
            self._reject(
                context, _Rejection(grpc.StatusCode.INVALID_ARGUMENT, "invalid_field", str(err))
            )
            return pb.FireFrameReply()
        logger.debug(
            "frame session=%s sequence=%d epoch=%d: %d fires, %d advances",
            request.session_id,
            request.sequence,
            request.epoch,
            len(fires),
            len(advances),
        )
        return await self._handle(request, fires, advances, context)

    def _check_peer(self, context: _Context) -> _Rejection | None:
        common_name = _peer_common_name(context.auth_context())
        if common_name is None:
            return _Rejection(grpc.StatusCode.UNAUTHENTICATED, "no_cn", "no client certificate CN")
        if common_name not in self.allowed_cns:
            return _Rejection(
                grpc.StatusCode.PERMISSION_DENIED,
                "cn_not_allowed",
                f"client certificate CN {common_name!r} is not in the allowed CNs;"
                " add it to Z4J_SCHEDULER_GRPC_ALLOWED_CNS",
            )
        return None

    def _check_frame(self, frame: pb.FireFrame) -> _Rejection | None:
        """Verify the HMAC first, so that nothing unauthenticated is read or recorded."""
        try:
            verify_frame(self._secrets, frame)
        except FrameError as err:
            return _Rejection(grpc.StatusCode.PERMISSION_DENIED, "bad_hmac", str(err))
        rejection = _check_version(frame.version)
        if rejection is not None:
            return rejection
        try:
            self._guard.admit(frame, self._clock())
        except FrameError as err:
            return _Rejection(grpc.StatusCode.PERMISSION_DENIED, "replay", str(err))
        return None

    async def _handle(
        self,
        frame: pb.FireFrame,
        fires: list[FireRequest],
        advances: list[CursorAdvance],
        context: _Context,
    ) -> pb.FireFrameReply:
        try:
            result = await self._handler(frame.epoch, fires, advances)
            return codec.encode_batch_result(result)
        except Exception:
            logger.exception(
                "fire handler failed on frame session=%s sequence=%d epoch=%d",
                frame.session_id,
                frame.sequence,
                frame.epoch,
            )
        context.set_code(grpc.StatusCode.INTERNAL)
        context.set_details("the brain failed to record the frame; see its log")
        return pb.FireFrameReply()

    def _reject(self, context: _Context, rejection: _Rejection) -> None:
        self._rejections.record(rejection.reason, context.peer(), rejection.detail)
        context.set_code(rejection.code)
        context.set_details(rejection.detail)


def _check_version(version: int) -> _Rejection | None:
    if version == codec.PROTOCOL_VERSION:
        return None
    return _Rejection(
        grpc.StatusCode.FAILED_PRECONDITION,
        "unsupported_version",
        f"unsupported protocol version {version}: this brain speaks version"
        f" {codec.PROTOCOL_VERSION}; run the same z4j-scheduler release on both sides",
    )
