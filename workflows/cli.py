"""`lanedesk`: the command line operators and tests script against (DESIGN.md)."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import sqlalchemy.exc

from engine.errors import DefinitionError, EngineError, FormInvalid
from engine.validate import validate as validate_xml

from . import audit, bootstrap
from .app import Desk, build_desk
from .definitions import deploy_definition, validate_definition
from .errors import DeskError
from .inbound import Envelope, Outcome, process_or_quarantine, quarantined, requeue, store_raw
from .mailfiles import count_messages, read_messages
from .output import dump_json, print_tasks, print_ticket, task_dict, ticket_dict
from .settings import SettingsError
from .sla import SlaConfigError, load_sla_config
from .templates import languages
from .tickets import (
    add_customer_reply,
    change_priority,
    get_ticket,
    instance_of,
    open_ticket,
    reference,
    reply_as_agent,
    ticket_view,
)
from .users import add_user, get_user
from .wakeups import retry_instance, wake_due_instances
from .worklist import complete_task, list_tasks

EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_PROBLEMS) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class DeskGroup(click.Group):
    """Turns domain errors into one clear line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FormInvalid as exc:
            for field, message in exc.errors.items():
                click.echo(f"error: {field}: {message}", err=True)
            sys.exit(EXIT_PROBLEMS)
        except DefinitionError as exc:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            sys.exit(EXIT_PROBLEMS)
        except (DeskError, EngineError, SettingsError, SlaConfigError) as exc:
            fail(str(exc))
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError) as exc:
            fail(_database_trouble(exc))


def _database_trouble(exc: sqlalchemy.exc.DBAPIError) -> str:
    detail = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
    if "no such table" in detail or "does not exist" in detail:
        return f"the database has no Lanedesk schema yet ({detail}); run `lanedesk db upgrade`"
    if "locked" in detail:
        return f"the database is busy ({detail}); try again"
    return f"cannot use the database ({detail}); check LANEDESK_DATABASE_URL"


def desk(ctx: click.Context) -> Desk:
    obj = ctx.find_root().obj
    if obj is None:
        obj = ctx.find_root().obj = build_desk()
    assert isinstance(obj, Desk)
    return obj


