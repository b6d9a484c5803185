"""Dispatchers, one module per task engine, behind the ``Dispatcher`` protocol.

``create_dispatcher`` imports an engine's module only when asked for it, so
the engine's client library is needed only where that engine is used.
Adding an engine takes one module and one line in ``IMPLEMENTATIONS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Protocol, cast

from z4j_brain_plugin.dispatchers.base import Dispatcher, DispatchRequest
from z4j_brain_plugin.errors import ConfigurationError, DispatchError

__all__ = [
    "ENGINES",
    "IMPLEMENTATIONS",
    "DispatchError",
    "DispatchRequest",
    "Dispatcher",
    "create_dispatcher",
]

ENGINES: tuple[str, ...] = ("celery", "rq", "dramatiq", "huey", "arq", "taskiq")

# Engine name -> "module:class" of its dispatcher.
IMPLEMENTATIONS: Mapping[str, str] = {
    "celery": "z4j_brain_plugin.dispatchers.celery:CeleryDispatcher",
    "huey": "z4j_brain_plugin.dispatchers.huey:HueyDispatcher",
    "rq": "z4j_brain_plugin.dispatchers.rq:RQDispatcher",
    "dramatiq": "z4j_brain_plugin.dispatchers.dramatiq:DramatiqDispatcher",
    "arq": "z4j_brain_plugin.dispatchers.arq:ArqDispatcher",
    "taskiq": "z4j_brain_plugin.dispatchers.taskiq:TaskiqDispatcher",
}


class _DispatcherFactory(Protocol):
    def __call__(self, url: str) -> Dispatcher: ...


def create_dispatcher(engine: str, url: str) -> Dispatcher:
    """Create the dispatcher for ``engine`` sending to the broker or storage at ``url``.

    Raises ``ConfigurationError`` when the engine is unknown or not supported
    yet, when its client library is not installed, or when ``url`` is invalid.
    No connection is opened here: a broker that is down fails the first
    dispatch, not the start-up.
    """
    factory = _load_factory(engine)
    return factory(url)


def _load_factory(engine: str) -> _DispatcherFactory:
    target = IMPLEMENTATIONS.get(engine)
    if target is None:
        raise ConfigurationError(_unsupported_message(engine))
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        package = (exc.name or "").partition(".")[0]
        if not package or package == "z4j_brain_plugin":
            raise
        raise ConfigurationError(
            f"engine {engine!r} needs the Python package {package!r}, which is not installed; "
            f"run: pip install 'z4j-scheduler[{engine}]'"
        ) from exc
    return cast(_DispatcherFactory, getattr(module, class_name))


def _unsupported_message(engine: str) -> str:
    supported = ", ".join(IMPLEMENTATIONS)
    if engine in ENGINES:
        return f"engine {engine!r} is not supported yet; supported engines: {supported}"
    return f"unknown engine {engine!r}; supported engines: {supported}"
