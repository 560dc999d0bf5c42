"""First-start preparation for `lanedesk run` and `lanedesk db upgrade`."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from . import migrate
from .app import Desk
from .definitions import deploy_definition
from .models import Ticket, User
from .tickets import open_ticket, reference
from .users import add_user, ensure_default_groups, set_password

log = logging.getLogger(__name__)

#: (email, role, groups, groups led, name): Lukas leads Tiers 1 and 2, Eva Tier 3 and engineering.
DEMO_USERS = [
    ("triage@demo.lanedesk", "agent", ["tier-1"], [], "Tereza Triage"),
    ("lead@demo.lanedesk", "agent", [], ["tier-1", "tier-2"], "Lukas Lead"),
    ("expert@demo.lanedesk", "agent", [], ["tier-3", "engineering"], "Eva Expert"),
    ("owner@demo.lanedesk", "owner", [], [], "Oskar Owner"),
    ("admin@demo.lanedesk", "admin", [], [], "Ada Admin"),
]
DEMO_TICKETS = [
    (
        "jana@customer.example",
        "Cannot log in since this morning",
        "Hi, the login page says my password is wrong.",
    ),
    ("petr@customer.example", "Invoice 2026-113 has the wrong VAT number", "Please correct our VAT number."),
    ("ops@customer.example", "Please add dark mode", "Our night shift would love a dark theme."),
]


@dataclass
class Prepared:
    deployed: list[str] = field(default_factory=list)
    demo_tickets: list[str] = field(default_factory=list)
    demo_password: str | None = None  # of every demo user, kept in <data_dir>/demo_password


def upgrade_database(desk: Desk) -> list[str]:
    """Apply migrations and create the default groups; returns the groups created."""
    migrate.upgrade(desk.engine)
    with desk.unit_of_work() as session:
        return [g.slug for g in ensure_default_groups(session)]


def deploy_bundled(desk: Desk, directory: Path | None = None) -> list[str]:
    """Deploy every bundled diagram (LANEDESK_BPMN_DIR) whose content is not yet the latest version."""
    directory = directory or desk.settings.bpmn_dir
    if not directory.is_dir():
        raise FileNotFoundError(f"no diagram folder {directory}; set LANEDESK_BPMN_DIR")
    deployed = []
    for path in sorted(directory.glob("*.bpmn")):
        with desk.unit_of_work() as session:
            version, created = deploy_definition(
                session,
                desk.settings,
                xml=path.read_bytes(),
                filename=path.name,
                now=desk.clock(),
                note="bundled diagram",
            )
            if created:
                deployed.append(f"{version.process_id} v{version.version}")
    return deployed


def prepare(desk: Desk, *, demo: bool = True) -> Prepared:
    """Migrate, deploy the bundled diagrams and, on an empty desk, add demo users and tickets."""
    upgrade_database(desk)
    result = Prepared(deployed=deploy_bundled(desk))
    with desk.unit_of_work() as session:
        empty = not session.scalar(select(func.count()).select_from(User)) and not session.scalar(
            select(func.count()).select_from(Ticket)
        )
        if demo and empty:
            now = desk.clock()
            password = demo_password(desk)
            for email, role, groups, leads, name in DEMO_USERS:
                user = add_user(
                    session, email=email, role=role, groups=groups, name=name, now=now, lead_of=leads
                )
                set_password(session, user, password, now=now)
            for sender, subject, body in DEMO_TICKETS:
                ticket = open_ticket(
                    session, desk.settings, requester=sender, subject=subject, body=body, now=now
                )
                result.demo_tickets.append(reference(desk.settings, ticket))
    if (desk.settings.data_dir / DEMO_PASSWORD_FILE).exists():
        result.demo_password = demo_password(desk)
    return result


DEMO_PASSWORD_FILE = "demo_password"


def demo_password(desk: Desk) -> str:
    """The demo users' password: made once per desk (random), kept in a 0600 file beside it."""
    path = desk.settings.data_dir / DEMO_PASSWORD_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("demo-" + secrets.token_urlsafe(9))
    return path.read_text(encoding="ascii").strip()
