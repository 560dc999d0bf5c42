"""`lanedesk process ...`: deployed versions of a process and what runs on them."""

from __future__ import annotations

import sys
from typing import Any

import click

from . import studio
from .cli import desk, main
from .definitions import get_version
from .errors import NotFound
from .output import dump_json, iso
from .users import get_user


@main.group("process")
def process() -> None:
    """Deployed process versions: list, show, compare, roll back, migrate running tickets."""


@process.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """Every deployed process: newest version, running tickets, open drafts."""
    d = desk(ctx)
    with d.unit_of_work(readonly=True) as session:
        found = studio.processes(session)
    rows = [
        {
            "process_id": p.process_id,
            "latest": p.latest or None,
            "versions": p.versions,
            "running": p.running,
            "drafts": p.drafts,
        }
        for p in found
    ]
    if as_json:
        click.echo(dump_json(rows))
        return
    for row in rows:
        latest = f"version {row['latest']}" if row["latest"] else "not deployed"
        click.echo(f"{row['process_id']}  {latest}  {row['running']} running  {row['drafts']} draft(s)")


@process.command("versions")
@click.argument("process_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def versions_cmd(ctx: click.Context, process_id: str, as_json: bool) -> None:
    """The versions of PROCESS_ID, newest first: when, who, note, content hash, running tickets."""
    d = desk(ctx)
    with d.unit_of_work(readonly=True) as session:
        rows: list[dict[str, Any]] = [
            {
                "version": r.version.version,
                "deployed_at": iso(r.version.deployed_at),
                "deployed_by": r.deployed_by,
                "note": r.version.note,
                "content_hash": r.version.content_hash,
                "filename": r.version.filename,
                "running": r.running,
            }
            for r in studio.versions(session, process_id)
        ]
    if not rows:
        raise NotFound(f"no process {process_id!r} is deployed")
    if as_json:
        click.echo(dump_json(rows))
        return
    for row in rows:
        by = row["deployed_by"] or "command line"
        click.echo(
            f"v{row['version']}  {row['deployed_at']}  {by}  {row['content_hash'][:12]}  "
            f"{row['running']} running  {row['note']}"
        )


@process.command("show")
@click.argument("process_id")
@click.option("--version", "number", type=int, default=None, help="Default: the newest.")
@click.pass_context
def show_cmd(ctx: click.Context, process_id: str, number: int | None) -> None:
    """Print the XML of a deployed version (to save it: > FILE.bpmn)."""
    d = desk(ctx)
    with d.unit_of_work(readonly=True) as session:
        if number is None:
            rows = studio.versions(session, process_id)
            if not rows:
                raise NotFound(f"no process {process_id!r} is deployed")
            number = rows[0].version.version
        xml = studio.version_xml(session, get_version(session, process_id, number))
    sys.stdout.buffer.write(xml)
    sys.stdout.buffer.flush()


@process.command("diff")
@click.argument("process_id")
@click.argument("old", type=int)
@click.argument("new", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def diff_cmd(ctx: click.Context, process_id: str, old: int, new: int, as_json: bool) -> None:
    """Elements removed, changed and added from version OLD to version NEW."""
    d = desk(ctx)
    with d.unit_of_work(readonly=True) as session:
        comparison = studio.compare_versions(session, process_id, old, new)
    if as_json:
        click.echo(dump_json(comparison.to_dict()))
        return
    if comparison.identical:
        click.echo(f"versions {old} and {new} have the same elements")
    sign = {"removed": "-", "changed": "~", "added": "+"}
    for change in comparison.changes:
        what = f" ({', '.join(change.aspects)})" if change.aspects else ""
        click.echo(f"{sign[change.change]} {change.kind} {change.element_id} {change.name!r}{what}")


@process.command("rollback")
@click.argument("process_id")
@click.option("--to", "number", type=int, required=True, help="The version whose content to deploy again.")
@click.option("--as", "as_email", required=True, help="The owner or admin rolling back.")
@click.option("--note", default="", help="Why (default: 'roll back to version N').")
@click.pass_context
def rollback_cmd(ctx: click.Context, process_id: str, number: int, as_email: str, note: str) -> None:
    """Deploy an old version's content as the newest version (running tickets stay put)."""
    d = desk(ctx)
    with d.unit_of_work() as session:
        version, created = studio.roll_back(
            session,
            d.settings,
            process_id=process_id,
            to=number,
            actor=get_user(session, as_email),
            now=d.clock(),
            note=note,
        )
        if created:
            click.echo(f"deployed {process_id} version {version.version} (the content of version {number})")
        else:
            click.echo(f"unchanged: version {version.version} already has the content of version {number}")


from . import migratecli as _migratecli  # noqa: E402, F401
