"""The brain's signing secret: from ``Z4J_SECRET`` or a file it creates once."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from z4j_brain_plugin.settings import BrainSettings

logger = logging.getLogger(__name__)


def signing_secrets(settings: BrainSettings) -> tuple[bytes, ...]:
    """Return the current secret first, then the previous ones still accepted."""
    current = (
        settings.secret.get_secret_value()
        if settings.secret
        else load_or_create(settings.secret_file)
    )
    previous = tuple(item.get_secret_value() for item in settings.previous_secrets)
    return tuple(value.encode() for value in (current, *previous))


def load_or_create(path: Path) -> str:
    """Read the secret file, creating it (mode 0600) with a random secret when absent."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value + "\n")
    logger.warning(
        "Z4J_SECRET is not set: created a secret in %s; set Z4J_SECRET in production", path
    )
    return value
