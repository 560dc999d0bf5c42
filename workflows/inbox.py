"""The agent's inbox: open tasks they may work on, most urgent first, in two queries per page.

Who sees what: an admin every task; anyone else the tasks of their groups, and any task they
hold. Views: ``mine`` (held by me), ``groups`` (my groups', held by nobody), ``all`` (every
open task I may see; for leads and admins the whole desk's queue of their groups).
Urgency is the ticket's earliest running-or-breached SLA due time (``ticket.sla_due_at``,
indexed); the share of the target used, which colours a row, is computed for the page only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, false, func, or_, select, true
from sqlalchemy.orm import Session, contains_eager

from . import sla
from .calendars import ALWAYS_OPEN
from .models import Group, HumanTask, SlaClock, Ticket, User
from .settings import Settings
from .sla import PRIORITIES, SlaConfig, load_sla_config

VIEWS = ("mine", "groups", "all")
SORTS = ("urgency", "oldest", "newest", "priority")
SLA_STATES = ("breached", "at_risk", "ok", "none")
PAGE_SIZE = 50
#: A clock at or beyond this share of its target is "at risk" (amber); at 1.0 it is breached.
AT_RISK = 0.75


@dataclass(frozen=True)
class Urgency:
    clock: str | None
    due_at: datetime | None
    used: float | None  # share of the target used (0.0-1.0+), None without a running clock
    state: str  # breached | at_risk | ok | paused | none

    @property
    def percent(self) -> int | None:
        return None if self.used is None else round(self.used * 100)


@dataclass(frozen=True)
class InboxRow:
    task: HumanTask
    ticket: Ticket
    urgency: Urgency


@dataclass(frozen=True)
class InboxPage:
    rows: list[InboxRow]
    total: int
    page: int
    pages: int


def visible(user: User) -> ColumnElement[bool]:
    """The condition for tasks ``user`` may see."""
    if user.role == "admin":
        return true()
    groups = [g.id for g in user.groups]
    return or_(HumanTask.group_id.in_(groups) if groups else false(), HumanTask.assignee_id == user.id)


def _query(
    user: User, *, view: str, group: str | None, priority: str | None, sla: str | None, now: datetime
) -> Select[Any]:
    query = (
        select(HumanTask)
        .join(HumanTask.ticket)
        .join(Ticket.requester)
        .outerjoin(HumanTask.group)
        .where(HumanTask.state == "open", visible(user))
    )
    if view == "mine":
        query = query.where(HumanTask.assignee_id == user.id)
    elif view == "groups":
        mine = [g.id for g in user.groups]
        query = query.where(HumanTask.assignee_id.is_(None))
        if user.role != "admin":
            query = query.where(HumanTask.group_id.in_(mine) if mine else false())
    if group:
        query = query.where(Group.slug == group)
    if priority:
        query = query.where(Ticket.priority == priority)
    if sla == "breached":
        query = query.where(Ticket.sla_due_at <= now)
    elif sla == "ok":
        query = query.where(Ticket.sla_due_at > now)
    elif sla == "none":
        query = query.where(Ticket.sla_due_at.is_(None))
    return query


def inbox(
    session: Session,
    settings: Settings,
    user: User,
    *,
    now: datetime,
    view: str = "all",
    group: str | None = None,
    priority: str | None = None,
    sla: str | None = None,
    sort: str = "urgency",
    page: int = 1,
    page_size: int = PAGE_SIZE,
) -> InboxPage:
    """One page of ``user``'s inbox (unknown filter values are treated as none)."""
    view = view if view in VIEWS else "all"
    sort = sort if sort in SORTS else "urgency"
    priority = priority if priority in PRIORITIES else None
    sla = sla if sla in ("breached", "ok", "none") else None
    base = _query(user, view=view, group=group, priority=priority, sla=sla, now=now)
    total = session.scalar(select(func.count()).select_from(base.order_by(None).subquery())) or 0
    pages = max(1, -(-total // page_size))
    page = min(max(page, 1), pages)
    order = {
        "urgency": (Ticket.sla_due_at.is_(None), Ticket.sla_due_at, HumanTask.created_at),
        "oldest": (HumanTask.created_at, HumanTask.id),
        "newest": (HumanTask.created_at.desc(), HumanTask.id.desc()),
        "priority": (Ticket.priority, Ticket.sla_due_at.is_(None), Ticket.sla_due_at),
    }[sort]
    tasks = session.scalars(
        base.options(contains_eager(HumanTask.ticket).contains_eager(Ticket.requester))
        .options(contains_eager(HumanTask.group))
        .order_by(*order)
        .limit(page_size)
        .offset((page - 1) * page_size)
    ).all()
    clocks = clocks_of(session, [t.ticket_id for t in tasks])
    config = load_sla_config(settings)
    rows = [InboxRow(t, t.ticket, urgency(clocks.get(t.ticket_id, []), config, now)) for t in tasks]
    return InboxPage(rows, total, page, pages)


def clocks_of(session: Session, ticket_ids: list[int]) -> dict[int, list[SlaClock]]:
    found: dict[int, list[SlaClock]] = {}
    if ticket_ids:
        for clock in session.scalars(select(SlaClock).where(SlaClock.ticket_id.in_(set(ticket_ids)))):
            found.setdefault(clock.ticket_id, []).append(clock)
    return found


def urgency(clocks: list[SlaClock], config: SlaConfig, now: datetime) -> Urgency:
    """The most urgent clock of a ticket and how much of its target is used (business time)."""
    live = [c for c in clocks if c.state in ("running", "paused") and c.target_seconds > 0]
    if not live:
        return Urgency(None, None, None, "none")
    best: tuple[float, SlaClock] | None = None
    for clock in live:
        calendar = config.calendar(clock.calendar, ALWAYS_OPEN.name)
        used = sla.elapsed(clock, calendar, now) / clock.target_seconds
        if best is None or used > best[0]:
            best = (used, clock)
    assert best is not None
    used, clock = best
    if clock.state == "paused":
        state = "paused"
    elif used >= 1:
        state = "breached"
    elif used >= AT_RISK:
        state = "at_risk"
    else:
        state = "ok"
    return Urgency(clock.name, clock.due_at, used, state)
