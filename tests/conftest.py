"""Shared fixtures: a real database (SQLite by default, PostgreSQL via
LANEDESK_TEST_DATABASE_URL) built through the migrations, and a fixed clock."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from workflows import migrate
from workflows.app import Desk, build_desk
from workflows.db import make_engine
from workflows.definitions import deploy_definition
from workflows.models import Base
from workflows.settings import Settings, load_settings
from workflows.users import ensure_default_groups

REPO = Path(__file__).resolve().parents[1]
TEST_DATABASE_URL = os.environ.get("LANEDESK_TEST_DATABASE_URL", "")
#: A Monday morning, so business-hour reasoning in tests stays readable.
MONDAY_9 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def pytest_report_header() -> str:
    return f"lanedesk database: {TEST_DATABASE_URL or 'sqlite (temporary file)'}"


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir = tmp_path_factory.mktemp("var")
    url = TEST_DATABASE_URL or f"sqlite:///{data_dir / 'test.db'}"
    return load_settings({"LANEDESK_DATA_DIR": str(data_dir), "LANEDESK_DATABASE_URL": url})


def reset_schema(engine: Engine) -> None:
    """Drop everything so the migrations build the schema from nothing."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    else:
        Base.metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
            conn.execute(text("DROP TABLE IF EXISTS ticket_search"))  # FTS5, not in the metadata


@pytest.fixture(scope="session")
def db_engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings)
    reset_schema(engine)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def seed(session: Session, settings: Settings) -> None:
    ensure_default_groups(session)
    xml = (settings.bpmn_dir / "ticket_lifecycle.bpmn").read_bytes()
    deploy_definition(session, settings, xml=xml, filename="ticket_lifecycle.bpmn", now=MONDAY_9)


@pytest.fixture
def session(db_engine: Engine, settings: Settings) -> Iterator[Session]:
    """A session inside a transaction rolled back after the test (savepoints for commits)."""
    connection = db_engine.connect()
    outer = connection.begin()
    db_session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    seed(db_session, settings)
    try:
        yield db_session
    finally:
        db_session.close()
        outer.rollback()
        connection.close()


def truncate_all(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture
def desk(db_engine: Engine, settings: Settings) -> Iterator[Desk]:
    """A desk whose transactions really commit (CLI, threads); emptied after the test."""
    built = build_desk(settings)
    truncate_all(db_engine)
    with built.unit_of_work() as s:
        seed(s, settings)
    try:
        yield built
    finally:
        built.engine.dispose()
        truncate_all(db_engine)


@pytest.fixture
def now() -> datetime:
    return MONDAY_9
