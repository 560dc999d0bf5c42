"""Agents, owners and admins, and the groups that lanes name."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from . import audit
from .errors import Conflict, InvalidInput, NotFound
from .models import ApiToken, Group, User
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


# -- passwords (argon2id) and API tokens -------------------------------------------------------
MIN_PASSWORD = 10
_hasher = PasswordHasher()
#: Verified against when the e-mail is unknown, so "no such user" costs what a wrong password does.
_DUMMY_HASH = _hasher.hash("lanedesk: no such user")


def set_password(session: Session, user: User, password: str, *, now: datetime) -> None:
    """Give ``user`` a password (argon2id); refuse short ones."""
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise InvalidInput("a password may have at most 1024 characters")
    user.password_hash = _hasher.hash(password)
    audit.record(
        session, ticket_id=None, actor=audit.SYSTEM, action="password_set", now=now, detail=user.email
    )


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The user with this e-mail and password, else None (same work either way)."""
    try:
        address = normalise_email(email)
    except InvalidInput:
        address = ""
    user = session.scalar(select(User).where(User.email == address)) if address else None
    stored = user.password_hash if user is not None and user.password_hash else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or not user.password_hash:
        return None
    if _hasher.check_needs_rehash(stored):
        user.password_hash = _hasher.hash(password)
    return user


def new_api_token(session: Session, user: User, name: str, *, now: datetime) -> str:
    """Create an API token for ``user``; the plain token is returned once and stored hashed."""
    if not name.strip() or len(name) > 100:
        raise InvalidInput("an API token needs a name of 1-100 characters")
    plain = "ld_" + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, name=name.strip(), token_hash=_token_hash(plain), created_at=now))
    audit.record(
        session,
        ticket_id=None,
        actor=audit.SYSTEM,
        action="api_token_created",
        now=now,
        detail=f"{user.email}: {name}",
    )
    return plain


def api_tokens(session: Session, user: User) -> list[ApiToken]:
    """``user``'s API tokens, oldest first (revoked ones too)."""
    query = select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.created_at, ApiToken.id)
    return list(session.scalars(query))


def revoke_api_tokens(session: Session, user: User, name: str, *, now: datetime) -> int:
    """Revoke ``user``'s live tokens named ``name``; how many. Refuses when there are none."""
    live = [t for t in api_tokens(session, user) if t.name == name.strip() and t.revoked_at is None]
    if not live:
        raise NotFound(f"{user.email} has no live API token named {name!r}")
    for token in live:
        token.revoked_at = now
    audit.record(
        session,
        ticket_id=None,
        actor=audit.SYSTEM,
        action="api_token_revoked",
        now=now,
        detail=f"{user.email}: {name.strip()}",
        data={"count": len(live)},
    )
    return len(live)


def user_for_token(session: Session, plain: str, *, now: datetime) -> User | None:
    """The user an API token belongs to (None for an unknown or revoked token)."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _token_hash(plain)))
    if row is None or row.revoked_at is not None:
        return None
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=5):
        row.last_used_at = now  # coarse: a busy integration does not write on every call
    return session.get(User, row.user_id)


def _token_hash(plain: str) -> str:
    return hashlib.sha256(plain.encode()).hexdigest()
