"""Helpers shared by the fire protocol tests."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc.aio

from z4j_brain_plugin.pki import TlsFiles
from z4j_scheduler.brain_client import BrainClient
from z4j_scheduler.wire import scheduler_pb2_grpc as pb_grpc
from z4j_scheduler.wire.messages import (
    AdvanceResult,
    CursorAdvance,
    FireBatchResult,
    FireOutcome,
    FireRequest,
    FireResult,
)

SECRET = b"current-secret-" + b"x" * 17
PREVIOUS_SECRET = b"previous-secret-" + b"y" * 16
CLIENT_CN = "z4j-scheduler"


@dataclass
class RecordingHandler:
    """Fire handler that records each call and returns ACCEPTED for every fire."""

    calls: list[tuple[int, list[FireRequest], list[CursorAdvance]]] = field(default_factory=list)
    results: list[FireBatchResult] = field(default_factory=list)

    async def __call__(
        self, epoch: int, fires: Sequence[FireRequest], advances: Sequence[CursorAdvance]
    ) -> FireBatchResult:
        self.calls.append((epoch, list(fires), list(advances)))
        result = FireBatchResult(
            fires=tuple(
                FireResult(fire.fire_id, FireOutcome.ACCEPTED, "pending") for fire in fires
            ),
            advances=tuple(AdvanceResult(advance.schedule_id, True) for advance in advances),
            stale_epoch=False,
            current_epoch=epoch,
        )
        self.results.append(result)
        return result


@dataclass(frozen=True)
class Pki:
    server: TlsFiles
    client: TlsFiles


def make_client(
    port: int, files: TlsFiles, *, secret: bytes = SECRET, timeout: float = 30.0
) -> BrainClient:
    return BrainClient(
        f"127.0.0.1:{port}",
        ca_cert=files.ca_cert,
        cert=files.cert,
        key=files.key,
        secret=secret,
        timeout=timeout,
    )


@dataclass
class RawConnection:
    """A plain grpc channel and stub, for sending frames built by hand."""

    channel: grpc.aio.Channel
    stub: pb_grpc.SchedulerServiceStub


def random_nonce() -> bytes:
    return secrets.token_bytes(16)
