"""The desk operations a diagram may call, and the vocabulary deploy-time validation checks.

Scripts in a diagram call these as plain functions (``set_status("open")``). Each call is
validated, applied to the ticket in the step's transaction and written to the audit trail.
Timers call :meth:`DeskOperations.sla_due`, which returns an aware datetime.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.lint import lane_slug
from engine.validate import Vocabulary

from . import audit
from .models import Group, OutboxMessage, SlaClock, Ticket, User
from .settings import Settings

STATUSES = ("new", "open", "waiting_on_customer", "escalated", "resolved", "closed")
PRIORITIES = ("P1", "P2", "P3", "P4")
SLA_CLOCKS = ("first_response", "next_response", "resolution")
CUSTOMER_TEMPLATES = ("acknowledgement", "agent_reply", "reminder", "auto_closed", "resolved")
AGENT_TEMPLATES = ("first_response_due", "sla_warning", "escalated", "assigned")
MESSAGES = ("customer_replied", "agent_replied", "ticket_updated")

#: Wall-clock targets per clock and priority, in hours. The SLA issue replaces these with
#: policies on business calendars; the diagram contract (``sla_due(clock)``) stays the same.
SLA_TARGET_HOURS: dict[str, dict[str, int]] = {
    "first_response": {"P1": 1, "P2": 4, "P3": 8, "P4": 24},
    "next_response": {"P1": 2, "P2": 8, "P3": 24, "P4": 48},
    "resolution": {"P1": 8, "P2": 24, "P3": 72, "P4": 120},
}


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
        if status != self.ticket.status:
            self._audit(
                "status_changed", f"{self.ticket.status} → {status}", old=self.ticket.status, new=status
            )
            self.ticket.status = status
            self.ticket.closed_at = self.now if status == "closed" else None
            self.ticket.updated_at = self.now

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
            for clock in self._clocks():
                clock.target_seconds = SLA_TARGET_HOURS[clock.name][priority] * 3600
                _refresh_due(clock)

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
        self.ticket.group_id = found.id

    def escalate(self, group: str, reason: str = "") -> None:
        """Hand the ticket to ``group`` with status *escalated*; the reason goes on the timeline."""
        reason = _text("reason", reason)
        found = self._group(group)
        self._audit("escalated", f"to {found.slug}: {reason}".strip(": "), group=found.slug, reason=reason)
        self.ticket.group_id = found.id
        self.ticket.assignee_id = None
        self.set_status("escalated")

    def close(self, reason: str = "") -> None:
        """Close the ticket for good."""
        reason = _text("reason", reason)
        for clock in self._clocks():
            self._stop(clock, "stopped")
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

    def _queue(self, kind: str, template: str, recipient: str) -> None:
        message_id = f"<{uuid.uuid4().hex}.ticket{self.ticket.number}@{self.settings.mail_domain}>"
        self.session.add(
            OutboxMessage(
                ticket_id=self.ticket.id,
                kind=kind,
                template=template,
                recipient=recipient,
                message_id=message_id,
                state="queued",
                payload={},
                created_at=self.now,
            )
        )
        self._audit("mail_queued", f"{template} to {recipient}", template=template, recipient=recipient)

    # -- SLA clocks ----------------------------------------------------------------------
    def start_sla(self, clock: str) -> None:
        """Start (or restart) SLA clock ``clock`` now."""
        name = _choice("clock", clock, SLA_CLOCKS)
        row = self._clock(name)
        if row is None:
            row = SlaClock(ticket_id=self.ticket.id, name=name)
            self._all_clocks()[name] = row
        row.state, row.started_at, row.paused_at, row.paused_seconds, row.stopped_at = (
            "running",
            self.now,
            None,
            0,
            None,
        )
        row.target_seconds = SLA_TARGET_HOURS[name][self.ticket.priority] * 3600
        _refresh_due(row)
        self.session.add(row)
        self._audit("sla_started", f"{name} due {row.due_at.isoformat() if row.due_at else '-'}", clock=name)

    def pause_sla(self, clock: str) -> None:
        """Pause a running clock (time waiting on the customer is given back)."""
        row = self._require_clock(clock)
        if row.state == "running":
            row.state, row.paused_at, row.due_at = "paused", self.now, None
            self._audit("sla_paused", row.name, clock=row.name)

    def resume_sla(self, clock: str) -> None:
        """Resume a paused clock; its due time moves by the paused time."""
        row = self._require_clock(clock)
        if row.state == "paused" and row.paused_at is not None:
            row.paused_seconds += int((self.now - row.paused_at).total_seconds())
            row.state, row.paused_at = "running", None
            _refresh_due(row)
            self._audit("sla_resumed", row.name, clock=row.name)

    def stop_sla(self, clock: str) -> None:
        """Stop a clock: *met* when stopped before its due time, else *breached*."""
        row = self._require_clock(clock)
        if row.state in ("running", "paused"):
            met = row.due_at is None or self.now <= row.due_at
            self._stop(row, "met" if met else "breached")

    def sla_due(self, clock: str) -> datetime:
        """When running clock ``clock`` falls due (aware); for timer expressions."""
        row = self._require_clock(clock)
        if row.due_at is None:
            raise ValueError(f"SLA clock {row.name} is {row.state}; it has no due time")
        return row.due_at

    def _stop(self, row: SlaClock, state: str) -> None:
        row.state, row.stopped_at = state, self.now
        self._audit(f"sla_{state}", row.name, clock=row.name)

    # -- lookups -------------------------------------------------------------------------
    def _all_clocks(self) -> dict[str, SlaClock]:
        if self._clock_rows is None:
            rows = self.session.scalars(select(SlaClock).where(SlaClock.ticket_id == self.ticket.id))
            self._clock_rows = {row.name: row for row in rows}
        return self._clock_rows

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


def _refresh_due(clock: SlaClock) -> None:
    if clock.state == "running":
        clock.due_at = clock.started_at + timedelta(seconds=clock.target_seconds + clock.paused_seconds)


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
        **{(op, "clock"): frozenset(SLA_CLOCKS) for op in clock_ops},
    }
    return Vocabulary(
        functions=signatures,
        literal_choices=choices,
        group_for_lane=group_for_lane,
        message_names=frozenset(MESSAGES),
    )
