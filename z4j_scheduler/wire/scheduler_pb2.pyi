from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Trigger(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRIGGER_UNSPECIFIED: _ClassVar[Trigger]
    TRIGGER_SCHEDULE: _ClassVar[Trigger]
    TRIGGER_CATCH_UP: _ClassVar[Trigger]
    TRIGGER_MANUAL: _ClassVar[Trigger]
    TRIGGER_REPLAY: _ClassVar[Trigger]

class FireOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FIRE_OUTCOME_UNSPECIFIED: _ClassVar[FireOutcome]
    FIRE_OUTCOME_ACCEPTED: _ClassVar[FireOutcome]
    FIRE_OUTCOME_DUPLICATE: _ClassVar[FireOutcome]
    FIRE_OUTCOME_STALE_REVISION: _ClassVar[FireOutcome]
    FIRE_OUTCOME_NOT_FOUND: _ClassVar[FireOutcome]
    FIRE_OUTCOME_DISABLED: _ClassVar[FireOutcome]
TRIGGER_UNSPECIFIED: Trigger
TRIGGER_SCHEDULE: Trigger
TRIGGER_CATCH_UP: Trigger
TRIGGER_MANUAL: Trigger
TRIGGER_REPLAY: Trigger
FIRE_OUTCOME_UNSPECIFIED: FireOutcome
FIRE_OUTCOME_ACCEPTED: FireOutcome
FIRE_OUTCOME_DUPLICATE: FireOutcome
FIRE_OUTCOME_STALE_REVISION: FireOutcome
FIRE_OUTCOME_NOT_FOUND: FireOutcome
FIRE_OUTCOME_DISABLED: FireOutcome

class Fire(_message.Message):
    __slots__ = ("fire_id", "schedule_id", "scheduled_for_us", "trigger", "revision", "next_cursor_us")
    FIRE_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_FOR_US_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_US_FIELD_NUMBER: _ClassVar[int]
    fire_id: str
    schedule_id: int
    scheduled_for_us: int
    trigger: Trigger
    revision: int
    next_cursor_us: int
    def __init__(self, fire_id: _Optional[str] = ..., schedule_id: _Optional[int] = ..., scheduled_for_us: _Optional[int] = ..., trigger: _Optional[_Union[Trigger, str]] = ..., revision: _Optional[int] = ..., next_cursor_us: _Optional[int] = ...) -> None: ...

class CursorAdvance(_message.Message):
    __slots__ = ("schedule_id", "revision", "next_cursor_us", "skipped")
    SCHEDULE_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_US_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    schedule_id: int
    revision: int
    next_cursor_us: int
    skipped: int
    def __init__(self, schedule_id: _Optional[int] = ..., revision: _Optional[int] = ..., next_cursor_us: _Optional[int] = ..., skipped: _Optional[int] = ...) -> None: ...

class FireFrame(_message.Message):
    __slots__ = ("version", "session_id", "sequence", "nonce", "epoch", "fires", "advances", "sent_at_us", "hmac")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    FIRES_FIELD_NUMBER: _ClassVar[int]
    ADVANCES_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_US_FIELD_NUMBER: _ClassVar[int]
    HMAC_FIELD_NUMBER: _ClassVar[int]
    version: int
    session_id: str
    sequence: int
    nonce: bytes
    epoch: int
    fires: _containers.RepeatedCompositeFieldContainer[Fire]
    advances: _containers.RepeatedCompositeFieldContainer[CursorAdvance]
    sent_at_us: int
    hmac: bytes
    def __init__(self, version: _Optional[int] = ..., session_id: _Optional[str] = ..., sequence: _Optional[int] = ..., nonce: _Optional[bytes] = ..., epoch: _Optional[int] = ..., fires: _Optional[_Iterable[_Union[Fire, _Mapping]]] = ..., advances: _Optional[_Iterable[_Union[CursorAdvance, _Mapping]]] = ..., sent_at_us: _Optional[int] = ..., hmac: _Optional[bytes] = ...) -> None: ...

class FireResult(_message.Message):
    __slots__ = ("fire_id", "outcome", "status", "live_revision", "live_next_run_at_us")
    FIRE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIVE_REVISION_FIELD_NUMBER: _ClassVar[int]
    LIVE_NEXT_RUN_AT_US_FIELD_NUMBER: _ClassVar[int]
    fire_id: str
    outcome: FireOutcome
    status: str
    live_revision: int
    live_next_run_at_us: int
    def __init__(self, fire_id: _Optional[str] = ..., outcome: _Optional[_Union[FireOutcome, str]] = ..., status: _Optional[str] = ..., live_revision: _Optional[int] = ..., live_next_run_at_us: _Optional[int] = ...) -> None: ...

class AdvanceResult(_message.Message):
    __slots__ = ("schedule_id", "applied", "live_revision", "live_next_run_at_us")
    SCHEDULE_ID_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    LIVE_REVISION_FIELD_NUMBER: _ClassVar[int]
    LIVE_NEXT_RUN_AT_US_FIELD_NUMBER: _ClassVar[int]
    schedule_id: int
    applied: bool
    live_revision: int
    live_next_run_at_us: int
    def __init__(self, schedule_id: _Optional[int] = ..., applied: _Optional[bool] = ..., live_revision: _Optional[int] = ..., live_next_run_at_us: _Optional[int] = ...) -> None: ...

class FireFrameReply(_message.Message):
    __slots__ = ("fires", "advances", "stale_epoch", "current_epoch")
    FIRES_FIELD_NUMBER: _ClassVar[int]
    ADVANCES_FIELD_NUMBER: _ClassVar[int]
    STALE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    CURRENT_EPOCH_FIELD_NUMBER: _ClassVar[int]
    fires: _containers.RepeatedCompositeFieldContainer[FireResult]
    advances: _containers.RepeatedCompositeFieldContainer[AdvanceResult]
    stale_epoch: bool
    current_epoch: int
    def __init__(self, fires: _Optional[_Iterable[_Union[FireResult, _Mapping]]] = ..., advances: _Optional[_Iterable[_Union[AdvanceResult, _Mapping]]] = ..., stale_epoch: _Optional[bool] = ..., current_epoch: _Optional[int] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class PingReply(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...
