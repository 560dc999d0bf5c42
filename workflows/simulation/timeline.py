"""The timeline: what the throwaway desk recorded for the simulated ticket, read back in order."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import tickets
from ..models import AuditEvent, HumanTask, OutboxMessage, Ticket
from .scenario import Event
from .times import short


@dataclass(frozen=True)
class Entry:
    """One thing the desk did or recorded, at ``at`` (UTC) and ``local`` (the calendar's zone)."""

    at: datetime
    local: datetime
    kind: str
    element_id: str | None
    text: str
    actor: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "local": self.local.isoformat(),
            "kind": self.kind,
            "element_id": self.element_id,
            "actor": self.actor,
            "text": self.text,
            "data": dict(self.data),
        }


@dataclass(frozen=True)
class Timeline:
    """What the throwaway desk recorded for the simulated ticket, in order."""

    process_id: str
    scenario: str
    timezone: str
    calendar: str  # the description of the calendar the times are shown on
    arrival: datetime
    until: datetime
    outcome: str  # completed | running | failed (the process at the end)
    status: str  # the ticket's status at the end
    open_tasks: tuple[str, ...]
    next_timer: datetime | None
    entries: tuple[Entry, ...]
    path: tuple[tuple[datetime, str], ...]  # (time, element id) of every BPMN element passed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the studio shows it; ``lanedesk simulate --json`` prints it)."""
        return {
            "process_id": self.process_id,
            "scenario": self.scenario,
            "timezone": self.timezone,
            "calendar": self.calendar,
            "arrival": self.arrival.isoformat(),
            "until": self.until.isoformat(),
            "outcome": self.outcome,
            "status": self.status,
            "open_tasks": list(self.open_tasks),
            "next_timer": self.next_timer.isoformat() if self.next_timer else None,
            "entries": [entry.to_dict() for entry in self.entries],
            "path": [{"at": at.isoformat(), "element_id": element} for at, element in self.path],
        }

    def render(self) -> str:
        """Plain text, one line per entry: ``Fri 06 Mar 16:30  task opened      triage ...``."""
        lines = [f"{self.process_id} · {self.scenario} · times in {self.calendar}"]
        lines += [f"{short(e.local)}  {e.kind.replace('_', ' '):<17}{e.text}" for e in self.entries]
        return "\n".join(lines)

    def of_kind(self, *kinds: str) -> list[Entry]:
        return [entry for entry in self.entries if entry.kind in kinds]


def read_timeline(
    session: Session,
    *,
    ticket_id: int,
    zone: ZoneInfo,
    scenario: str,
    process_id: str,
    calendar: str,
    span: tuple[datetime, datetime],
    skipped: list[tuple[datetime, Event, str]],
) -> Timeline:
    """The timeline of ticket ``ticket_id`` from the throwaway desk's rows, shown in ``zone``.

    ``span`` is the simulation's (arrival, end); ``skipped`` the events not played, with why.
    """
    ticket = session.get_one(Ticket, ticket_id)
    instance = tickets.instance_of(session, ticket)
    tasks = {t.id: t for t in session.scalars(select(HumanTask).where(HumanTask.ticket_id == ticket_id))}
    mail = list(session.scalars(select(OutboxMessage).where(OutboxMessage.ticket_id == ticket_id)))
    reader = _Reader(zone, tasks, sorted(mail, key=lambda row: row.id))
    rows = session.scalars(
        select(AuditEvent).where(AuditEvent.ticket_id == ticket_id).order_by(AuditEvent.id)
    )
    entries, path = [], []
    for row in rows:
        if row.action == "step":
            path.append((row.created_at, row.element_id or ""))
        else:
            entries.append(reader.entry(row))
    for at, event, reason in skipped:
        entries.append(
            reader.make(at, "event_skipped", None, f"{event.action} {event.value}: not played, {reason}")
        )
    open_tasks = tuple(
        t.element_id for t in sorted(tasks.values(), key=lambda t: t.created_at) if t.state == "open"
    )
    running = instance.status == "running"
    if instance.status == "completed":
        entries.append(reader.make(instance.updated_at, "process_completed", None, f"{process_id} completed"))
    elif running:
        waiting = ", ".join(open_tasks) or "no task"
        timer = f"; next timer {reader.when(instance.next_wake_at)}" if instance.next_wake_at else ""
        text = f"end of the simulation: ticket {ticket.status}, waiting on {waiting}{timer}"
        entries.append(reader.make(span[1], "end", None, text))
    return Timeline(
        process_id=process_id,
        scenario=scenario,
        timezone=str(zone.key),
        calendar=calendar,
        arrival=span[0],
        until=span[1],
        outcome=instance.status,
        status=ticket.status,
        open_tasks=open_tasks,
        next_timer=instance.next_wake_at if running else None,
        entries=tuple(sorted(entries, key=lambda entry: entry.at)),  # stable: same-time rows keep their order
        path=tuple(path),
    )


