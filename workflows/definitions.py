"""Process definitions: validate, deploy as immutable content-hashed versions, load parsed."""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.errors import DefinitionError, Problem
from engine.runtime import Definition, content_hash
from engine.validate import executable_process_id, validate
from engine.xmlload import load_xml

from . import audit
from .errors import NotFound, PermissionDenied
from .models import DefinitionContent, ProcessVersion, User
from .operations import vocabulary
from .settings import Settings

_CACHE_SIZE = 32
_cache: OrderedDict[tuple[str, str], Definition] = OrderedDict()
_cache_lock = threading.Lock()


def validate_definition(session: Session, settings: Settings, xml: bytes, filename: str) -> list[Problem]:
    """Every problem deploying ``xml`` would meet; [] when it can be deployed."""
    return validate(xml, filename, vocabulary(session, settings))


def deploy_definition(
    session: Session,
    settings: Settings,
    *,
    xml: bytes,
    filename: str,
    now: datetime,
    actor: User | None = None,
    note: str = "",
) -> tuple[ProcessVersion, bool]:
    """Validate and store ``xml`` as the next version of its process.

    Returns ``(version, created)``; deploying content identical to the latest version returns
    that version unchanged. Raises :class:`DefinitionError` listing every problem.
    """
    if actor is not None and actor.role not in ("owner", "admin"):
        raise PermissionDenied(f"{actor.email} is an {actor.role}; only process owners and admins deploy")
    problems = validate_definition(session, settings, xml, filename)
    if problems:
        raise DefinitionError(problems)
    process_id = executable_process_id(load_xml(xml, filename))
    digest = content_hash(xml)
    latest = latest_version(session, process_id)
    if latest is not None and latest.content_hash == digest:
        return latest, False
    if session.get(DefinitionContent, digest) is None:
        session.add(DefinitionContent(content_hash=digest, xml=xml, size=len(xml)))
    number = (
        session.scalar(
            select(func.max(ProcessVersion.version)).where(ProcessVersion.process_id == process_id)
        )
        or 0
    ) + 1
    version = ProcessVersion(
        process_id=process_id,
        version=number,
        content_hash=digest,
        filename=filename,
        note=note,
        deployed_by_id=actor.id if actor else None,
        deployed_at=now,
    )
    session.add(version)
    session.flush()
    audit.record(
        session,
        ticket_id=None,
        actor=audit.actor_of(actor),
        action="definition_deployed",
        now=now,
        detail=f"{process_id} v{number} ({digest[:12]})",
        data={"process_id": process_id, "version": number, "hash": digest, "note": note},
    )
    return version, True


def latest_version(session: Session, process_id: str) -> ProcessVersion | None:
    return session.scalar(
        select(ProcessVersion)
        .where(ProcessVersion.process_id == process_id)
        .order_by(ProcessVersion.version.desc())
        .limit(1)
    )


def require_latest_version(session: Session, process_id: str) -> ProcessVersion:
    version = latest_version(session, process_id)
    if version is None:
        raise NotFound(f"no deployed process {process_id!r}; deploy it with `lanedesk deploy FILE.bpmn`")
    return version


def get_version(session: Session, process_id: str, number: int) -> ProcessVersion:
    """Version ``number`` of ``process_id``; NotFound when there is none."""
    found = session.scalar(
        select(ProcessVersion).where(
            ProcessVersion.process_id == process_id, ProcessVersion.version == number
        )
    )
    if found is None:
        raise NotFound(f"{process_id} has no version {number}")
    return found


def load_definition(session: Session, version: ProcessVersion) -> Definition:
    """The parsed definition of ``version``, parsed once per process and kept (LRU)."""
    key = (version.content_hash, version.process_id)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return cached
    content = session.get(DefinitionContent, version.content_hash)
    if content is None:  # a foreign key makes this impossible short of manual deletes
        raise NotFound(f"definition content {version.content_hash} is missing")
    definition = Definition.parse(content.xml, version.filename, version.process_id)
    with _cache_lock:
        _cache[key] = definition
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return definition
