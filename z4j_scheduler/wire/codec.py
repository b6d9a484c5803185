"""Convert between the protocol dataclasses and the generated protobuf messages.

Pure functions. Decoding validates what arrives from the other process and
raises ValueError naming the field and the value, so the receiver can reject
a malformed frame or reply before it acts on it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from z4j_scheduler.wire import scheduler_pb2 as pb
from z4j_scheduler.wire.messages import (
    AdvanceResult,
    CursorAdvance,
    FireBatchResult,
    FireOutcome,
    FireRequest,
    FireResult,
    Trigger,
)

# Version of the frame layout this code sends and accepts.
PROTOCOL_VERSION = 1
# Largest message either side sends or accepts. A fire takes about 70 bytes
# on the wire, so one frame carries several hundred thousand of them.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

_TRIGGER_TO_PROTO = {
    Trigger.SCHEDULE: pb.TRIGGER_SCHEDULE,
    Trigger.CATCH_UP: pb.TRIGGER_CATCH_UP,
    Trigger.MANUAL: pb.TRIGGER_MANUAL,
    Trigger.REPLAY: pb.TRIGGER_REPLAY,
}
_TRIGGER_FROM_PROTO = {number: trigger for trigger, number in _TRIGGER_TO_PROTO.items()}

_OUTCOME_TO_PROTO = {
    FireOutcome.ACCEPTED: pb.FIRE_OUTCOME_ACCEPTED,
    FireOutcome.DUPLICATE: pb.FIRE_OUTCOME_DUPLICATE,
    FireOutcome.STALE_REVISION: pb.FIRE_OUTCOME_STALE_REVISION,
    FireOutcome.NOT_FOUND: pb.FIRE_OUTCOME_NOT_FOUND,
    FireOutcome.DISABLED: pb.FIRE_OUTCOME_DISABLED,
}
_OUTCOME_FROM_PROTO = {number: outcome for outcome, number in _OUTCOME_TO_PROTO.items()}


def datetime_to_us(value: datetime, field: str) -> int:
    """Return an aware datetime as integer microseconds since the Unix epoch."""
    if value.utcoffset() is None:
        raise ValueError(f"invalid {field} {value!r}: a timezone-aware datetime is required")
    return (value - _UNIX_EPOCH) // _MICROSECOND


def us_to_datetime(value: int, field: str) -> datetime:
    """Return microseconds since the Unix epoch as an aware UTC datetime."""
    try:
        return _UNIX_EPOCH + timedelta(microseconds=value)
    except OverflowError as err:
        raise ValueError(
            f"invalid {field} {value}: microseconds out of the range of years 1 to 9999"
        ) from err


def encode_frame_body(
    epoch: int, fires: Sequence[FireRequest], advances: Sequence[CursorAdvance]
) -> pb.FireFrame:
    """Build an unsigned frame carrying ``fires`` and ``advances``, without session fields."""
    return pb.FireFrame(
        version=PROTOCOL_VERSION,
        epoch=epoch,
        fires=[encode_fire(fire) for fire in fires],
        advances=[encode_advance(advance) for advance in advances],
    )


def decode_frame_body(frame: pb.FireFrame) -> tuple[list[FireRequest], list[CursorAdvance]]:
    """Return the fires and advances of a frame, validated."""
    fires = [decode_fire(fire, index) for index, fire in enumerate(frame.fires)]
    advances = [decode_advance(advance, index) for index, advance in enumerate(frame.advances)]
    return fires, advances


def encode_fire(fire: FireRequest) -> pb.Fire:
    message = pb.Fire(
        fire_id=fire.fire_id,
        schedule_id=fire.schedule_id,
        scheduled_for_us=datetime_to_us(fire.scheduled_for, "scheduled_for"),
        trigger=_TRIGGER_TO_PROTO[fire.trigger],
        revision=fire.revision,
    )
    if fire.next_cursor is not None:
        message.next_cursor_us = datetime_to_us(fire.next_cursor, "next_cursor")
    return message


def decode_fire(message: pb.Fire, index: int = 0) -> FireRequest:
    where = f"fires[{index}]"
    trigger = _TRIGGER_FROM_PROTO.get(message.trigger)
    if trigger is None:
        raise ValueError(f"invalid {where}.trigger {message.trigger}: expected 1 to 4")
    return FireRequest(
        fire_id=_check_fire_id(message.fire_id, f"{where}.fire_id"),
        schedule_id=_check_schedule_id(message.schedule_id, f"{where}.schedule_id"),
        scheduled_for=us_to_datetime(message.scheduled_for_us, f"{where}.scheduled_for_us"),
        trigger=trigger,
        revision=_check_revision(message.revision, f"{where}.revision"),
        next_cursor=_optional_datetime(
            message.HasField("next_cursor_us"), message.next_cursor_us, f"{where}.next_cursor_us"
        ),
    )


def encode_advance(advance: CursorAdvance) -> pb.CursorAdvance:
    message = pb.CursorAdvance(
        schedule_id=advance.schedule_id,
        revision=advance.revision,
        skipped=advance.skipped,
    )
    if advance.next_cursor is not None:
        message.next_cursor_us = datetime_to_us(advance.next_cursor, "next_cursor")
    return message


def decode_advance(message: pb.CursorAdvance, index: int = 0) -> CursorAdvance:
    where = f"advances[{index}]"
    return CursorAdvance(
        schedule_id=_check_schedule_id(message.schedule_id, f"{where}.schedule_id"),
        revision=_check_revision(message.revision, f"{where}.revision"),
        next_cursor=_optional_datetime(
            message.HasField("next_cursor_us"), message.next_cursor_us, f"{where}.next_cursor_us"
        ),
        skipped=message.skipped,
    )


def encode_batch_result(result: FireBatchResult) -> pb.FireFrameReply:
    return pb.FireFrameReply(
        fires=[encode_fire_result(fire) for fire in result.fires],
        advances=[encode_advance_result(advance) for advance in result.advances],
        stale_epoch=result.stale_epoch,
        current_epoch=result.current_epoch,
    )


def decode_batch_result(reply: pb.FireFrameReply) -> FireBatchResult:
    return FireBatchResult(
        fires=tuple(decode_fire_result(fire, index) for index, fire in enumerate(reply.fires)),
        advances=tuple(
            decode_advance_result(advance, index) for index, advance in enumerate(reply.advances)
        ),
        stale_epoch=reply.stale_epoch,
        current_epoch=reply.current_epoch,
    )


def encode_fire_result(result: FireResult) -> pb.FireResult:
    message = pb.FireResult(
        fire_id=result.fire_id,
        outcome=_OUTCOME_TO_PROTO[result.outcome],
        status=result.status,
    )
    if result.live_revision is not None:
        message.live_revision = result.live_revision
    if result.live_next_run_at is not None:
        message.live_next_run_at_us = datetime_to_us(result.live_next_run_at, "live_next_run_at")
    return message


def decode_fire_result(message: pb.FireResult, index: int = 0) -> FireResult:
    where = f"fires[{index}]"
    outcome = _OUTCOME_FROM_PROTO.get(message.outcome)
    if outcome is None:
        raise ValueError(f"invalid {where}.outcome {message.outcome}: expected 1 to 5")
    return FireResult(
        fire_id=message.fire_id,
        outcome=outcome,
        status=message.status,
        live_revision=message.live_revision if message.HasField("live_revision") else None,
        live_next_run_at=_optional_datetime(
            message.HasField("live_next_run_at_us"),
            message.live_next_run_at_us,
            f"{where}.live_next_run_at_us",
        ),
    )


def encode_advance_result(result: AdvanceResult) -> pb.AdvanceResult:
    message = pb.AdvanceResult(schedule_id=result.schedule_id, applied=result.applied)
    if result.live_revision is not None:
        message.live_revision = result.live_revision
    if result.live_next_run_at is not None:
        message.live_next_run_at_us = datetime_to_us(result.live_next_run_at, "live_next_run_at")
    return message


def decode_advance_result(message: pb.AdvanceResult, index: int = 0) -> AdvanceResult:
    where = f"advances[{index}]"
    return AdvanceResult(
        schedule_id=message.schedule_id,
        applied=message.applied,
        live_revision=message.live_revision if message.HasField("live_revision") else None,
        live_next_run_at=_optional_datetime(
            message.HasField("live_next_run_at_us"),
            message.live_next_run_at_us,
            f"{where}.live_next_run_at_us",
        ),
    )


def _optional_datetime(present: bool, value: int, field: str) -> datetime | None:
    return us_to_datetime(value, field) if present else None


def _check_fire_id(value: str, field: str) -> str:
    # Fire ids are UUIDs (see slot_fire_id and manual_fire_id); the canonical
    # form keeps one slot from being stored under two spellings.
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        canonical = None
    if canonical != value:
        raise ValueError(f"invalid {field} {value!r}: expected a lowercase hyphenated UUID")
    return value


def _check_schedule_id(value: int, field: str) -> int:
    if value < 1:
        raise ValueError(f"invalid {field} {value}: schedule ids start at 1")
    return value


def _check_revision(value: int, field: str) -> int:
    if value < 0:
        raise ValueError(f"invalid {field} {value}: revisions are not negative")
    return value
