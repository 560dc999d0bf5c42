"""Agents, owners and admins, and the groups that lanes name."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import audit
from .errors import Conflict, InvalidInput, NotFound
from .models import Group, User
from .tickets import normalise_email

ROLES = ("agent", "owner", "admin")
DEFAULT_GROUPS = {"tier-1": "Tier 1", "tier-2": "Tier 2", "tier-3": "Tier 3", "engineering": "Engineering"}


def ensure_default_groups(session: Session) -> list[Group]:
    """Create the groups the bundled lifecycle's lanes name, if missing (idempotent)."""
    existing = {g.slug for g in session.scalars(select(Group))}
    created = [Group(slug=slug, name=name) for slug, name in DEFAULT_GROUPS.items() if slug not in existing]
    session.add_all(created)
    session.flush()
    return created


def add_user(
    session: Session,
    *,
    email: str,
    role: str,
    groups: list[str],
    name: str = "",
    now: datetime,
    lead_of: list[str] | None = None,
) -> User:
    """Create a user in ``groups`` (and lead of ``lead_of``, which makes them a member too).

    Refuses unknown roles, unknown groups and duplicates. A group's lead is told when a ticket
    is escalated into it; a new lead replaces the old one.
    """
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}; got {role!r}")
    lead_of = list(lead_of or [])
    groups = sorted(set(groups) | set(lead_of))
    address = normalise_email(email)
    if session.scalar(select(User).where(User.email == address)) is not None:
        raise Conflict(f"a user {address} already exists")
    found = list(session.scalars(select(Group).where(Group.slug.in_(groups))))
    missing = sorted(set(groups) - {g.slug for g in found})
    if missing:
        known = ", ".join(sorted(session.scalars(select(Group.slug)))) or "none"
        raise NotFound(f"no group {', '.join(missing)} (known groups: {known})")
    user = User(email=address, name=name or address.split("@")[0], role=role, groups=found, created_at=now)
    session.add(user)
    session.flush()
    for group in found:
        if group.slug in lead_of:
            group.lead_id = user.id
    audit.record(
        session,
        ticket_id=None,
        actor=audit.SYSTEM,
        action="user_added",
        now=now,
        detail=f"{address} as {role}",
        data={"groups": sorted(groups), "lead_of": sorted(lead_of)},
    )
    return user


def get_user(session: Session, email: str) -> User:
    user = session.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None:
        raise NotFound(f"no user {email}; add one with `lanedesk user add`")
    return user
