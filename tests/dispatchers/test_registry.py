"""Engine registry: which engines exist, which have a dispatcher, and their errors."""

from __future__ import annotations

import sys

import pytest

from z4j_brain_plugin.dispatchers import ENGINES, IMPLEMENTATIONS, create_dispatcher
from z4j_brain_plugin.errors import ConfigurationError

URLS = {
    "celery": "redis://127.0.0.1:6379/11",
    "huey": "redis://127.0.0.1:6379/11?name=app",
    "rq": "redis://127.0.0.1:6379/11",
    "dramatiq": "redis://127.0.0.1:6379/11",
    "arq": "redis://127.0.0.1:6379/11",
    "taskiq": "redis://127.0.0.1:6379/11",
}
CLIENT_MODULES = {"celery": "celery", "huey": "huey", "rq": "rq", "dramatiq": "dramatiq", "arq": "arq", "taskiq": "taskiq"}


def test_registry_engines_are_known_engines() -> None:
    assert set(IMPLEMENTATIONS) <= set(ENGINES)


@pytest.mark.parametrize("engine", sorted(IMPLEMENTATIONS))
def test_create_dispatcher_builds_engine_dispatcher(engine: str) -> None:
    dispatcher = create_dispatcher(engine, URLS[engine])
    try:
        assert dispatcher.engine == engine
        assert "127.0.0.1:6379" in repr(dispatcher)
    finally:
        dispatcher.close()


def test_create_dispatcher_rejects_unknown_engine() -> None:
    with pytest.raises(ConfigurationError) as caught:
        create_dispatcher("sidekiq", "redis://127.0.0.1:6379/0")

    message = str(caught.value)
    assert "unknown engine 'sidekiq'" in message
    assert "celery" in message
    assert "huey" in message


def test_every_engine_has_a_dispatcher() -> None:
    assert set(IMPLEMENTATIONS) == set(ENGINES)


@pytest.mark.parametrize("engine", sorted(IMPLEMENTATIONS))
def test_create_dispatcher_names_extra_for_missing_client(
    engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes the next import of that name fail as if the
    # package were not installed; monkeypatch puts the real modules back.
    client = CLIENT_MODULES[engine]
    for name in [name for name in sys.modules if name == client or name.startswith(f"{client}.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, client, None)
    module_name = IMPLEMENTATIONS[engine].partition(":")[0]
    monkeypatch.delitem(sys.modules, module_name, raising=False)

    with pytest.raises(ConfigurationError) as caught:
        create_dispatcher(engine, URLS[engine])

    message = str(caught.value)
    assert f"engine {engine!r} needs the Python package {client!r}" in message
    assert f"pip install 'z4j-scheduler[{engine}]'" in message
