"""`lanedesk outbox` and `lanedesk template`: what left, what was held back, and the mail texts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from . import canned, outbox, templates
from .cli import EXIT_USAGE, desk, fail, main
from .errors import InvalidInput, NotFound
from .models import TICKET_NUMBER_OFFSET, OutboxMessage
from .outmail import compose
from .output import dump_json, iso
from .tickets import get_ticket
from .transports import transport_for
from .users import get_user


def outbox_dict(row: OutboxMessage, prefix: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "ticket": f"{prefix}-{row.ticket_id + TICKET_NUMBER_OFFSET}" if row.ticket_id is not None else None,
        "kind": row.kind,
        "template": row.template,
        "recipient": row.recipient,
        "subject": row.subject,
        "state": row.state,
        "reason": row.reason,
        "auto_submitted": row.auto_submitted,
        "message_id": row.message_id,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "server_reply": row.server_reply,
        "created_at": iso(row.created_at),
        "next_attempt_at": iso(row.next_attempt_at) if row.state == "queued" else None,
        "sent_at": iso(row.sent_at),
    }


@main.group("outbox", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--state", type=click.Choice(outbox.STATES), help="Only mail in this state.")
@click.option("--ticket", "ticket_ref", help="Only mail about this ticket (LD-1042).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.pass_context
def outbox_cmd(
    ctx: click.Context, as_json: bool, state: str | None, ticket_ref: str | None, limit: int
) -> None:
    """Outgoing mail, newest first: recipient, subject, ticket, state, and why it was held back."""
    if ctx.invoked_subcommand is not None:
        return
    d = desk(ctx)
    with d.unit_of_work(readonly=True) as session:
        ticket_id = get_ticket(session, d.settings, ticket_ref).id if ticket_ref else None
        items = [
            outbox_dict(row, d.settings.ticket_prefix)
            for row in outbox.listing(session, state=state, ticket_id=ticket_id, limit=limit)
        ]
    if as_json:
        click.echo(dump_json(items))
        return
    if not items:
        click.echo("no outgoing mail")
    for item in items:
        why = item["reason"] or item["last_error"] or ""
        subject = item["subject"] or f"({item['template']})"
        where = f"{item['ticket'] or '-':<9} {item['recipient']:<32}"
        click.echo(f"{item['id']:>6}  {item['state']:<10} {where} {subject}")
        if why:
            click.echo(f"        {why}")


@outbox_cmd.command("show")
@click.argument("outbox_id", type=int)
@click.pass_context
def outbox_show(ctx: click.Context, outbox_id: int) -> None:
    """Print one outgoing mail as it was (or will be) sent."""
    d = desk(ctx)
    with d.unit_of_work() as session:
        row = session.get(OutboxMessage, outbox_id)
        if row is None:
            raise NotFound(f"no outgoing mail {outbox_id}")
        if row.raw is None:  # not rendered yet: show what it would be, keep nothing
            compose(session, d.settings, row, d.clock())
            raw = row.raw
            session.rollback()
        else:
            raw = row.raw
    click.echo((raw or b"").decode("utf-8", "replace"))


@outbox_cmd.command("retry")
@click.argument("outbox_ids", type=int, nargs=-1, required=True)
@click.pass_context
def outbox_retry(ctx: click.Context, outbox_ids: tuple[int, ...]) -> None:
    """Queue failed or held-back mail again (after fixing the address or the server)."""
    d = desk(ctx)
    with d.unit_of_work() as session:
        for outbox_id in outbox_ids:
            try:
                outbox.requeue(session, outbox_id, now=d.clock())
            except (LookupError, ValueError) as exc:
                raise InvalidInput(str(exc)) from None
    click.echo(f"queued again: {', '.join(map(str, outbox_ids))}")


@outbox_cmd.command("send")
@click.pass_context
def outbox_send(ctx: click.Context) -> None:
    """Deliver every due mail now, in this process (without a worker), once."""
    d = desk(ctx)
    transport = transport_for(d.settings)
    with d.unit_of_work() as session:
        ids = outbox.due_for_delivery(session, d.clock(), limit=10_000)
    counts: dict[str, int] = {}
    for outbox_id in ids:
        state = outbox.deliver(d.sessions, d.settings, transport, outbox_id, clock=d.clock, compose=compose)
        counts[state] = counts.get(state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "nothing due"
    click.echo(summary)


@main.group("template")
def template_cmd() -> None:
    """Mail templates (bundled per language; admins' versions override them)."""


@template_cmd.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def template_list(ctx: click.Context, as_json: bool) -> None:
    """Every template in every language, and whether it is bundled or customised."""
    d = desk(ctx)
    with d.unit_of_work(readonly=True) as session:
        items = [
            {"name": t.name, "language": t.language, "origin": t.origin, "subject": t.subject}
            for t in templates.listing(session)
        ]
    if as_json:
        click.echo(dump_json(items))
        return
    for item in items:
        click.echo(f"{item['name']:<20} {item['language']:<6} {item['origin']:<8} {item['subject']}")


@template_cmd.command("show")
@click.argument("name")
@click.option("--language", "-l", default=None, help="Default: the desk's language.")
@click.pass_context
def template_show(ctx: click.Context, name: str, language: str | None) -> None:
    """Print a template's subject, text and HTML (the version in use)."""
    d = desk(ctx)
    with d.unit_of_work(readonly=True) as session:
        found = templates.source(session, name, language or d.settings.language, d.settings.language)
    click.echo(f"# {found.name} ({found.language}, {found.origin})")
    click.echo(f"subject: {found.subject}\n\n--- text ---\n{found.text}\n--- html ---\n{found.html}")


@template_cmd.command("set")
@click.argument("name")
@click.option("--language", "-l", required=True)
@click.option("--subject", help="Default: keep the one in use.")
@click.option("--text", "text_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--html", "html_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--as", "as_email", required=True, help="The admin making the change.")
@click.pass_context
def template_set(
    ctx: click.Context,
    name: str,
    language: str,
    subject: str | None,
    text_file: Path | None,
    html_file: Path | None,
    as_email: str,
) -> None:
    """Store your version of a template (checked by rendering it first; takes effect at once)."""
    if subject is None and text_file is None and html_file is None:
        fail("give at least one of --subject, --text FILE, --html FILE", EXIT_USAGE)
    d = desk(ctx)
    with d.unit_of_work() as session:
        admin = get_user(session, as_email)
        current = templates.source(session, name, language.lower(), d.settings.language)
        templates.save(
            session,
            name=name,
            language=language,
            subject=subject if subject is not None else current.subject,
            text=text_file.read_text(encoding="utf-8") if text_file else current.text,
            html=html_file.read_text(encoding="utf-8") if html_file else current.html,
            by=admin,
            now=d.clock(),
        )
    click.echo(f"template {name} ({language.lower()}) saved")


@template_cmd.command("reset")
@click.argument("name")
@click.option("--language", "-l", required=True)
@click.option("--as", "as_email", required=True, help="The admin making the change.")
@click.pass_context
def template_reset(ctx: click.Context, name: str, language: str, as_email: str) -> None:
    """Drop your version of a template; the bundled one applies again."""
    d = desk(ctx)
    with d.unit_of_work() as session:
        admin = get_user(session, as_email)
        if admin.role != "admin":
            raise InvalidInput(f"{admin.email} is not an admin; only admins edit mail templates")
        dropped = templates.reset(session, name, language)
    click.echo(
        f"template {name} ({language.lower()}) "
        + ("reset to the bundled one" if dropped else "was not customised")
    )


@main.group("canned")
def canned_cmd() -> None:
    """Canned responses agents insert into their replies (admins keep them)."""


@canned_cmd.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def canned_list(ctx: click.Context, as_json: bool) -> None:
    """Every canned response, by title."""
    d = desk(ctx)
    with d.unit_of_work(readonly=True) as session:
        items = [{"title": c.title, "body": c.body} for c in canned.list_canned(session)]
    if as_json:
        click.echo(dump_json(items))
        return
    for item in items:
        click.echo(f"{item['title']}: {item['body'][:70]}")


@canned_cmd.command("add")
@click.argument("title")
@click.option(
    "--text", "text_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@click.option("--as", "as_email", required=True, help="The admin making the change.")
@click.pass_context
def canned_add(ctx: click.Context, title: str, text_file: Path, as_email: str) -> None:
    """Add a canned response whose text is in a file."""
    d = desk(ctx)
    with d.unit_of_work() as session:
        row = canned.add_canned(
            session,
            title=title,
            body=text_file.read_text(encoding="utf-8"),
            by=get_user(session, as_email),
            now=d.clock(),
        )
        click.echo(f"canned response “{row.title}” added")


@canned_cmd.command("remove")
@click.argument("title")
@click.option("--as", "as_email", required=True, help="The admin making the change.")
@click.pass_context
def canned_remove(ctx: click.Context, title: str, as_email: str) -> None:
    """Remove a canned response."""
    d = desk(ctx)
    with d.unit_of_work() as session:
        canned.remove_canned(session, title=title, by=get_user(session, as_email), now=d.clock())
    click.echo(f"canned response “{title}” removed")
