"""Conversion between the protocol dataclasses and protobuf messages."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from z4j_scheduler.wire import codec
from z4j_scheduler.wire import scheduler_pb2 as pb
from z4j_scheduler.wire.messages import (
    AdvanceResult,
    CursorAdvance,
    FireBatchResult,
    FireOutcome,
    FireRequest,
    FireResult,
    Trigger,
    slot_fire_id,
)

SLOT = datetime(2026, 3, 29, 1, 30, 0, 123456, tzinfo=UTC)


def make_fire(
    trigger: Trigger = Trigger.SCHEDULE, next_cursor: datetime | None = None
) -> FireRequest:
    return FireRequest(
        fire_id=slot_fire_id(42, SLOT),
        schedule_id=42,
        scheduled_for=SLOT,
        trigger=trigger,
        revision=3,
        next_cursor=next_cursor,
    )


@pytest.mark.parametrize("trigger", list(Trigger))
@pytest.mark.parametrize("next_cursor", [None, SLOT + timedelta(minutes=1)])
def test_fire_round_trip(trigger: Trigger, next_cursor: datetime | None) -> None:
    fire = make_fire(trigger, next_cursor)

    assert codec.decode_fire(codec.encode_fire(fire)) == fire


@pytest.mark.parametrize("next_cursor", [None, SLOT])
def test_advance_round_trip(next_cursor: datetime | None) -> None:
    advance = CursorAdvance(schedule_id=5, revision=0, next_cursor=next_cursor, skipped=1440)

    assert codec.decode_advance(codec.encode_advance(advance)) == advance


@pytest.mark.parametrize("outcome", list(FireOutcome))
def test_fire_result_round_trip(outcome: FireOutcome) -> None:
    result = FireResult("id-1", outcome, "dispatched", live_revision=0, live_next_run_at=SLOT)

    assert codec.decode_fire_result(codec.encode_fire_result(result)) == result


def test_batch_result_round_trip() -> None:
    result = FireBatchResult(
        fires=(
            FireResult("a", FireOutcome.ACCEPTED, "pending"),
            FireResult("b", FireOutcome.STALE_REVISION, "", live_revision=9, live_next_run_at=SLOT),
        ),
        advances=(AdvanceResult(1, True), AdvanceResult(2, False, 4, None)),
        stale_epoch=True,
        current_epoch=12,
    )

    assert codec.decode_batch_result(codec.encode_batch_result(result)) == result


def test_frame_body_round_trip() -> None:
    fires = [make_fire(), make_fire(Trigger.MANUAL, SLOT)]
    advances = [CursorAdvance(7, 1, None, 0)]

    frame = codec.encode_frame_body(9, fires, advances)

    assert frame.version == codec.PROTOCOL_VERSION
    assert frame.epoch == 9
    assert codec.decode_frame_body(frame) == (fires, advances)


def test_datetime_keeps_microseconds() -> None:
    assert codec.us_to_datetime(codec.datetime_to_us(SLOT, "t"), "t") == SLOT


def test_datetime_other_zone_decoded_as_utc() -> None:
    local = SLOT.astimezone(timezone(timedelta(hours=-5)))

    decoded = codec.us_to_datetime(codec.datetime_to_us(local, "t"), "t")

    assert decoded == SLOT
    assert decoded.tzinfo is UTC


def test_datetime_before_unix_epoch() -> None:
    early = datetime(1900, 1, 1, 0, 0, 0, 1, tzinfo=UTC)

    assert codec.datetime_to_us(early, "t") < 0
    assert codec.us_to_datetime(codec.datetime_to_us(early, "t"), "t") == early


def test_naive_datetime_rejected() -> None:
    fire = dataclasses.replace(make_fire(), scheduled_for=SLOT.replace(tzinfo=None))

    with pytest.raises(ValueError, match=r"invalid scheduled_for .*timezone-aware datetime"):
        codec.encode_fire(fire)


def test_out_of_range_microseconds_rejected() -> None:
    with pytest.raises(
        ValueError, match=r"invalid fires\[0\].scheduled_for_us 9223372036854775807"
    ):
        codec.decode_fire(
            pb.Fire(
                fire_id=slot_fire_id(1, SLOT),
                schedule_id=1,
                scheduled_for_us=2**63 - 1,
                trigger=pb.TRIGGER_SCHEDULE,
            )
        )


def _valid_fire_message() -> pb.Fire:
    return codec.encode_fire(make_fire())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"trigger": pb.TRIGGER_UNSPECIFIED}, r"invalid fires\[3\].trigger 0: expected 1 to 4"),
        ({"trigger": 17}, r"invalid fires\[3\].trigger 17"),
        ({"fire_id": ""}, r"invalid fires\[3\].fire_id '': expected a lowercase hyphenated UUID"),
        ({"fire_id": "not-a-uuid"}, r"invalid fires\[3\].fire_id 'not-a-uuid'"),
        ({"fire_id": slot_fire_id(42, SLOT).upper()}, r"invalid fires\[3\].fire_id"),
        ({"schedule_id": 0}, r"invalid fires\[3\].schedule_id 0: schedule ids start at 1"),
        ({"revision": -1}, r"invalid fires\[3\].revision -1: revisions are not negative"),
    ],
)
def test_invalid_fire_rejected(change: dict[str, object], message: str) -> None:
    fire = _valid_fire_message()
    for name, value in change.items():
        setattr(fire, name, value)

    with pytest.raises(ValueError, match=message):
        codec.decode_fire(fire, 3)


def test_invalid_advance_rejected() -> None:
    advance = pb.CursorAdvance(schedule_id=-4, revision=1)

    with pytest.raises(ValueError, match=r"invalid advances\[2\].schedule_id -4"):
        codec.decode_advance(advance, 2)


def test_unspecified_outcome_rejected() -> None:
    reply = pb.FireFrameReply(fires=[pb.FireResult(fire_id="a")])

    with pytest.raises(ValueError, match=r"invalid fires\[0\].outcome 0: expected 1 to 5"):
        codec.decode_batch_result(reply)
