"""Frame signing and replay protection of the fire protocol. Pure: no I/O, no clock.

The signature is HMAC-SHA256, keyed by the shared secret, over a fixed
prefix followed by the deterministic protobuf serialization of the frame with
its ``hmac`` field cleared. Signing the serialization covers every field,
including fields added to the proto later.

:class:`SequenceGuard` rejects a frame that was seen before or arrives out of
order. The guard keeps the last sequence number per session and the recently
seen nonces, and evicts both once a replayed frame would be too old to be
accepted anyway.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Sequence

from z4j_scheduler.errors import FrameError
from z4j_scheduler.wire import scheduler_pb2 as pb

# Binds a signature to this message type and protocol, so that the bytes of
# another message signed with the same secret never verify as a frame.
_SIGNATURE_PREFIX = b"z4j.scheduler.v1.FireFrame\n"
HMAC_SIZE = hashlib.sha256().digest_size
NONCE_MIN_SIZE = 16
NONCE_MAX_SIZE = 64
SESSION_ID_MAX_LENGTH = 64
DEFAULT_REPLAY_WINDOW = 300.0


def frame_signing_bytes(frame: pb.FireFrame) -> bytes:
    """Return the bytes that the HMAC of ``frame`` covers."""
    unsigned = pb.FireFrame()
    unsigned.CopyFrom(frame)
    unsigned.ClearField("hmac")
    return _SIGNATURE_PREFIX + unsigned.SerializeToString(deterministic=True)


def sign_frame(secret: bytes, frame: pb.FireFrame) -> bytes:
    """Return the HMAC-SHA256 of ``frame`` under ``secret``; ``frame.hmac`` is ignored."""
    _check_secret(secret)
    return hmac.digest(secret, frame_signing_bytes(frame), hashlib.sha256)


def verify_frame(secrets: Sequence[bytes], frame: pb.FireFrame) -> None:
    """Check ``frame.hmac`` against each secret in turn; raise FrameError when none matches.

    ``secrets`` contains the current secret followed by previous ones still
    accepted during a rotation. Raises ValueError when ``secrets`` is empty
    or contains an empty secret.
    """
    if not secrets:
        raise ValueError("no secrets to verify frames with; set Z4J_SECRET")
    for secret in secrets:
        _check_secret(secret)
    if len(frame.hmac) != HMAC_SIZE:
        raise FrameError(
            f"invalid frame hmac of {len(frame.hmac)} bytes: expected {HMAC_SIZE} bytes"
        )
    signed = frame_signing_bytes(frame)
    for secret in secrets:
        if hmac.compare_digest(hmac.digest(secret, signed, hashlib.sha256), frame.hmac):
            return
    raise FrameError(
        f"frame hmac matches none of the {len(secrets)} configured secrets;"
        " check that the scheduler and the brain share Z4J_SECRET"
    )


def _check_secret(secret: bytes) -> None:
    if not secret:
        raise ValueError("the frame secret is empty; set Z4J_SECRET to a long random value")


class SequenceGuard:
    """Replay and reordering check of verified frames, with bounded memory.

    A frame is accepted when it was sent within ``window`` seconds of ``now``
    (either direction, to allow for clock skew), its sequence number is
    greater than the last accepted one of its session, and its nonce was not
    seen before. A session or nonce unused for ``2 * window`` seconds is
    evicted, because a replay of its frames fails the age check by then: a
    frame was sent at most ``window`` seconds after it was first accepted.
    Past ``max_sessions`` or ``max_nonces`` the least recently used entry is
    evicted first.
    """

    def __init__(
        self,
        *,
        window: float = DEFAULT_REPLAY_WINDOW,
        max_sessions: int = 10_000,
        max_nonces: int = 100_000,
    ) -> None:
        if window <= 0:
            raise ValueError(f"invalid replay window {window}: must be positive seconds")
        if max_sessions < 1 or max_nonces < 1:
            raise ValueError(
                f"invalid guard bounds max_sessions={max_sessions}, max_nonces={max_nonces}:"
                " both must be at least 1"
            )
        self._window = window
        self._max_sessions = max_sessions
        self._max_nonces = max_nonces
        # session id -> (last accepted sequence, time of that acceptance)
        self._sessions: OrderedDict[str, tuple[int, float]] = OrderedDict()
        # nonce -> time it was accepted; insertion order is acceptance order
        self._nonces: OrderedDict[bytes, float] = OrderedDict()

    def admit(self, frame: pb.FireFrame, now: float) -> None:
        """Record ``frame`` as accepted at ``now`` (Unix seconds), or raise FrameError."""
        self._forget_before(now - 2 * self._window)
        _check_header(frame)
        self._check_age(frame, now)
        self._check_sequence(frame)
        if frame.nonce in self._nonces:
            raise FrameError(f"replayed frame: nonce {frame.nonce.hex()} was already used")
        self._record(frame, now)

    def __repr__(self) -> str:
        return f"SequenceGuard(sessions={len(self._sessions)}, nonces={len(self._nonces)})"

    def _check_age(self, frame: pb.FireFrame, now: float) -> None:
        skew = now - frame.sent_at_us / 1_000_000
        if abs(skew) > self._window:
            raise FrameError(
                f"frame sent_at_us {frame.sent_at_us} is {skew:+.0f} s from the brain's clock,"
                f" beyond the {self._window:.0f} s replay window; synchronise the clocks"
            )

    def _check_sequence(self, frame: pb.FireFrame) -> None:
        entry = self._sessions.get(frame.session_id)
        if entry is None:
            return
        last = entry[0]
        if frame.sequence == last:
            raise FrameError(
                f"replayed frame: sequence {frame.sequence} of session {frame.session_id}"
                " was already accepted"
            )
        if frame.sequence < last:
            raise FrameError(
                f"reordered frame: sequence {frame.sequence} of session {frame.session_id}"
                f" is below the last accepted sequence {last}"
            )

    def _record(self, frame: pb.FireFrame, now: float) -> None:
        self._sessions[frame.session_id] = (frame.sequence, now)
        self._sessions.move_to_end(frame.session_id)
        self._nonces[frame.nonce] = now
        while len(self._sessions) > self._max_sessions:
            self._sessions.popitem(last=False)
        while len(self._nonces) > self._max_nonces:
            self._nonces.popitem(last=False)

    def _forget_before(self, cutoff: float) -> None:
        while self._sessions and next(iter(self._sessions.values()))[1] < cutoff:
            self._sessions.popitem(last=False)
        while self._nonces and next(iter(self._nonces.values())) < cutoff:
            self._nonces.popitem(last=False)


def _check_header(frame: pb.FireFrame) -> None:
    if not 0 < len(frame.session_id) <= SESSION_ID_MAX_LENGTH:
        raise FrameError(
            f"invalid frame session_id {frame.session_id!r}:"
            f" expected 1 to {SESSION_ID_MAX_LENGTH} characters"
        )
    if frame.sequence < 1:
        raise FrameError(f"invalid frame sequence {frame.sequence}: sequences start at 1")
    if not NONCE_MIN_SIZE <= len(frame.nonce) <= NONCE_MAX_SIZE:
        raise FrameError(
            f"invalid frame nonce of {len(frame.nonce)} bytes:"
            f" expected {NONCE_MIN_SIZE} to {NONCE_MAX_SIZE} bytes"
        )
