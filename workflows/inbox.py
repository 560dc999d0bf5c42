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
from sqlalchemy.orm import Session, contains_eager, defaultload, defer

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


def _task_filter(
    user: User, *, view: str, group_id: int | None, sla: str | None, now: datetime
) -> list[ColumnElement[bool]]:
    """Conditions on ``human_task`` alone (its partial indexes serve every view)."""
    where = [HumanTask.state == "open", visible(user)]
    if view == "mine":
        where.append(HumanTask.assignee_id == user.id)
    elif view == "groups":
        where.append(HumanTask.assignee_id.is_(None))
        if user.role != "admin":
            mine = [g.id for g in user.groups]
            where.append(HumanTask.group_id.in_(mine) if mine else false())
    if group_id is not None:
        where.append(HumanTask.group_id == group_id)
    if sla == "breached":
        where.append(HumanTask.sla_due_at <= now)
    elif sla == "ok":
        where.append(HumanTask.sla_due_at > now)
    elif sla == "none":
        where.append(HumanTask.sla_due_at.is_(None))
    return where


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
    """One page of ``user``'s inbox (unknown filter values are treated as none).

    Three queries: the count and the page's task ids from ``human_task`` alone (a priority
    filter or sort adds the ticket), then those tasks with their tickets, requesters, groups and
    holders, then their SLA clocks. At 10,000 open tasks each takes about a millisecond.
    """
    view = view if view in VIEWS else "all"
    sort = sort if sort in SORTS else "urgency"
    priority = priority if priority in PRIORITIES else None
    sla = sla if sla in ("breached", "ok", "none") else None
    group_id = None
    if group:
        group_id = session.scalar(select(Group.id).where(Group.slug == group))
        if group_id is None:
            return InboxPage([], 0, 1, 1)
    where = _task_filter(user, view=view, group_id=group_id, sla=sla, now=now)
    needs_ticket = priority is not None or sort == "priority"
    if priority is not None:
        where.append(Ticket.priority == priority)

    def scoped(query: Select[Any]) -> Select[Any]:
        query = query.where(*where)
        return query.join(Ticket, Ticket.id == HumanTask.ticket_id) if needs_ticket else query

    total = session.scalar(scoped(select(func.count(HumanTask.id)).select_from(HumanTask))) or 0
    pages = max(1, -(-total // page_size))
    page = min(max(page, 1), pages)
    due = HumanTask.sla_due_at.asc().nulls_last()
    order = {
        "urgency": (due, HumanTask.created_at, HumanTask.id),
        "oldest": (HumanTask.created_at, HumanTask.id),
        "newest": (HumanTask.created_at.desc(), HumanTask.id.desc()),
        "priority": (Ticket.priority, due, HumanTask.id),
    }[sort]
    ids = list(
        session.scalars(
            scoped(select(HumanTask.id)).order_by(*order).limit(page_size).offset((page - 1) * page_size)
        )
    )
    if not ids:
        return InboxPage([], total, page, pages)
    loaded = {
        task.id: task
        for task in session.scalars(
            select(HumanTask)
            .join(HumanTask.ticket)
            .join(Ticket.requester)
            .where(HumanTask.id.in_(ids))
            .options(
                defer(HumanTask.form),  # JSON the inbox does not show: 2 ms a page to decode
                contains_eager(HumanTask.ticket).contains_eager(Ticket.requester),
                contains_eager(HumanTask.ticket).lazyload(Ticket.group),
                defaultload(HumanTask.assignee).lazyload(User.groups),
            )
        ).unique()
    }
    tasks = [loaded[i] for i in ids if i in loaded]
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
