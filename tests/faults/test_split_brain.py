"""Two schedulers that both believe they lead: the fencing epoch lets one fire per slot through."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import anyio
import anyio.to_thread
import pytest
from sqlalchemy import select

from tests.faults.checks import assert_each_slot_once, report
from tests.faults.stack import SECRET, FaultStack
from z4j_brain_plugin.models import Fire, make_session_factory
from z4j_brain_plugin.pki import MintedPki
from z4j_scheduler.brain_client import BrainClient
from z4j_scheduler.scheduler import Scheduler
from z4j_scheduler.wire.messages import CursorAdvance, FireBatchResult, FireOutcome, FireRequest

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

BURST_SLOTS = 2000
BURST_SPREAD = 10.0


class AlwaysLeading:
    """A leader gate that grants leadership to every instance, as a broken lock would."""

    def try_acquire(self) -> bool:
        return True

    def still_leading(self) -> bool:
        return True

    def release(self) -> None:
        pass


@dataclass(frozen=True)
class SentFrame:
    epoch: int
    fire_ids: tuple[str, ...]
    result: FireBatchResult


@dataclass
class RecordingSender:
    """Sends through a real client and keeps every frame with the brain's result."""

    client: BrainClient
    frames: list[SentFrame] = field(default_factory=list)

    async def fire(
        self, epoch: int, fires: Sequence[FireRequest], advances: Sequence[CursorAdvance] = ()
    ) -> FireBatchResult:
        result = await self.client.fire(epoch, fires, advances)
        self.frames.append(SentFrame(epoch, tuple(fire.fire_id for fire in fires), result))
        return result


def client_for(stack: FaultStack, pki: MintedPki) -> BrainClient:
    files = pki.clients["z4j-scheduler"]
    return BrainClient(
        f"127.0.0.1:{stack.grpc_port}",
        ca_cert=files.ca_cert,
        cert=files.cert,
        key=files.key,
        secret=SECRET.encode(),
    )


async def test_two_leaders_fenced_by_epoch(stack: FaultStack, minted_pki: MintedPki) -> None:
    await anyio.to_thread.run_sync(stack.start_brain)
    senders = {name: RecordingSender(client_for(stack, minted_pki)) for name in ("a", "b")}
    schedulers = {
        name: Scheduler(
            make_session_factory(stack.engine),
            AlwaysLeading(),
            sender,
            grace=timedelta(seconds=stack.grace_seconds),
            instance_id=name,
        )
        for name, sender in senders.items()
    }
    for sender in senders.values():
        await sender.client.connect()
    try:
        assert await schedulers["a"].acquire()
        assert await schedulers["b"].acquire()
        assert (schedulers["a"].epoch or 0) < (schedulers["b"].epoch or 0)
        burst = stack.create_burst(BURST_SLOTS, lead=2.0, spread=BURST_SPREAD)
        stop = anyio.Event()
        async with anyio.create_task_group() as group:
            for scheduler in schedulers.values():
                group.start_soon(scheduler.run, stop)
            await anyio.to_thread.run_sync(
                lambda: stack.wait_for(
                    lambda: stack.fire_count() >= len(burst), "every slot recorded", 120
                )
            )
            stop.set()
    finally:
        for sender in senders.values():
            await sender.client.close()

    delivery = await anyio.to_thread.run_sync(assert_each_slot_once, stack, burst)
    with stack.engine.connect() as connection:
        recorded_epochs = {
            fire_id: epoch for fire_id, epoch in connection.execute(select(Fire.id, Fire.epoch))
        }
    frames = [frame for sender in senders.values() for frame in sender.frames]
    stale = {
        name: [f for f in sender.frames if f.result.stale_epoch] for name, sender in senders.items()
    }
    accepted_in = {
        fire_id: frame.epoch
        for frame in frames
        if not frame.result.stale_epoch
        for fire_id, item in zip(frame.fire_ids, frame.result.fires, strict=True)
        if item.outcome is FireOutcome.ACCEPTED
    }

    assert all(stale[name] for name in senders), (
        "both instances must have been fenced at least once"
    )
    written_by_stale = [
        fire_id
        for frame in frames
        if frame.result.stale_epoch
        for fire_id in frame.fire_ids
        if recorded_epochs.get(fire_id) == frame.epoch
    ]
    assert written_by_stale == []
    assert all(
        frame.result.current_epoch == frame.epoch
        for frame in frames
        if not frame.result.stale_epoch
    )
    assert accepted_in == recorded_epochs
    report(
        "split brain",
        slots=len(burst),
        frames=len(frames),
        stale_frames={name: len(items) for name, items in stale.items()},
        epochs=sorted(set(recorded_epochs.values())),
        resent=delivery.resent,
    )
