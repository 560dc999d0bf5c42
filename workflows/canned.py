"""Canned responses: reply texts agents insert into the composer. Admins keep them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import audit
from .errors import Conflict, InvalidInput, NotFound, PermissionDenied
from .models import CannedResponse, User

MAX_TITLE = 200
MAX_BODY = 20_000


def _admin(user: User) -> None:
    if user.role != "admin":
        raise PermissionDenied(f"{user.email} is not an admin; only admins keep canned responses")


def add_canned(session: Session, *, title: str, body: str, by: User, now: datetime) -> CannedResponse:
    _admin(by)
    title, body = " ".join(title.split()), body.strip()
    if not title or len(title) > MAX_TITLE:
        raise InvalidInput(f"a canned response needs a title of 1-{MAX_TITLE} characters")
    if not body or len(body) > MAX_BODY:
        raise InvalidInput(f"a canned response needs a text of 1-{MAX_BODY:,} characters")
    if session.scalar(select(CannedResponse.id).where(CannedResponse.title == title)) is not None:
        raise Conflict(f"a canned response “{title}” already exists; remove it first")
    row = CannedResponse(title=title, body=body, created_at=now)
    session.add(row)
    audit.record(
        session, ticket_id=None, actor=audit.actor_of(by), action="canned_added", now=now, detail=title
    )
    return row


def remove_canned(session: Session, *, title: str, by: User, now: datetime) -> None:
    _admin(by)
    row = session.scalar(select(CannedResponse).where(CannedResponse.title == " ".join(title.split())))
    if row is None:
        raise NotFound(f"no canned response “{title}”")
    session.delete(row)
    audit.record(
        session, ticket_id=None, actor=audit.actor_of(by), action="canned_removed", now=now, detail=title
    )


def list_canned(session: Session) -> list[CannedResponse]:
    return list(session.scalars(select(CannedResponse).order_by(CannedResponse.title)))