@click.group(cls=DeskGroup)
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (INFO level).")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Lanedesk: a service desk whose lifecycles are BPMN diagrams."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply migrations (idempotent) and create the default agent groups."""
    created = bootstrap.upgrade_database(desk(ctx))
    click.echo("database is up to date" + (f"; created groups {', '.join(created)}" if created else ""))


@main.command("validate")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--offline", is_flag=True, help="Check without a database (lanes are not matched to groups).")
@click.pass_context
def validate_cmd(ctx: click.Context, files: tuple[Path, ...], offline: bool) -> None:
    """Check diagrams; one line per problem: FILE:LINE: ELEMENT_ID: message. Exit 0 or 1."""
    problems = []
    for path in files:
        data = path.read_bytes()
        if offline:
            from .operations import offline_vocabulary

            problems += validate_xml(data, str(path), offline_vocabulary())
        else:
            with desk(ctx).unit_of_work() as session:
                problems += validate_definition(session, desk(ctx).settings, data, str(path))
    for problem in problems:
        click.echo(str(problem))
    if problems:
        sys.exit(EXIT_PROBLEMS)
    click.echo(f"{len(files)} diagram(s) OK", err=True)


@main.command("deploy")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--note", default="", help="Why this version (shown in the version list).")
@click.option("--as", "as_email", default=None, help="The deploying owner or admin.")
@click.pass_context
def deploy_cmd(ctx: click.Context, file: Path, note: str, as_email: str | None) -> None:
    """Validate FILE and store it as a new immutable version; print the version."""
    d = desk(ctx)
    with d.unit_of_work() as session:
        actor = get_user(session, as_email) if as_email else None
        version, created = deploy_definition(
            session,
            d.settings,
            xml=file.read_bytes(),
            filename=file.name,
            now=d.clock(),
            actor=actor,
            note=note,
        )
        state = "deployed" if created else "unchanged, already deployed as"
        click.echo(f"{state} {version.process_id} version {version.version} ({version.content_hash[:12]})")


@main.group()
def user() -> None:
    """Agents, owners and admins."""


@user.command("add")
@click.argument("email")
@click.option("--role", type=click.Choice(["agent", "owner", "admin"]), required=True)
@click.option("--group", "groups", multiple=True, help="Agent group slug (repeatable), e.g. tier-1.")
@click.option(
    "--lead-of", "lead_of", multiple=True, help="Group this user leads (repeatable; told of escalations)."
)
@click.option("--name", default="", help="Display name.")
@click.pass_context
def user_add(
    ctx: click.Context, email: str, role: str, groups: tuple[str, ...], lead_of: tuple[str, ...], name: str
) -> None:
    """Create a user."""
    d = desk(ctx)
    with d.unit_of_work() as session:
        created = add_user(
            session,
            email=email,
            role=role,
            groups=list(groups),
            name=name,
            now=d.clock(),
            lead_of=list(lead_of),
        )
        member = sorted({g.slug for g in created.groups})
        led = f"; leads {', '.join(lead_of)}" if lead_of else ""
        click.echo(f"added {created.email} ({role}{': ' + ', '.join(member) if member else ''}{led})")


@main.group()
def ticket() -> None:
    """Tickets."""


@ticket.command("open")
@click.option("--from", "sender", required=True, help="The requester's e-mail address.")
@click.option("--subject", required=True)
@click.option("--body", default="")
@click.option("--language", help="The language of mail to the customer (default: the desk's).")
@click.pass_context
def ticket_open(ctx: click.Context, sender: str, subject: str, body: str, language: str | None) -> None:
    """Open a ticket; prints its id (e.g. LD-1001)."""
    d = desk(ctx)
    if language is not None and language.lower() not in languages():
        fail(f"no mail templates in {language!r}; languages: {', '.join(languages())}", EXIT_USAGE)
    with d.unit_of_work() as session:
        opened = open_ticket(
            session,
            d.settings,
            requester=sender,
            subject=subject,
            body=body,
            now=d.clock(),
            language=language.lower() if language else None,
        )
    click.echo(reference(d.settings, opened))


@ticket.command("reply")
@click.argument("ticket_id")
@click.option("--from", "sender", help="A customer's reply: their e-mail address.")
@click.option("--as", "as_email", help="An agent's reply to the customer (mailed): the agent's e-mail.")
@click.option("--body", required=True)
@click.pass_context
def ticket_reply(
    ctx: click.Context, ticket_id: str, sender: str | None, as_email: str | None, body: str
) -> None:
    """Add a customer's reply (--from; the process hears `customer_replied`) or an agent's
    answer (--as; mailed to the customer, the process hears `agent_replied`)."""
    if (sender is None) == (as_email is None):
        fail("give exactly one of --from CUSTOMER or --as AGENT", EXIT_USAGE)
    d = desk(ctx)
    with d.unit_of_work() as session:
        if as_email is not None:
            reply_as_agent(
                session, d.settings, ticket_ref=ticket_id, agent_email=as_email, body=body, now=d.clock()
            )
        else:
            assert sender is not None
            add_customer_reply(
                session, d.settings, ticket_ref=ticket_id, sender=sender, body=body, now=d.clock()
            )
    click.echo(f"reply added to {ticket_id}")


@ticket.command("show")
@click.argument("ticket_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def ticket_show(ctx: click.Context, ticket_id: str, as_json: bool) -> None:
    """Status, open tasks and timeline of a ticket."""
    d = desk(ctx)
    with d.unit_of_work(readonly=True) as session:
        view = ticket_view(session, d.settings, ticket_id)
        if as_json:
            click.echo(dump_json(ticket_dict(view)))
        else:
            print_ticket(view, d.settings.zone)


@main.group()
def task() -> None:
    """Human tasks the diagrams hand to agents."""


@task.command("list")
@click.option("--ticket", "ticket_id", default=None)
@click.option("--group", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def task_list(ctx: click.Context, ticket_id: str | None, group: str | None, as_json: bool) -> None:
    """Open tasks, oldest first."""
    d = desk(ctx)
    with d.unit_of_work(readonly=True) as session:
        tid = get_ticket(session, d.settings, ticket_id).id if ticket_id else None
        tasks = list_tasks(session, ticket_id=tid, group=group)
        if as_json:
            click.echo(dump_json([task_dict(t, d.settings) for t in tasks]))
        else:
            print_tasks(tasks, d.settings)


@task.command("complete")
@click.argument("task_id")
@click.option("--as", "as_email", required=True, help="The agent completing the task.")
@click.option("--data", default="{}", help='Form data as a JSON object, e.g. \'{"priority": "P2"}\'.')
@click.pass_context
def task_complete(ctx: click.Context, task_id: str, as_email: str, data: str) -> None:
    """Complete a task with form data and run the process on."""
    try:
        values = json.loads(data)
    except ValueError as exc:
        fail(f"--data is not JSON: {exc}", EXIT_USAGE)
    if not isinstance(values, dict):
        fail("--data must be a JSON object", EXIT_USAGE)
    d = desk(ctx)
    with d.unit_of_work() as session:
        done = complete_task(
            session, d.settings, task_id=task_id, user=get_user(session, as_email), data=values, now=d.clock()
        )
        click.echo(f"completed “{done.name}”")


@ticket.command("priority")
@click.argument("ticket_id")
@click.argument("priority", type=click.Choice(["P1", "P2", "P3", "P4"]))
@click.option("--as", "as_email", required=True, help="The agent making the change.")
@click.pass_context
def ticket_priority(ctx: click.Context, ticket_id: str, priority: str, as_email: str) -> None:
    """Change a ticket's priority; its SLA due times are recomputed (paused time kept)."""
    d = desk(ctx)
    with d.unit_of_work() as session:
        user = get_user(session, as_email)
        change_priority(
            session,
            d.settings,
            get_ticket(session, d.settings, ticket_id),
            priority,
            user=user,
            now=d.clock(),
        )
    click.echo(f"{ticket_id}: priority {priority}")


