"""Bearer API tokens scoped to a project and a role."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from z4j_brain_plugin.errors import AuthError, ValidationError
from z4j_brain_plugin.models import ROLES, ApiToken, Project

TOKEN_PREFIX = "z4j_"
_RANK = {role: rank for rank, role in enumerate(ROLES)}


@dataclass(frozen=True, slots=True)
class Principal:
    """The identity a request acts as: the token's name, role and project (None: every project)."""

    name: str
    role: str
    project_id: int | None

    def require(self, role: str, project: Project | None = None) -> None:
        if _RANK[self.role] < _RANK[role]:
            raise AuthError(
                f"token {self.name!r} has role {self.role!r}; this request needs {role!r}"
            )
        if project is not None and self.project_id not in (None, project.id):
            raise AuthError(f"token {self.name!r} is not valid for project {project.slug!r}")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: Session, *, name: str, role: str, project: Project | None, now: datetime
) -> str:
    """Store a new token's hash and return the token, which is shown once."""
    if role not in _RANK:
        raise ValidationError("role", role, f"invalid role {role!r}: use one of {', '.join(ROLES)}")
    if project is None and role != "admin":
        raise ValidationError(
            "project", None, f"missing project: a {role} token must be bound to a project"
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(
            name=name,
            role=role,
            project_id=project.id if project else None,
            token_hash=hash_token(token),
            created_at=now,
        )
    )
    session.flush()
    return token


def authenticate(session: Session, authorization: str | None) -> Principal:
    """Return the principal of an ``Authorization: Bearer`` header, or raise AuthError."""
    if not authorization or not authorization.startswith("Bearer "):
        raise AuthError("missing bearer token: send 'Authorization: Bearer <token>'")
    token = authorization.removeprefix("Bearer ").strip()
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None:
        raise AuthError("unknown or revoked API token")
    return Principal(row.name, row.role, row.project_id)
