"""The HMAC-chained audit log.

Each entry stores ``hmac = HMAC-SHA256(secret, prev_hmac || canonical(entry))``
and its predecessor's hmac in a UNIQUE column, so an edited, deleted or forked
entry breaks the chain and ``verify_chain`` finds it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select, text
from sqlalchemy.orm import Session

from z4j_brain_plugin.models import AuditEntry, bulk_insert, reserve_ids

GENESIS = "0" * 64
_AUDIT_LOG = cast(Table, AuditEntry.__table__)
# Key of the PostgreSQL advisory lock that serialises appends to the chain.
_APPEND_LOCK_KEY = 0x7A346A_A0D17


@dataclass(slots=True)
class AuditRecord:
    """An entry to append; plain values, so that thousands cost no ORM bookkeeping."""

    at: datetime
    actor: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    id: int = 0
    prev_hmac: str = ""
    hmac: str = ""


def canonical(entry: AuditEntry | AuditRecord) -> bytes:
    """Return the bytes the entry's hmac covers, stable across backends."""
    document = {
        "at": entry.at.isoformat(timespec="microseconds"),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "before": entry.before,
        "after": entry.after,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()


def entry_hmac(secret: bytes, prev_hmac: str, entry: AuditEntry | AuditRecord) -> str:
    return hmac.new(secret, prev_hmac.encode() + canonical(entry), hashlib.sha256).hexdigest()


def append(
    session: Session,
    secret: bytes,
    *,
    actor: str,
    action: str,
    target: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    at: datetime,
) -> AuditRecord:
    """Append one entry in the caller's transaction."""
    record = AuditRecord(
        at=at, actor=actor, action=action, target=target, before=before, after=after
    )
    return append_many(session, secret, [record])[0]


def append_many(
    session: Session, secret: bytes, records: Sequence[AuditRecord]
) -> list[AuditRecord]:
    """Chain ``records`` after the last stored entry and insert them in the caller's transaction.

    The ids are reserved in the chain's order before one executemany insert,
    because ``verify_chain`` walks the entries by id.
    """
    if not records:
        return []
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _APPEND_LOCK_KEY})
    last = session.scalar(select(AuditEntry.hmac).order_by(AuditEntry.id.desc()).limit(1))
    previous = last or GENESIS
    ids = reserve_ids(session, "audit_log", len(records))
    for record_id, record in zip(ids, records, strict=True):
        record.id = record_id
        record.before, record.after = _plain(record.before), _plain(record.after)
        record.prev_hmac = previous
        record.hmac = entry_hmac(secret, previous, record)
        previous = record.hmac
    bulk_insert(session, _AUDIT_LOG, [_row(record) for record in records])
    return list(records)


def _row(record: AuditRecord) -> dict[str, Any]:
    return {column.key: getattr(record, column.key) for column in _AUDIT_LOG.columns}


def verify_chain(entries: Iterable[AuditEntry], secrets: Iterable[bytes]) -> list[str]:
    """Return one problem per broken link, empty when the chain is intact."""
    keys = list(secrets)
    problems: list[str] = []
    expected_prev = GENESIS
    for entry in entries:
        if entry.prev_hmac != expected_prev:
            problems.append(
                f"entry {entry.id}: chained to {entry.prev_hmac[:12]}, expected {expected_prev[:12]} (an entry was deleted or inserted)"
            )
        if not any(
            hmac.compare_digest(entry.hmac, entry_hmac(key, entry.prev_hmac, entry)) for key in keys
        ):
            problems.append(
                f"entry {entry.id}: hmac does not match its content (the entry was edited)"
            )
        expected_prev = entry.hmac
    return problems


def _plain(document: dict[str, Any] | None) -> dict[str, Any] | None:
    # Round-trip through JSON so the stored value and the hashed value agree.
    if document is None:
        return None
    result: dict[str, Any] = json.loads(json.dumps(document, default=str))
    return result
