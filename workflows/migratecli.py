"""`lanedesk process migrate`: preview and move running tickets onto another process version."""

from __future__ import annotations

import sys

import click

from .app import Desk
from .cli import EXIT_PROBLEMS, EXIT_USAGE, desk, fail
from .output import dump_json
from .process_migration import (
    InstancePreview,
    MigrationReport,
    TaskMove,
    candidates,
    migrate_instances,
    preview_migration,
)
from .processcli import process
from .tickets import get_ticket, instance_of
from .users import get_user

#: Tickets moved per transaction (about a second of work).
BATCH = 100


@process.command("migrate")
@click.argument("process_id")
@click.option("--to", "to_version", type=click.IntRange(min=1), required=True, help="The target version.")
@click.option("--instance", "instance_ids", type=int, multiple=True, help="Only this instance (repeatable).")
@click.option(
    "--ticket", "tickets", multiple=True, help="Only this ticket's instance, e.g. LD-1042 (repeatable)."
)
@click.option("--dry-run", is_flag=True, help="Only show where each ticket's current tasks would land.")
@click.option("--as", "as_email", help="The process owner or admin who moves the tickets.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def process_migrate(
    ctx: click.Context,
    process_id: str,
    to_version: int,
    instance_ids: tuple[int, ...],
    tickets: tuple[str, ...],
    dry_run: bool,
    as_email: str | None,
    as_json: bool,
) -> None:
    """Move running tickets of PROCESS_ID onto version --to (all on other versions by default).

    One line per ticket: its versions and where each current task lands, or why it cannot move
    (those stay where they are). Exit 1 when any selected ticket cannot move.
    """
    if not dry_run and not as_email:
        fail(
            "moving tickets needs --as EMAIL (a process owner or admin); or preview with --dry-run",
            EXIT_USAGE,
        )
    d = desk(ctx)
    with d.unit_of_work(readonly=True) as session:
        chosen = [
            *instance_ids,
            *(instance_of(session, get_ticket(session, d.settings, t)).id for t in tickets),
        ]
        if dry_run:
            outcomes = preview_migration(
                session, d.settings, process_id=process_id, to_version=to_version, instance_ids=chosen or None
            )
        else:
            chosen = chosen or candidates(session, process_id=process_id, to_version=to_version)
    if dry_run:
        lines = [_line(preview) for preview in outcomes]
        data: object = [preview.to_dict() for preview in outcomes]
    else:
        assert as_email is not None
        report = _migrate_in_batches(d, process_id, to_version, chosen, as_email)
        outcomes = report.migrated + report.refused
        lines = [f"moved   {_line(p)}" for p in report.migrated] + [
            f"stayed  {_line(p)}" for p in report.refused
        ]
        data = report.to_dict()
    refused = sum(not outcome.can_migrate for outcome in outcomes)
    if as_json:
        click.echo(dump_json(data))
    else:
        for line in lines or ["no running tickets on other versions"]:
            click.echo(line)
        click.echo(
            f"{len(outcomes) - refused} {'can move' if dry_run else 'moved'}, {refused} cannot", err=True
        )
    if refused:
        sys.exit(EXIT_PROBLEMS)


def _migrate_in_batches(
    d: Desk, process_id: str, to_version: int, ids: list[int], as_email: str
) -> MigrationReport:
    """One transaction per batch: on SQLite a transaction holds the database's write lock."""
    report = MigrationReport(process_id, to_version)
    for start in range(0, len(ids), BATCH):
        with d.unit_of_work() as session:
            done = migrate_instances(
                session,
                d.settings,
                process_id=process_id,
                to_version=to_version,
                instance_ids=ids[start : start + BATCH],
                actor=get_user(session, as_email),
                now=d.clock(),
            )
        report.migrated += done.migrated
        report.refused += done.refused
    return report


def _line(preview: InstancePreview) -> str:
    versions = f"v{preview.from_version} → v{preview.to_version}"
    if not preview.can_migrate:
        return f"{preview.ticket}  {versions}  cannot move: {preview.reason}"
    return f"{preview.ticket}  {versions}  " + "; ".join(_landing(task) for task in preview.tasks)


def _landing(task: TaskMove) -> str:
    group = f" [{task.new_group}]" if task.state == "ready" and task.new_group else ""
    changes = f" ({', '.join(task.changes)})" if task.changes else ""
    return f"{task.element_id} → '{task.new_name}'{group}{changes}"
