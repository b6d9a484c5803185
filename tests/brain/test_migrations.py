"""The alembic migrations create exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from z4j_brain_plugin.migrate import current_revision, upgrade
from z4j_brain_plugin.models import Base


def test_migrated_schema_matches_models(engine: Engine) -> None:
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_upgrade_is_idempotent(engine: Engine) -> None:
    before = current_revision(engine)
    upgrade(engine)
    assert current_revision(engine) == before
    assert set(inspect(engine).get_table_names()) >= {
        table.name for table in Base.metadata.sorted_tables
    }
