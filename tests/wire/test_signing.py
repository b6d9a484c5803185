"""Frame signing and the replay guard, without a network."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from z4j_scheduler.errors import FrameError
from z4j_scheduler.wire import scheduler_pb2 as pb
from z4j_scheduler.wire.signing import SequenceGuard, sign_frame, verify_frame

SECRET = b"s" * 32
OTHER_SECRET = b"o" * 32
NOW = 1_800_000_000.0
WINDOW = 300.0


def make_frame(
    *,
    session_id: str = "session-a",
    sequence: int = 1,
    nonce: bytes = b"n" * 16,
    sent_at: float = NOW,
) -> pb.FireFrame:
    return pb.FireFrame(
        version=1,
        session_id=session_id,
        sequence=sequence,
        nonce=nonce,
        epoch=7,
        sent_at_us=int(sent_at * 1_000_000),
        fires=[
            pb.Fire(
                fire_id="0b5b8a52-9e1c-5d0e-8f4e-3a1d2c9b7e60",
                schedule_id=12,
                scheduled_for_us=1_700_000_000_000_000,
                trigger=pb.TRIGGER_SCHEDULE,
                revision=3,
                next_cursor_us=1_700_000_060_000_000,
            )
        ],
        advances=[
            pb.CursorAdvance(
                schedule_id=13, revision=4, next_cursor_us=1_700_000_120_000_000, skipped=5
            )
        ],
    )


def signed(frame: pb.FireFrame, secret: bytes = SECRET) -> pb.FireFrame:
    frame.hmac = sign_frame(secret, frame)
    return frame


def _change_field(message: Message, name: str, field_type: int) -> None:
    value = getattr(message, name)
    if field_type == FieldDescriptor.TYPE_STRING:
        changed: object = value + "x"
    elif field_type == FieldDescriptor.TYPE_BYTES:
        changed = value + b"x"
    elif field_type == FieldDescriptor.TYPE_BOOL:
        changed = not value
    else:
        changed = value + 1
    setattr(message, name, changed)


def _scalar_mutations(path: str, message: Message) -> list[tuple[str, Callable[[], None]]]:
    """One mutation per scalar field of ``message``, found through its descriptor."""
    mutations: list[tuple[str, Callable[[], None]]] = []
    for field in message.DESCRIPTOR.fields:
        if field.message_type is None and field.name != "hmac":
            mutate = functools.partial(_change_field, message, field.name, field.type)
            mutations.append((f"{path}{field.name}", mutate))
    return mutations


def _all_mutations(frame: pb.FireFrame) -> list[tuple[str, Callable[[], None]]]:
    mutations = _scalar_mutations("", frame)
    mutations += _scalar_mutations("fires[0].", frame.fires[0])
    mutations += _scalar_mutations("advances[0].", frame.advances[0])
    mutations.append(("fires removed", lambda: frame.ClearField("fires")))
    mutations.append(("advances removed", lambda: frame.ClearField("advances")))
    mutations.append(("fire appended", lambda: frame.fires.add().CopyFrom(frame.fires[0])))
    mutations.append(("cursor cleared", lambda: frame.fires[0].ClearField("next_cursor_us")))
    return mutations


def test_signed_frame_verifies() -> None:
    verify_frame([SECRET], signed(make_frame()))


def test_sign_ignores_existing_hmac() -> None:
    frame = make_frame()
    first = sign_frame(SECRET, frame)
    frame.hmac = b"z" * 32

    assert sign_frame(SECRET, frame) == first


def test_sign_leaves_frame_unchanged() -> None:
    frame = make_frame()
    before = frame.SerializeToString(deterministic=True)

    sign_frame(SECRET, frame)

    assert frame.SerializeToString(deterministic=True) == before


MUTATIONS = [name for name, _ in _all_mutations(make_frame())]


def test_mutations_reach_nested_fields() -> None:
    # Guards against the descriptor walk silently finding nothing.
    assert "sequence" in MUTATIONS
    assert "fires[0].scheduled_for_us" in MUTATIONS
    assert "advances[0].skipped" in MUTATIONS


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_tampered_field_breaks_hmac(mutation: str) -> None:
    frame = signed(make_frame())
    dict(_all_mutations(frame))[mutation]()

    with pytest.raises(FrameError, match="matches none"):
        verify_frame([SECRET], frame)


def test_wrong_secret_rejected() -> None:
    frame = signed(make_frame(), OTHER_SECRET)

    with pytest.raises(FrameError, match="matches none of the 1 configured secrets"):
        verify_frame([SECRET], frame)


def test_previous_secret_accepted() -> None:
    verify_frame([SECRET, OTHER_SECRET], signed(make_frame(), OTHER_SECRET))


def test_truncated_hmac_rejected() -> None:
    frame = signed(make_frame())
    frame.hmac = frame.hmac[:16]

    with pytest.raises(FrameError, match="hmac of 16 bytes: expected 32 bytes"):
        verify_frame([SECRET], frame)


def test_missing_hmac_rejected() -> None:
    with pytest.raises(FrameError, match="hmac of 0 bytes"):
        verify_frame([SECRET], make_frame())


def test_verify_without_secrets_raises() -> None:
    with pytest.raises(ValueError, match="no secrets"):
        verify_frame([], signed(make_frame()))


def test_empty_secret_raises() -> None:
    with pytest.raises(ValueError, match="secret is empty"):
        sign_frame(b"", make_frame())
    with pytest.raises(ValueError, match="secret is empty"):
        verify_frame([SECRET, b""], signed(make_frame()))


def _newer_frame_class() -> type[Message]:
    """FireFrame of a newer schema that added a field to FireFrame and to Fire."""
    file_proto = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(file_proto)
    for message in file_proto.message_type:
        if message.name == "FireFrame":
            message.field.add(name="note", number=10, type=FieldDescriptor.TYPE_STRING)
        if message.name == "Fire":
            message.field.add(name="priority", number=7, type=FieldDescriptor.TYPE_INT32)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("z4j.scheduler.v1.FireFrame"))


def test_newer_fields_keep_signature_valid() -> None:
    newer = _newer_frame_class()()
    newer.ParseFromString(make_frame().SerializeToString())
    newer.note = "added later"  # type: ignore[attr-defined]
    newer.fires[0].priority = 9  # type: ignore[attr-defined]
    sent = newer.SerializeToString(deterministic=True)

    received = pb.FireFrame.FromString(sent)

    # A reader without the new fields keeps them as unknown fields and
    # serializes them back in the same place, so it computes the same HMAC.
    assert received.SerializeToString(deterministic=True) == sent


class TestSequenceGuard:
    def test_increasing_sequences_admitted(self) -> None:
        guard = SequenceGuard(window=WINDOW)
        for sequence in (1, 2, 5):
            guard.admit(make_frame(sequence=sequence, nonce=bytes([sequence]) * 16), NOW)

    def test_same_sequence_rejected_as_replay(self) -> None:
        guard = SequenceGuard(window=WINDOW)
        guard.admit(make_frame(sequence=3, nonce=b"a" * 16), NOW)

        with pytest.raises(FrameError, match="replayed frame: sequence 3 of session session-a"):
            guard.admit(make_frame(sequence=3, nonce=b"b" * 16), NOW)

    def test_lower_sequence_rejected_as_reordered(self) -> None:
        guard = SequenceGuard(window=WINDOW)
        guard.admit(make_frame(sequence=3, nonce=b"a" * 16), NOW)

        with pytest.raises(
            FrameError, match=r"reordered frame: sequence 2 .* last accepted sequence 3"
        ):
            guard.admit(make_frame(sequence=2, nonce=b"b" * 16), NOW)

    def test_sessions_are_independent(self) -> None:
        guard = SequenceGuard(window=WINDOW)
        guard.admit(make_frame(session_id="a", sequence=9, nonce=b"a" * 16), NOW)

        guard.admit(make_frame(session_id="b", sequence=1, nonce=b"b" * 16), NOW)

    def test_reused_nonce_rejected_in_other_session(self) -> None:
        guard = SequenceGuard(window=WINDOW)
        guard.admit(make_frame(session_id="a", nonce=b"n" * 16), NOW)

        with pytest.raises(FrameError, match=r"nonce 6e6e.* was already used"):
            guard.admit(make_frame(session_id="b", nonce=b"n" * 16), NOW)

    @pytest.mark.parametrize("offset", [-WINDOW - 1, WINDOW + 1])
    def test_frame_outside_window_rejected(self, offset: float) -> None:
        guard = SequenceGuard(window=WINDOW)

        with pytest.raises(FrameError, match="beyond the 300 s replay window"):
            guard.admit(make_frame(sent_at=NOW + offset), NOW)

    @pytest.mark.parametrize("offset", [-WINDOW + 1, WINDOW - 1])
    def test_frame_inside_window_admitted(self, offset: float) -> None:
        SequenceGuard(window=WINDOW).admit(make_frame(sent_at=NOW + offset), NOW)

    def test_rejected_frame_not_recorded(self) -> None:
        guard = SequenceGuard(window=WINDOW)
        guard.admit(make_frame(sequence=5, nonce=b"a" * 16), NOW)
        with pytest.raises(FrameError):
            guard.admit(make_frame(sequence=4, nonce=b"b" * 16), NOW)

        # The nonce of the rejected frame is still free.
        guard.admit(make_frame(sequence=6, nonce=b"b" * 16), NOW)

    def test_idle_session_forgotten(self) -> None:
        guard = SequenceGuard(window=WINDOW)
        guard.admit(make_frame(sequence=5, nonce=b"a" * 16), NOW)
        later = NOW + 2 * WINDOW + 1

        guard.admit(make_frame(sequence=1, nonce=b"b" * 16, sent_at=later), later)

        assert repr(guard) == "SequenceGuard(sessions=1, nonces=1)"

    def test_replay_of_forgotten_session_fails_age_check(self) -> None:
        guard = SequenceGuard(window=WINDOW)
        frame = make_frame(sequence=5, nonce=b"a" * 16, sent_at=NOW + WINDOW)
        guard.admit(frame, NOW)
        later = NOW + 2 * WINDOW + 1
        guard.admit(make_frame(session_id="other", nonce=b"b" * 16, sent_at=later), later)

        with pytest.raises(FrameError, match="replay window"):
            guard.admit(frame, later)

    def test_session_count_bounded(self) -> None:
        guard = SequenceGuard(window=WINDOW, max_sessions=2)
        for index, session_id in enumerate(["a", "b", "c"]):
            guard.admit(
                make_frame(session_id=session_id, sequence=5, nonce=bytes([index]) * 16), NOW
            )

        # Session "a" was the least recently used, so it was forgotten.
        guard.admit(make_frame(session_id="a", sequence=1, nonce=b"z" * 16), NOW)
        with pytest.raises(FrameError, match="reordered"):
            guard.admit(make_frame(session_id="c", sequence=1, nonce=b"y" * 16), NOW)

    def test_nonce_count_bounded(self) -> None:
        guard = SequenceGuard(window=WINDOW, max_nonces=2)
        for sequence in (1, 2, 3):
            guard.admit(make_frame(sequence=sequence, nonce=bytes([sequence]) * 16), NOW)

        assert repr(guard) == "SequenceGuard(sessions=1, nonces=2)"

    @pytest.mark.parametrize(
        ("frame", "message"),
        [
            (make_frame(session_id=""), "invalid frame session_id ''"),
            (make_frame(session_id="s" * 65), "expected 1 to 64 characters"),
            (make_frame(sequence=0), "invalid frame sequence 0"),
            (make_frame(nonce=b"n" * 15), "nonce of 15 bytes: expected 16 to 64 bytes"),
            (make_frame(nonce=b"n" * 65), "nonce of 65 bytes"),
        ],
    )
    def test_invalid_header_rejected(self, frame: pb.FireFrame, message: str) -> None:
        with pytest.raises(FrameError, match=message):
            SequenceGuard(window=WINDOW).admit(frame, NOW)

    @pytest.mark.parametrize(
        "arguments",
        [{"window": 0.0}, {"max_sessions": 0}, {"max_nonces": 0}],
    )
    def test_invalid_bounds_raise(self, arguments: dict[str, float]) -> None:
        with pytest.raises(ValueError, match="invalid"):
            SequenceGuard(**arguments)  # type: ignore[arg-type]
