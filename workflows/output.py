"""Rendering tickets and tasks for the command line: JSON (stable keys) and text."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import click

from .models import TICKET_NUMBER_OFFSET, HumanTask
from .settings import Settings
from .tickets import TicketView


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def dump_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def task_dict(task: HumanTask, settings: Settings) -> dict[str, Any]:
    return {
        "id": task.id,
        "ticket": f"{settings.ticket_prefix}-{task.ticket_id + TICKET_NUMBER_OFFSET}",
        "name": task.name,
        "element_id": task.element_id,
        "group": task.group.slug if task.group else None,
        "state": task.state,
        "assignee": task.assignee.email if task.assignee else None,
        "created_at": iso(task.created_at),
        "form": task.form,
    }


def ticket_dict(view: TicketView) -> dict[str, Any]:
    t = view.ticket
    return {
        "id": view.reference,
        "subject": t.subject,
        "status": t.status,
        "priority": t.priority,
        "category": t.category,
        "group": t.group.slug if t.group else None,
        "requester": t.requester.email,
        "created_at": iso(t.created_at),
        "closed_at": iso(t.closed_at),
        "process": {
            "id": view.instance.process_version.process_id,
            "version": view.instance.process_version.version,
            "status": view.instance.status,
            "error": view.instance.error,
            "next_wake_at": iso(view.instance.next_wake_at),
        },
        "open_tasks": [
            {
                "id": task.id,
                "name": task.name,
                "element_id": task.element_id,
                "group": task.group.slug if task.group else None,
                "assignee": task.assignee.email if task.assignee else None,
                "form": task.form,
            }
            for task in view.open_tasks
        ],
        "sla": [
            {
                "clock": c.name,
                "state": c.state,
                "policy": c.policy,
                "calendar": c.calendar,
                "target_seconds": c.target_seconds,
                "elapsed_seconds": c.elapsed_seconds,
                "due_at": iso(c.due_at),
                "started_at": iso(c.started_at),
                "breached_at": iso(c.breached_at),
                "stopped_at": iso(c.stopped_at),
            }
            for c in view.sla
        ],
        "conversation": [
            {"kind": e.kind, "body": e.body, "created_at": iso(e.created_at)} for e in view.conversation
        ],
        "timeline": [
            {
                "at": iso(e.created_at),
                "actor": e.actor,
                "action": e.action,
                "element_id": e.element_id,
                "task_id": e.task_id,
                "detail": e.detail,
                "data": e.data,
            }
            for e in view.timeline
        ],
    }


def _local(moment: datetime | None, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M") if moment else "-"


def print_ticket(view: TicketView, zone: ZoneInfo) -> None:
    t = view.ticket
    group = t.group.slug if t.group else "-"
    click.echo(f"{view.reference}  {t.subject}")
    click.echo(f"  status {t.status} · priority {t.priority} · category {t.category or '-'} · group {group}")
    click.echo(f"  requester {t.requester.email} · opened {_local(t.created_at, zone)}")
    pv = view.instance.process_version
    wake = _local(view.instance.next_wake_at, zone)
    click.echo(f"  process {pv.process_id} v{pv.version} · {view.instance.status} · next timer {wake}")
    if view.instance.error:
        click.echo(f"  error: {view.instance.error}")
    click.echo("Open tasks:" if view.open_tasks else "Open tasks: none")
    for task in view.open_tasks:
        who = task.assignee.email if task.assignee else "unclaimed"
        click.echo(f"  {task.id}  {task.name}  [{task.group.slug if task.group else '-'}, {who}]")
    if view.sla:
        click.echo("SLA clocks:")
        for c in view.sla:
            target = f"{c.target_seconds // 3600}h{c.target_seconds % 3600 // 60:02d}"
            click.echo(
                f"  {c.name}: {c.state}, due {_local(c.due_at, zone)} "
                f"(target {target} business time, policy {c.policy}, calendar {c.calendar})"
            )
    if view.conversation:
        click.echo("Conversation:")
        for entry in view.conversation:
            first = " ".join(entry.body.split())[:100]
            click.echo(f"  {_local(entry.created_at, zone)}  {entry.kind:<8} {first}")
    click.echo("Timeline:")
    for e in view.timeline:
        click.echo(f"  {_local(e.created_at, zone)}  {e.actor:<28} {e.action:<18} {e.detail}")


def print_tasks(tasks: list[HumanTask], settings: Settings) -> None:
    if not tasks:
        click.echo("no open tasks")
    for task in tasks:
        d = task_dict(task, settings)
        group, assignee = d["group"] or "-", d["assignee"] or "unclaimed"
        click.echo(f"{d['id']}  {d['ticket']:<9} {d['name']:<28} {group:<12} {assignee}")
