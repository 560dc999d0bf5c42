"""The agent's inbox: open tasks they may work on, most urgent first, in three queries per page.

Who sees what: an admin every task; anyone else the tasks of their groups, and any task they
hold. Views: ``mine`` (held by me), ``groups`` (my groups', held by nobody), ``all`` (every
open task I may see; for leads and admins the whole desk's queue of their groups).
Urgency is the ticket's earliest running-or-breached SLA due time (``ticket.sla_due_at``,
indexed); the share of the target used, which colours a row, is computed for the page only.

Two shapes of the same page: :func:`inbox` (ORM objects, for the JSON API) and
:func:`inbox_lines` (plain values from Core rows, for the workspace's HTML, about half the CPU).
:func:`inbox_revision` tells a cache whether anything an inbox shows may have changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Select, bindparam, false, func, or_, select, true
from sqlalchemy.orm import Session, aliased

from .calendars import ALWAYS_OPEN, BusinessCalendar
from .models import TICKET_NUMBER_OFFSET, Customer, Group, HumanTask, InboxRevision, SlaClock, Ticket, User
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


@dataclass(frozen=True, slots=True)
class TaskLine:
    """One inbox row as plain values: what the workspace shows of a task and its ticket."""

    task_id: str
    name: str
    element_id: str
    group: str | None
    group_slug: str | None
    assignee_id: int | None
    assignee: str | None
    assignee_email: str | None
    ticket_number: int
    subject: str
    status: str
    priority: str
    requester: str
    requester_email: str
    created_at: datetime
    claimed_at: datetime | None
    urgency: Urgency


@dataclass(frozen=True)
class InboxLines:
    lines: list[TaskLine]
    total: int
    page: int
    pages: int


@dataclass(frozen=True)
class _Chosen:
    ids: list[str]
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


def _choose(
    session: Session,
    user: User,
    *,
    now: datetime,
    view: str,
    group: str | None,
    priority: str | None,
    sla: str | None,
    sort: str,
    page: int,
    page_size: int,
) -> _Chosen:
    """The count and the page's task ids, from ``human_task`` alone (a priority filter or sort adds
    the ticket)."""
    view = view if view in VIEWS else "all"
    sort = sort if sort in SORTS else "urgency"
    priority = priority if priority in PRIORITIES else None
    sla = sla if sla in ("breached", "ok", "none") else None
    group_id = None
    if group:
        group_id = session.scalar(select(Group.id).where(Group.slug == group))
        if group_id is None:
            return _Chosen([], 0, 1, 1)
    where = _task_filter(user, view=view, group_id=group_id, sla=sla, now=now)
    needs_ticket = priority is not None or sort == "priority"
    if priority is not None:
        where.append(Ticket.priority == priority)

    def scoped(query: Select[Any]) -> Select[Any]:
        query = query.where(*where)
        return query.join(Ticket, Ticket.id == HumanTask.ticket_id) if needs_ticket else query

    # count(*), not count(id): an index-only scan of the partial indexes (5x less on 10,000 tasks)
    total = session.scalar(scoped(select(func.count()).select_from(HumanTask))) or 0
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
    return _Chosen(ids, total, page, pages)


_holder = aliased(User)
#: TaskLine's fields in their order (but the urgency, computed here), then the ticket's id.
_LINE_COLUMNS = (
    HumanTask.id,
    HumanTask.name,
    HumanTask.element_id,
    Group.name,
    Group.slug,
    HumanTask.assignee_id,
    _holder.name,
    _holder.email,
    (HumanTask.ticket_id + TICKET_NUMBER_OFFSET).label("ticket_number"),
    Ticket.subject,
    Ticket.status,
    Ticket.priority,
    Customer.name,
    Customer.email,
    HumanTask.created_at,
    HumanTask.claimed_at,
    HumanTask.ticket_id,
)
assert len(_LINE_COLUMNS) == len(fields(TaskLine)), "a column for each field but the urgency, and the id"
#: Built once (a page's ids are a bound list): composing it per request cost more than running it.
_LINES = (
    select(*_LINE_COLUMNS)
    .join(Ticket, Ticket.id == HumanTask.ticket_id)
    .join(Customer, Customer.id == Ticket.requester_id)
    .outerjoin(Group, Group.id == HumanTask.group_id)
    .outerjoin(_holder, _holder.id == HumanTask.assignee_id)
    .where(HumanTask.id.in_(bindparam("ids", expanding=True)))
)


def inbox_lines(
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
) -> InboxLines:
    """One page of ``user``'s inbox (unknown filter values are treated as none), as plain values
    read from Core rows (no identity map, no relationship loading).

    Three queries: the count and the page's task ids from ``human_task`` alone (a priority
    filter or sort adds the ticket), then those tasks with their tickets, requesters, groups and
    holders, then their SLA clocks. At 10,000 open tasks each takes about a millisecond.
    """
    chosen = _choose(
        session,
        user,
        now=now,
        view=view,
        group=group,
        priority=priority,
        sla=sla,
        sort=sort,
        page=page,
        page_size=page_size,
    )
    lines: list[TaskLine] = []
    if chosen.ids:
        found = {row[0]: row for row in session.execute(_LINES, {"ids": chosen.ids})}
        rows = [found[i] for i in chosen.ids if i in found]
        clocks = _clock_rows(session, [row.ticket_id for row in rows])
        config = load_sla_config(settings)
        for *columns, ticket_id in rows:
            values = (*columns, urgency(clocks.get(ticket_id, []), config, now))
            lines.append(TaskLine(*values))
    return InboxLines(lines, chosen.total, chosen.page, chosen.pages)


def inbox_revision(session: Session) -> int | None:
    """The committed revision of everything an inbox shows (:class:`~.models.InboxRevision`);
    None when its row is missing (then nothing may be kept).

    Read it *before* the page: under READ COMMITTED each statement sees at least the changes of
    the revisions before it, so a page read afterwards is never older than the number.
    """
    # Core on the session's connection: this runs on every inbox request, kept page or not.
    query = select(InboxRevision.value).where(InboxRevision.id == 1)
    value: int | None = session.connection().execute(query).scalar()
    return value


def clocks_of(session: Session, ticket_ids: list[int]) -> dict[int, list[SlaClock]]:
    found: dict[int, list[SlaClock]] = {}
    if ticket_ids:
        for clock in session.scalars(select(SlaClock).where(SlaClock.ticket_id.in_(set(ticket_ids)))):
            found.setdefault(clock.ticket_id, []).append(clock)
    return found


class ClockState(Protocol):
    """What :func:`urgency` reads of an SLA clock: a :class:`SlaClock` or a row of its columns."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def calendar(self) -> str: ...
    @property
    def target_seconds(self) -> int: ...
    @property
    def elapsed_seconds(self) -> int: ...
    @property
    def running_since(self) -> datetime | None: ...
    @property
    def due_at(self) -> datetime | None: ...


