"""The desk operations a diagram may call, and the vocabulary deploy-time validation checks.

Scripts in a diagram call these as plain functions (``set_status("open")``). Each call is
validated, applied to the ticket in the step's transaction and written to the audit trail.
Timers call :meth:`DeskOperations.sla_due`, which returns an aware datetime.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.lint import lane_slug
from engine.validate import Vocabulary

from . import audit, outbox, sla, templates
from .calendars import BusinessCalendar
from .models import Group, HumanTask, SlaClock, Ticket, User
from .settings import Settings

STATUSES = ("new", "open", "waiting_on_customer", "escalated", "resolved", "closed")
PRIORITIES = sla.PRIORITIES
SLA_CLOCKS = sla.CLOCKS
#: Mail a diagram may send to the customer (an agent's reply needs an agent's text: not these).
CUSTOMER_TEMPLATES = tuple(name for name in templates.CUSTOMER_TEMPLATES if name != "agent_reply")
AGENT_TEMPLATES = tuple(templates.AGENT_TEMPLATES)
MESSAGES = ("customer_replied", "agent_replied", "ticket_updated")


def group_slug(lane: str, lane_groups: Mapping[str, str] | None = None) -> str:
    """The agent group a lane names: LANEDESK_LANE_GROUPS, else by convention "Tier 2" → ``tier-2``."""
    if lane_groups and lane in lane_groups:
        return lane_groups[lane]
    return lane_slug(lane) or ""


def _text(kind: str, value: object, limit: int = 2000) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"{kind} must be text of at most {limit} characters; got {type(value).__name__}")
    return value


def _choice(kind: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{kind} must be one of {', '.join(allowed)}; got {value!r}")
    return value


class DeskOperations:
    """Desk operations bound to one ticket for one engine call."""

    NAMES = (
        "set_status",
        "set_priority",
        "set_category",
        "assign_group",
        "escalate",
        "notify",
        "send_template",
        "start_sla",
        "pause_sla",
        "resume_sla",
        "stop_sla",
        "close",
        "sla_due",
        "notify_lead",
        "notify_assignee",
    )

    def __init__(
        self,
        session: Session,
        settings: Settings,
        ticket: Ticket,
        *,
        now: datetime,
        actor: str,
        new: bool = False,
    ):
        self.session = session
        self.settings = settings
        self.ticket = ticket
        self.now = now
        self.actor = actor
        # Loaded once per event: scripts call these operations several times per step, and a
        # query between ORM writes forces a flush (measured: half the cost of opening a ticket).
        self._clock_rows: dict[str, SlaClock] | None = {} if new else None  # a new ticket has none
        self._groups: dict[str, Group | None] = {}
        self._policy: sla.Policy | None = None
        #: Set when a clock started, paused, resumed, stopped or got a new target during this
        #: event: timers armed with ``sla_due(...)`` are then re-evaluated before saving.
        self.sla_changed = False

    def functions(self) -> dict[str, Callable[..., Any]]:
        return {name: getattr(self, name) for name in self.NAMES}

    def _audit(self, action: str, detail: str, **data: Any) -> None:
        audit.record(
            self.session,
            ticket_id=self.ticket.id,
            actor=self.actor,
            action=action,
            now=self.now,
            detail=detail,
            data=data,
        )

    # -- ticket properties ---------------------------------------------------------------
    def set_status(self, status: str) -> None:
        """Set the status agents and customers see."""
        status = _choice("status", status, STATUSES)
        old = self.ticket.status
        if status != old:
            self._audit("status_changed", f"{old} → {status}", old=old, new=status)
            self.ticket.status = status
            self.ticket.closed_at = self.now if status == "closed" else None
            self.ticket.updated_at = self.now
            pausing = self.policy().pause_on
            if status in pausing and old not in pausing:
                for row in self._clocks():
                    self._pause(row, f"status {status}")
            elif old in pausing and status not in pausing:
                for row in self._clocks():
                    self._resume(row, f"status {status}")

    def set_priority(self, priority: str) -> None:
        """Set the priority; running SLA clocks are re-targeted, paused time kept."""
        priority = _choice("priority", priority, PRIORITIES)
        if priority != self.ticket.priority:
            self._audit(
                "priority_changed",
                f"{self.ticket.priority} → {priority}",
                old=self.ticket.priority,
                new=priority,
            )
            self.ticket.priority = priority
            for row in self._clocks():
                sla.retarget(row, self._calendar(row), self.policy().target(row.name, priority))
                self.sla_changed = True
                self._audit_clock("sla_retargeted", row, f"{row.name} target for {priority}")

    def set_category(self, category: str) -> None:
        """Record the ticket's category (question, incident, request, wish, ...)."""
        if not isinstance(category, str) or not category.strip() or len(category) > 64:
            raise ValueError("category must be a non-empty string of at most 64 characters")
        self._audit("category_changed", category, old=self.ticket.category, new=category)
        self.ticket.category = category

    def assign_group(self, group: str) -> None:
        """Make ``group`` the ticket's owning group."""
        found = self._group(group)
        self._audit("group_assigned", found.slug, group=found.slug)
        self.ticket.group = found

    def escalate(self, group: str, reason: str = "") -> None:
        """Hand the ticket to ``group`` with status *escalated*; the reason goes on the timeline."""
        reason = _text("reason", reason)
        found = self._group(group)
        self._audit("escalated", f"to {found.slug}: {reason}".strip(": "), group=found.slug, reason=reason)
        self.ticket.group = found
        self.ticket.assignee_id = None
        self.set_status("escalated")

    def close(self, reason: str = "") -> None:
        """Close the ticket for good."""
        reason = _text("reason", reason)
        for row in self._clocks():
            row.state, row.stopped_at, row.due_at = "stopped", self.now, None
            self.sla_changed = True
            self._audit("sla_stopped", row.name, clock=row.name)
        self.set_status("closed")
        if reason:
            self._audit("closed", reason, reason=reason)

    # -- mail and notifications (delivered by the outbox after commit) -------------------
    def send_template(self, template: str) -> None:
        """Queue mail template ``template`` to the ticket's requester."""
        template = _choice("template", template, CUSTOMER_TEMPLATES)
        self._queue("customer_mail", template, self.ticket.requester.email)

    def notify(self, group: str, template: str) -> None:
        """Queue a notification ``template`` to every agent of ``group``."""
        template = _choice("template", template, AGENT_TEMPLATES)
        found = self._group(group)
        members = self.session.scalars(select(User).where(User.groups.any(Group.id == found.id))).all()
        for member in members:
            self._queue("agent_notification", template, member.email)
        if not members:
            self._audit("notification_skipped", f"group {found.slug} has no members", template=template)

    def notify_lead(self, group: str, template: str) -> None:
        """Queue ``template`` to the lead of ``group`` (to every member when it has none)."""
        template = _choice("template", template, AGENT_TEMPLATES)
        found = self._group(group)
        lead = self.session.get(User, found.lead_id) if found.lead_id is not None else None
        if lead is None:
            self._audit("notification_fallback", f"group {found.slug} has no lead; notifying members")
            self.notify(found.slug, template)
        else:
            self._queue("agent_notification", template, lead.email)

    def notify_assignee(self, template: str) -> None:
        """Queue ``template`` to whoever holds the ticket's open tasks (else its group)."""
        template = _choice("template", template, AGENT_TEMPLATES)
        holders = self.session.scalars(
            select(User)
            .join(HumanTask, HumanTask.assignee_id == User.id)
            .where(HumanTask.ticket_id == self.ticket.id, HumanTask.state == "open")
            .distinct()
        ).all()
        if not holders and self.ticket.assignee_id is not None:
            holders = [self.session.get_one(User, self.ticket.assignee_id)]
        for holder in holders:
            self._queue("agent_notification", template, holder.email)
        if not holders:
            if self.ticket.group is None:
                self._audit("notification_skipped", "nobody holds the ticket", template=template)
            else:
                self.notify(self.ticket.group.slug, template)

    def _queue(self, kind: str, template: str, recipient: str) -> None:
        outbox.queue_mail(
            self.session,
            self.settings,
            ticket=self.ticket,
            template=template,
            recipient=recipient,
            kind=kind,
            now=self.now,
            actor=self.actor,
        )

    # -- SLA clocks (business time: workflows/sla.py) --------------------------------------
    def start_sla(self, clock: str) -> None:
        """Start (or restart) SLA clock ``clock`` now, on the ticket's policy and calendar."""
        name = _choice("clock", clock, SLA_CLOCKS)
        row = self._clock(name)
        if row is None:
            row = SlaClock(ticket_id=self.ticket.id, name=name)
            self._all_clocks()[name] = row
            self.session.add(row)
        policy = self.policy()
        calendar = self._config().calendar_for(self.ticket, policy)
        sla.start(
            row,
            policy=policy,
            calendar=calendar,
            target=policy.target(name, self.ticket.priority),
            now=self.now,
        )
        self.sla_changed = True
        self._audit_clock("sla_started", row, f"{name} started")
        if self.ticket.status in policy.pause_on:
            self._pause(row, f"status {self.ticket.status}")

    def pause_sla(self, clock: str) -> None:
        """Pause a running clock (the business time until it resumes is given back)."""
        self._pause(self._require_clock(clock), "paused by the diagram")

    def resume_sla(self, clock: str) -> None:
        """Resume a paused clock; its due time moves by the business time it was paused."""
        self._resume(self._require_clock(clock), "resumed by the diagram")

    def stop_sla(self, clock: str) -> None:
        """Stop a clock: *met* when stopped before its due time, else *breached* (no-op if not running)."""
        row = self._clock(_choice("clock", clock, SLA_CLOCKS))
        if row is not None and row.state in ("running", "paused"):
            due_at = row.due_at
            state = sla.stop(row, self.now)
            self.sla_changed = True
            self._audit(f"sla_{state}", row.name, clock=row.name, due=due_at.isoformat() if due_at else None)

    def sla_due(self, clock: str, percent: float = 100) -> datetime:
        """When ``percent`` % of running clock ``clock``'s target is used up (aware); for timers.

        A paused or stopped clock is never due (year 9999): a timer armed on it waits until the
        clock runs again, and is then re-timed.
        """
        row = self._require_clock(clock)
        if isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 < percent <= 1000:
            raise ValueError(f"percent must be a number between 0 and 1000; got {percent!r}")
        return sla.due(row, self._calendar(row), percent)

    def clock_facts(self, clock: str, percent: float = 100) -> dict[str, Any]:
        """Policy, calendar and due time of ``clock``: what the timeline shows when a timer fires."""
        row = self._clock(clock)
        if row is None:
            return {"clock": clock}
        due_at = sla.due(row, self._calendar(row), percent)
        return {
            "clock": clock,
            "percent": percent,
            "policy": row.policy,
            "calendar": self._calendar(row).describe(),
            "due": None if due_at == sla.NEVER else due_at.isoformat(),
            "state": row.state,
        }

    def record_breach(self, clock: str) -> None:
        """A timer at 100 % or more of ``clock`` fired: note when the target was missed.

        The clock keeps running (the work still has to be done); stopping it later makes it
        *breached* rather than *met*, and reports read ``breached_at``.
        """
        row = self._clock(clock)
        if row is None or row.state != "running" or row.breached_at is not None:
            return
        if row.due_at is not None and row.due_at <= self.now:
            row.breached_at = row.due_at
            self._audit(
                "sla_target_missed", f"{row.name} target missed at {row.due_at.isoformat()}", clock=row.name
            )

    def _pause(self, row: SlaClock, why: str) -> None:
        if sla.pause(row, self._calendar(row), self.now):
            self.sla_changed = True
            self._audit(
                "sla_paused", f"{row.name} paused ({why})", clock=row.name, elapsed=row.elapsed_seconds
            )

    def _resume(self, row: SlaClock, why: str) -> None:
        if sla.resume(row, self._calendar(row), self.now):
            self.sla_changed = True
            self._audit_clock("sla_resumed", row, f"{row.name} resumed ({why})")

    def _audit_clock(self, action: str, row: SlaClock, what: str) -> None:
        calendar = self._calendar(row)
        due_at = row.due_at
        when = due_at.astimezone(calendar.timezone).strftime("%a %Y-%m-%d %H:%M %Z") if due_at else "-"
        self._audit(
            action,
            f"{what}: due {when} (policy {row.policy}, calendar {calendar.describe()})",
            clock=row.name,
            policy=row.policy,
            calendar=calendar.name,
            target_seconds=row.target_seconds,
            elapsed_seconds=row.elapsed_seconds,
            due=due_at.isoformat() if due_at else None,
        )

    def policy(self) -> sla.Policy:
        """The SLA policy of this ticket (looked up once per event)."""
        if self._policy is None:
            self._policy = self._config().policy_for(self.ticket)
        return self._policy

    def _config(self) -> sla.SlaConfig:
        return sla.load_sla_config(self.settings)

    def _calendar(self, row: SlaClock) -> BusinessCalendar:
        return self._config().calendar(row.calendar, self.policy().calendar)

    # -- lookups -------------------------------------------------------------------------
    def _all_clocks(self) -> dict[str, SlaClock]:
        if self._clock_rows is None:
            rows = self.session.scalars(select(SlaClock).where(SlaClock.ticket_id == self.ticket.id))
            self._clock_rows = {row.name: row for row in rows}
        return self._clock_rows

    def earliest_due(self) -> datetime | None:
        """When the ticket's most urgent clock is (or was) due: running or breached ones."""
        dues = [
            r.due_at for r in self._all_clocks().values() if r.state in ("running", "breached") and r.due_at
        ]
        return min(dues, default=None)

    def _clocks(self) -> list[SlaClock]:
        return [r for r in self._all_clocks().values() if r.state in ("running", "paused")]

    def _clock(self, name: str) -> SlaClock | None:
        return self._all_clocks().get(name)

    def _require_clock(self, clock: str) -> SlaClock:
        row = self._clock(_choice("clock", clock, SLA_CLOCKS))
        if row is None:
            raise ValueError(f"SLA clock {clock} was never started on this ticket")
        return row

    def _group(self, slug: str) -> Group:
        group = self.find_group(_text("group", slug, limit=64))
        if group is None:
            raise ValueError(f"no agent group {slug!r}")
        return group

    def find_group(self, slug: str) -> Group | None:
        """The group ``slug`` (None if there is none), looked up once per event."""
        if slug not in self._groups:
            self._groups[slug] = self.session.scalar(select(Group).where(Group.slug == slug))
        return self._groups[slug]


