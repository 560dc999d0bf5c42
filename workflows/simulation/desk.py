"""The throwaway desk a simulation runs in: a copy of an empty database, the live desk's
settings without SMTP, the SLA configuration (on the scenario's calendar, if it names one),
simulated group leads, and the draft deployed."""

from __future__ import annotations

import atexit
import copy
import dataclasses
import hashlib
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import migrate, sla, users
from ..app import Desk, build_desk
from ..db import make_engine
from ..definitions import deploy_definition
from ..models import Group, User
from ..settings import Settings

#: Guards the per-process directory and what is written into it once (template, SLA files).
_lock = threading.Lock()
_shared: Path | None = None
_template: Path | None = None


@contextmanager
def throwaway_desk(settings: Settings, calendar: str | None) -> Iterator[Desk]:
    """A desk on a fresh copy of the empty database in a temporary directory, removed afterwards.

    No SMTP and a key of its own (signing nothing anyone sees); the live desk's SLA calendars,
    time zone, lane mapping, mail domain and addresses. With a ``calendar``, every SLA clock
    uses that calendar.
    """
    with tempfile.TemporaryDirectory(prefix="lanedesk-sim-") as tmp:
        directory = Path(tmp)
        database = directory / "desk.db"
        shutil.copyfile(_template_database(), database)
        desk = build_desk(
            dataclasses.replace(
                settings,
                data_dir=directory,
                database_url=f"sqlite:///{database}",
                sql_echo=False,
                smtp=None,
                secret_key=secrets.token_hex(32),
                broker_url=f"sqla+sqlite:///{directory / 'broker.db'}",
                sla_config=_sla_file(settings.sla_config, calendar),
            )
        )
        try:
            yield desk
        finally:
            desk.engine.dispose()


def _shared_directory() -> Path:
    """A temporary directory kept for the life of the process (call with ``_lock`` held)."""
    global _shared
    if _shared is None or not _shared.exists():
        _shared = Path(tempfile.mkdtemp(prefix="lanedesk-sim-shared-"))
        atexit.register(shutil.rmtree, _shared, ignore_errors=True)
    return _shared


def _template_database() -> Path:
    """An empty desk database made by the migrations, once per process (0.4 s); runs copy it (1 ms)."""
    global _template
    with _lock:
        if _template is None or not _template.exists():
            path = _shared_directory() / "template.db"
            path.unlink(missing_ok=True)  # left by a migration that failed
            engine = make_engine(Settings(database_url=f"sqlite:///{path}"))
            try:
                migrate.upgrade(engine)
            finally:
                engine.dispose()  # the last connection closes: the WAL is checkpointed into the file
            _template = path
        return _template


def _sla_file(source: Path | None, calendar: str | None) -> Path | None:
    """The live SLA file ``source``; with a ``calendar``, a copy in which every clock uses that one.

    The copy is written once per calendar and version (path, modification time) of the live
    file, and kept for the process. Why: ``sla.load_sla_config`` caches 8 configurations by path
    and modification time; a new file per run took a new entry each time and could push the live
    desk's configuration out of the cache.
    """
    if calendar is None:
        return source
    version = "built-in defaults" if source is None else f"{source.resolve()}@{source.stat().st_mtime_ns}"
    key = hashlib.sha256(f"{version}\n{calendar}".encode()).hexdigest()[:16]
    with _lock:
        path = _shared_directory() / f"sla-{key}.yaml"
        if not path.exists():
            partial = path.with_suffix(".partial")  # a run never reads a half-written file
            text = yaml.safe_dump(_on_calendar(source, calendar), sort_keys=False)
            partial.write_text(text, encoding="utf-8")
            partial.replace(path)
        return path


def _on_calendar(source: Path | None, calendar: str) -> dict[str, Any]:
    """The SLA configuration of ``source`` (None: the defaults) with every clock on ``calendar``."""
    data: dict[str, Any] = (
        yaml.safe_load(source.read_text(encoding="utf-8")) if source else copy.deepcopy(sla.DEFAULT_CONFIG)
    )
    for policy in data["policies"]:
        policy["calendar"] = calendar
    data["group_calendars"] = {}
    for spec in (data.get("calendars") or {}).values():
        closures = spec.get("holidays") if isinstance(spec, dict) else None
        if source is not None and isinstance(closures, dict) and closures.get("ical"):
            closures["ical"] = str(source.parent / str(closures["ical"]))  # relative to the live file
    return data


def prepare(
    session: Session, settings: Settings, xml: bytes, filename: str, groups: Mapping[str, str], now: datetime
) -> str:
    """Groups (each with a simulated lead, who gets what the group would) and the draft, deployed."""
    users.ensure_default_groups(session)
    wanted = {**groups, **{slug: slug for slug in settings.lane_groups.values() if slug not in groups}}
    existing = set(session.scalars(select(Group.slug)))
    session.add_all(Group(slug=slug, name=name) for slug, name in wanted.items() if slug not in existing)
    session.flush()
    for group in session.scalars(select(Group).order_by(Group.slug)).all():
        name = f"{group.name} lead (simulated)"
        lead = _lead_address(group.slug)
        users.add_user(session, email=lead, role="agent", groups=[], lead_of=[group.slug], name=name, now=now)
    version, _ = deploy_definition(session, settings, xml=xml, filename=filename, now=now, note="simulation")
    return version.process_id


def acting_agent(session: Session, email: str | None, group: Group | None, now: datetime) -> User:
    """The acting agent (created on first use), a member of ``group``; by default its lead."""
    if email is None:
        email = _lead_address(group.slug) if group is not None else "agent@simulation.invalid"
    user = session.scalar(select(User).where(User.email == email))
    if user is None:
        groups = [group.slug] if group is not None else []
        user = users.add_user(
            session, email=email, role="agent", groups=groups, name=f"{email} (simulated)", now=now
        )
    elif group is not None and group not in user.groups:
        user.groups.append(group)
    return user


def _lead_address(slug: str) -> str:
    return f"{slug}-lead@simulation.invalid"
