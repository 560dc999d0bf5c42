"""The schema the migrations build is the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from workflows import migrate
from workflows.models import Base
from workflows.search import include_name


def test_migrations_and_models_agree(db_engine: Engine) -> None:
    with db_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": include_name})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_the_suite_schema_was_built_by_the_migrations(db_engine: Engine) -> None:
    tables = set(inspect(db_engine).get_table_names())
    assert "alembic_version" in tables
    assert {t.name for t in Base.metadata.sorted_tables} <= tables


def test_upgrading_twice_changes_nothing(db_engine: Engine) -> None:
    migrate.upgrade(db_engine)
    with db_engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == "0010"