@ticket.command("retry")
@click.argument("ticket_id")
@click.option("--as", "as_email", required=True, help="The admin retrying it.")
@click.pass_context
def ticket_retry(ctx: click.Context, ticket_id: str, as_email: str) -> None:
    """Run a ticket's failed process again (after the cause was fixed)."""
    d = desk(ctx)
    with d.unit_of_work() as session:
        user = get_user(session, as_email)
        if user.role != "admin":
            fail(f"{user.email} is an {user.role}; only admins retry failed processes")
        row = instance_of(session, get_ticket(session, d.settings, ticket_id))
        retry_instance(session, d.settings, row.id, now=d.clock(), actor=audit.actor_of(user))
    click.echo(f"{ticket_id}: the process runs again")


@main.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--mailbox", help="The desk address these messages came to (routing).")
@click.option("--json", "as_json", is_flag=True, help="The summary as JSON.")
@click.pass_context
def ingest(ctx: click.Context, paths: tuple[Path, ...], mailbox: str | None, as_json: bool) -> None:
    """Import .eml files, mbox files or Maildirs (e.g. from another desk), processing each at once."""
    d = desk(ctx)
    total = count_messages(list(paths))
    summary: dict[str, int] = {}
    with click.progressbar(
        read_messages(list(paths)), length=total, label="ingesting", file=sys.stderr, show_pos=True
    ) as messages:
        for _label, raw in messages:
            with d.unit_of_work() as session:
                stored = store_raw(session, raw, Envelope("file", mailbox=mailbox), now=d.clock())
            outcome = process_or_quarantine(d.sessions, d.settings, stored.id, now=d.clock())
            kind = _summary_kind(outcome, stored.duplicate)
            summary[kind] = summary.get(kind, 0) + 1
    if as_json:
        click.echo(dump_json({"messages": total, **summary}))
    else:
        click.echo(
            f"{total} message(s): " + (", ".join(f"{n} {k}" for k, n in sorted(summary.items())) or "none")
        )


def _summary_kind(outcome: Outcome, duplicate: bool) -> str:
    if duplicate or outcome.state == "duplicate":
        return "duplicates"
    if outcome.state == "processed":
        return "new tickets" if outcome.decision.startswith("new ticket") else "follow-ups"
    return {"auto_generated": "auto-generated", "bounce": "bounces"}.get(outcome.state, outcome.state)


@main.group()
def mail() -> None:
    """Inbound mail that could not be processed."""


