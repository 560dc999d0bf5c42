"""The desk's runtime objects, built once per process from settings (a tiny composition root)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from engine.clock import system_clock

from .db import make_engine, make_session_factory, unit_of_work
from .settings import Settings, load_settings


@dataclass
class Desk:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Callable[[], datetime] = system_clock

    @contextmanager
    def unit_of_work(self, *, readonly: bool = False) -> Iterator[Session]:
        with unit_of_work(self.sessions, readonly=readonly) as session:
            yield session


def build_desk(settings: Settings | None = None, *, clock: Callable[[], datetime] = system_clock) -> Desk:
    """Create the engine and session factory (no connection is opened yet)."""
    settings = settings or load_settings()
    engine = make_engine(settings)
    return Desk(settings, engine, make_session_factory(engine), clock)
