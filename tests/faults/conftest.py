"""Fixtures of the fault tests: a PostgreSQL database of their own, certificates, the stack."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_URL, reset_tables
from tests.faults.stack import REPO_ROOT, FaultStack
from z4j_brain_plugin.migrate import upgrade
from z4j_brain_plugin.models import make_engine
from z4j_brain_plugin.pki import MintedPki, TlsFiles

# A database apart from the rest of the suite's, because these tests restart
# processes and PostgreSQL itself.
FAULTS_DATABASE = "z4j_faults"


@pytest.fixture(scope="session")
def faults_database_url() -> Iterator[str]:
    url = make_url(POSTGRES_URL).set(database=FAULTS_DATABASE).render_as_string(hide_password=False)
    admin = make_engine(
        make_url(url).set(database="postgres").render_as_string(hide_password=False),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{FAULTS_DATABASE}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{FAULTS_DATABASE}"'))
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{FAULTS_DATABASE}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def minted_pki(tmp_path_factory: pytest.TempPathFactory) -> MintedPki:
    """Certificates minted the way an operator does: ``z4j-brain pki mint``."""
    directory = tmp_path_factory.mktemp("pki") / "z4j-pki"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "z4j_brain_plugin.cli",
            "pki",
            "mint",
            str(directory),
            "--server-name",
            "127.0.0.1",
            "--client-cn",
            "z4j-scheduler",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    client = TlsFiles(
        directory / "ca.pem",
        directory / "client-z4j-scheduler.pem",
        directory / "client-z4j-scheduler-key.pem",
    )
    return MintedPki(
        ca_cert=directory / "ca.pem",
        ca_key=directory / "ca-key.pem",
        server=TlsFiles(
            directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
        ),
        clients={"z4j-scheduler": client},
    )


@pytest.fixture
def stack(faults_database_url: str, minted_pki: MintedPki, tmp_path: Path) -> Iterator[FaultStack]:
    engine = make_engine(faults_database_url)
    reset_tables(engine)
    engine.dispose()
    running = FaultStack(
        tmp_path, faults_database_url, minted_pki, f"faults-{uuid.uuid4().hex[:10]}"
    )
    try:
        yield running
    finally:
        running.close()