def vocabulary(session: Session, settings: Settings) -> Vocabulary:
    """What deploy-time validation accepts: operations, literal choices, lanes, messages."""
    return _vocabulary_for(frozenset(session.scalars(select(Group.slug))), settings.lane_groups)


def offline_vocabulary() -> Vocabulary:
    """The vocabulary without a database: the bundled groups stand in for the real ones."""
    from .users import DEFAULT_GROUPS

    return _vocabulary_for(frozenset(DEFAULT_GROUPS), {})


def _vocabulary_for(groups: frozenset[str], lane_groups: dict[str, str]) -> Vocabulary:
    def group_for_lane(lane: str) -> str | None:
        slug = group_slug(lane, lane_groups)
        return slug if slug in groups else None

    signatures = {name: inspect.signature(getattr(DeskOperations, name)) for name in DeskOperations.NAMES}
    signatures = {
        name: sig.replace(parameters=list(sig.parameters.values())[1:]) for name, sig in signatures.items()
    }
    clock_ops = ("start_sla", "pause_sla", "resume_sla", "stop_sla", "sla_due")
    choices = {
        ("set_status", "status"): frozenset(STATUSES),
        ("set_priority", "priority"): frozenset(PRIORITIES),
        ("send_template", "template"): frozenset(CUSTOMER_TEMPLATES),
        ("assign_group", "group"): groups,
        ("escalate", "group"): groups,
        ("notify", "group"): groups,
        ("notify", "template"): frozenset(AGENT_TEMPLATES),
        ("notify_lead", "group"): groups,
        ("notify_lead", "template"): frozenset(AGENT_TEMPLATES),
        ("notify_assignee", "template"): frozenset(AGENT_TEMPLATES),
        **{(op, "clock"): frozenset(SLA_CLOCKS) for op in clock_ops},
    }
    return Vocabulary(
        functions=signatures,
        literal_choices=choices,
        group_for_lane=group_for_lane,
        message_names=frozenset(MESSAGES),
    )