@mail.command("quarantine")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def mail_quarantine(ctx: click.Context, as_json: bool) -> None:
    """List quarantined messages with the reason."""
    d = desk(ctx)
    with d.unit_of_work(readonly=True) as session:
        rows = quarantined(session)
        items: list[dict[str, Any]] = [
            {
                "id": r.id,
                "received_at": r.received_at.isoformat(),
                "message_id": r.message_id,
                "reason": r.reason,
            }
            for r in rows
        ]
    if as_json:
        click.echo(dump_json(items))
    elif not items:
        click.echo("nothing in quarantine")
    for item in [] if as_json else items:
        click.echo(f"{item['id']:>6}  {item['received_at'][:16]}  {item['reason']}")


@mail.command("reprocess")
@click.argument("mail_ids", nargs=-1, type=int)
@click.option("--all", "everything", is_flag=True, help="Every quarantined message.")
@click.pass_context
def mail_reprocess(ctx: click.Context, mail_ids: tuple[int, ...], everything: bool) -> None:
    """Process quarantined messages again (after the cause was fixed)."""
    if not mail_ids and not everything:
        fail("name mail ids or use --all", EXIT_USAGE)
    d = desk(ctx)
    with d.unit_of_work() as session:
        ids = [r.id for r in quarantined(session)] if everything else list(mail_ids)
        for mail_id in ids:
            requeue(session, mail_id)
    for mail_id in ids:
        outcome = process_or_quarantine(d.sessions, d.settings, mail_id, now=d.clock())
        click.echo(f"mail {mail_id}: {outcome.state}: {outcome.decision}")


@main.group()
def sla() -> None:
    """SLA calendars and policies (LANEDESK_SLA_CONFIG)."""


@sla.command("check")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def sla_check(ctx: click.Context, path: Path | None) -> None:
    """Check an SLA file (default: the configured one) and print its calendars and policies."""
    settings = desk(ctx).settings
    if path is not None:
        settings = dataclasses.replace(settings, sla_config=path)
    config = load_sla_config(settings)
    click.echo(f"{config.source}: ok")
    for calendar in config.calendars.values():
        click.echo(f"  calendar {calendar.describe()}")
    for policy in config.policies:
        match = ", ".join(sorted(policy.organisations | policy.mailboxes)) or "every ticket"
        targets = " · ".join(
            f"{clock} "
            + "/".join(f"{s // 3600}h{s % 3600 // 60:02d}" for s in policy.targets[clock].values())
            for clock in policy.targets
        )
        click.echo(f"  policy {policy.name} ({match}; calendar {policy.calendar}): {targets} (P1/P2/P3/P4)")
    for group, calendar_name in config.group_calendars.items():
        click.echo(f"  group {group} works on calendar {calendar_name}")


@main.command("tick")
@click.pass_context
def tick(ctx: click.Context) -> None:
    """Wake every instance whose timers are due, once."""
    d = desk(ctx)
    report = wake_due_instances(d.sessions, d.settings, now=d.clock)
    click.echo(
        f"woke {len(report.woken)} instance(s)" + (f", {len(report.failed)} failed" if report.failed else "")
    )
    for instance_id, reason in report.failed.items():
        click.echo(f"instance {instance_id} failed: {reason}", err=True)


def prepare_desk(d: Desk, *, demo: bool) -> None:
    """Migrate, deploy the bundled diagrams and (on an empty desk) add demo data; say so."""
    prepared = bootstrap.prepare(d, demo=demo)
    click.echo(f"Lanedesk is ready: database {d.engine.url.render_as_string(hide_password=True)}")
    for item in prepared.deployed:
        click.echo(f"  deployed {item}")
    if prepared.demo_tickets:
        click.echo(
            f"  demo tickets {', '.join(prepared.demo_tickets)}; agents triage@demo.lanedesk, "
            "lead@demo.lanedesk, expert@demo.lanedesk; admin admin@demo.lanedesk"
        )
    if prepared.demo_password:
        click.echo(f"  demo users log in with the password {prepared.demo_password}")
    click.echo("  try: lanedesk task list   ·   lanedesk ticket show LD-1001")


# Commands defined beside the code they run (registered on `main` when imported).
from . import mailcli as _mailcli  # noqa: E402, F401
from . import processcli as _processcli  # noqa: E402, F401
from . import simcli as _simcli  # noqa: E402, F401