_QUOTED = re.compile(r"“(.*?)”")


@dataclass
class _Reader:
    """Turns audit rows into timeline entries, with the task and outbox rows they refer to."""

    zone: ZoneInfo
    tasks: Mapping[str, HumanTask]
    mail: list[OutboxMessage]
    dues: dict[str, datetime] = field(default_factory=dict)  # running SLA clocks -> due time

    def when(self, moment: datetime | str | None) -> str:
        if isinstance(moment, str):
            moment = datetime.fromisoformat(moment)
        return short(moment, self.zone) if moment is not None else "-"

    def make(self, at: datetime, kind: str, element_id: str | None, text: str, **data: Any) -> Entry:
        return Entry(at, at.astimezone(self.zone), kind, element_id, text, data=data)

    def entry(self, row: AuditEvent) -> Entry:
        kind, text = self.describe(row)
        entry = self.make(row.created_at, kind, row.element_id, text, **(row.data or {}))
        return dataclasses.replace(entry, actor=row.actor)

    def describe(self, row: AuditEvent) -> tuple[str, str]:
        action, data = row.action, row.data or {}
        if action == "task_created":
            return "task_opened", self._task_opened(row)
        if action == "task_completed":
            values = ", ".join(f"{k}={v}" for k, v in data.items())
            return "task_completed", f"{row.element_id} by {row.actor.removeprefix('user:')}" + (
                f": {values}" if values else ""
            )
        if action == "task_cancelled":
            return "task_withdrawn", f"{row.element_id} withdrawn by the process"
        if action == "timer_fired":
            return "timer_fired", self._timer(row)
        if action.startswith("sla_"):
            return "sla", self._clock(row)
        if action in ("mail_queued", "mail_suppressed"):
            return self._mail(row)
        if action == "ticket_opened":
            return "ticket_opened", f"“{row.detail}” from {row.actor.removeprefix('customer:')}"
        if action in ("customer_replied", "agent_replied"):
            return action, f"“{row.detail[:80]}”"
        renamed = {"status_changed": "status", "priority_changed": "priority", "category_changed": "category"}
        renamed["instance_failed"] = "process_failed"
        if action.startswith("notification_"):
            return "notification", row.detail
        if action == "group_assigned":
            return "group", f"owned by {row.detail}"
        return renamed.get(action, action), row.detail

    def _task_opened(self, row: AuditEvent) -> str:
        task = self.tasks.get(row.task_id or "")
        if task is None:
            return row.detail
        text = f"{row.element_id} “{task.name}” for {task.group.slug if task.group else 'nobody'}"
        if self.dues:  # the most urgent running clock then (the task row has today's due time)
            clock, due = min(self.dues.items(), key=lambda item: item[1])
            late = " (overdue)" if due <= row.created_at else ""
            text += f" · SLA {clock.replace('_', ' ')} due {self.when(due)}{late}"
        return text

    def _timer(self, row: AuditEvent) -> str:
        data = row.data or {}
        found = _QUOTED.search(row.detail)
        name = found.group(1) if found else row.element_id or "timer"
        if data.get("clock") and data.get("percent") is not None:
            share = f"{float(data['percent']):g}% of the {data['clock']} target"
            return f"“{name}”: {share}, due {self.when(data.get('due'))}"
        return f"“{name}”, due {self.when(data.get('due'))}"

    def _clock(self, row: AuditEvent) -> str:
        data = row.data or {}
        clock = str(data.get("clock") or row.detail)
        due = data.get("due")
        if row.action in ("sla_started", "sla_resumed", "sla_retargeted") and isinstance(due, str):
            self.dues[clock] = datetime.fromisoformat(due)
            what = row.detail.partition(": due ")[0]
            return (
                f"{what}, due {self.when(due)} (policy {data.get('policy')}, calendar {data.get('calendar')})"
            )
        if row.action == "sla_target_missed":
            return f"{clock} target missed (due {self.when(self.dues.get(clock))})"
        self.dues.pop(clock, None)
        if row.action in ("sla_met", "sla_breached"):
            return f"{clock} {row.action.removeprefix('sla_')} (due {self.when(due)})"
        if row.action == "sla_stopped":
            return f"{clock} stopped"
        return row.detail

    def _mail(self, row: AuditEvent) -> tuple[str, str]:
        data = row.data or {}
        template, recipient = data.get("template"), data.get("recipient")
        match = next(
            (
                m
                for m in self.mail
                if (m.template, m.recipient, m.created_at) == (template, recipient, row.created_at)
            ),
            None,
        )
        if match is not None:
            self.mail.remove(match)
        subject = f": {match.subject}" if match is not None and match.subject else ""
        if row.action == "mail_suppressed":
            return "mail_held_back", f"{template} → {recipient}{subject} (held back: {data.get('reason')})"
        return "mail_queued", f"{template} → {recipient}{subject} (queued, not sent)"
