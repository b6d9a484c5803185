from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.supervisor.processes import ChildFiles


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def child_files(tmp_path: Path) -> Iterator[ChildFiles]:
    """Give the test its child-program files and kill any child it leaves running."""
    files = ChildFiles(tmp_path)
    try:
        yield files
    finally:
        files.kill_leftovers()
