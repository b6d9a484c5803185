"""The Huey application, with its storage URL from ``Z4J_HUEY_URL``.

URL forms, the same that z4j-scheduler's Huey dispatcher reads:
``redis://HOST:PORT/DB?name=NAME`` or ``sqlite:///ABSOLUTE/PATH?name=NAME``.
The default is ``huey.db`` in the working directory with the name
``z4j_examples``, so the example runs without a server.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from huey import Huey, RedisHuey, SqliteHuey

DEFAULT_URL = f"sqlite://{quote(str(Path('huey.db').resolve()))}?name=z4j_examples"


def create_huey(url: str) -> Huey:
    """Create a RedisHuey or SqliteHuey from a storage URL."""
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    name = params.pop("name", "huey")
    if parts.scheme in ("redis", "rediss"):
        return RedisHuey(name, url=urlunsplit(parts._replace(query=urlencode(params))))
    if parts.scheme == "sqlite":
        return SqliteHuey(name, filename="/" + unquote(parts.path).lstrip("/"))
    raise ValueError(f"invalid Z4J_HUEY_URL {url!r}: use redis://... or sqlite:///ABSOLUTE/PATH")


huey = create_huey(os.environ.get("Z4J_HUEY_URL", DEFAULT_URL))