#: What :func:`urgency` reads of an SLA clock (and whose clock it is): every page showing SLA
#: state selects these.
CLOCK_COLUMNS = (
    SlaClock.id,
    SlaClock.ticket_id,
    SlaClock.name,
    SlaClock.state,
    SlaClock.calendar,
    SlaClock.target_seconds,
    SlaClock.elapsed_seconds,
    SlaClock.running_since,
    SlaClock.due_at,
)
_LIVE_CLOCKS = select(*CLOCK_COLUMNS).where(
    SlaClock.ticket_id.in_(bindparam("ids", expanding=True)), SlaClock.state.in_(("running", "paused"))
)


def _clock_rows(session: Session, ticket_ids: list[int]) -> dict[int, list[ClockState]]:
    """:func:`clocks_of` as plain rows of the columns :func:`urgency` reads (live clocks only)."""
    found: dict[int, list[ClockState]] = {}
    if ticket_ids:
        for row in session.execute(_LIVE_CLOCKS, {"ids": sorted(set(ticket_ids))}):
            found.setdefault(row.ticket_id, []).append(row)
    return found


def _elapsed(clock: ClockState, calendar: BusinessCalendar, now: datetime) -> int:
    """:func:`workflows.sla.elapsed` of a clock or a row."""
    if clock.state == "running" and clock.running_since is not None:
        return clock.elapsed_seconds + calendar.seconds_between(clock.running_since, now)
    return clock.elapsed_seconds


def urgency(clocks: Sequence[ClockState], config: SlaConfig, now: datetime) -> Urgency:
    """The most urgent clock of a ticket and how much of its target is used (business time)."""
    live = [c for c in clocks if c.state in ("running", "paused") and c.target_seconds > 0]
    if not live:
        return Urgency(None, None, None, "none")
    best: tuple[float, ClockState] | None = None
    for clock in live:
        calendar = config.calendar(clock.calendar, ALWAYS_OPEN.name)
        used = _elapsed(clock, calendar, now) / clock.target_seconds
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
