"""Where the brain keeps its signing secret when Z4J_SECRET is unset."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from z4j_brain_plugin.errors import ConfigurationError
from z4j_brain_plugin.keys import secret_file, signing_secrets
from z4j_brain_plugin.settings import BrainSettings


def test_secret_is_created_beside_sqlite_database(tmp_path: Path) -> None:
    settings = BrainSettings(database_url=f"sqlite:///{tmp_path / 'brain.db'}")
    first = signing_secrets(settings)
    path = tmp_path / "brain.db.secret"
    assert secret_file(settings) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert signing_secrets(settings) == first


def test_secret_does_not_depend_on_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'brain.db'}"
    first = signing_secrets(BrainSettings(database_url=url))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert signing_secrets(BrainSettings(database_url=url)) == first


def test_postgres_brain_needs_explicit_secret() -> None:
    settings = BrainSettings(database_url="postgresql://postgres@127.0.0.1:5432/any")
    with pytest.raises(ConfigurationError, match="missing Z4J_SECRET"):
        signing_secrets(settings)


def test_previous_secrets_follow_current(tmp_path: Path) -> None:
    settings = BrainSettings(
        database_url=f"sqlite:///{tmp_path / 'brain.db'}",
        secret="new",
        previous_secrets="old,older",
    )
    assert signing_secrets(settings) == (b"new", b"old", b"older")
