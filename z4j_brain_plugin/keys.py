"""The brain's signing secret: from ``Z4J_SECRET`` or a file it creates once."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from sqlalchemy.engine import make_url

from z4j_brain_plugin.errors import ConfigurationError
from z4j_brain_plugin.settings import BrainSettings

logger = logging.getLogger(__name__)


def signing_secrets(settings: BrainSettings) -> tuple[bytes, ...]:
    """Return the current secret first, then the previous ones still accepted."""
    current = (
        settings.secret.get_secret_value()
        if settings.secret
        else load_or_create(secret_file(settings))
    )
    previous = tuple(item.get_secret_value() for item in settings.previous_secrets)
    return tuple(value.encode() for value in (current, *previous))


def secret_file(settings: BrainSettings) -> Path:
    """Return where the brain keeps its secret when ``Z4J_SECRET`` is unset."""
    if settings.secret_file is not None:
        return settings.secret_file
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise ConfigurationError(
            "missing Z4J_SECRET: set it to a long random value (it signs fire frames and the "
            "audit log); only a brain on a SQLite file creates one by itself"
        )
    database = Path(url.database).resolve()
    return database.with_name(database.name + ".secret")


def load_or_create(path: Path) -> str:
    """Read the secret file, creating it (mode 0600) with a random secret when absent."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process created it first; both must use the same secret.
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value + "\n")
    logger.warning(
        "Z4J_SECRET is not set: created a secret in %s; set Z4J_SECRET in production", path
    )
    return value
