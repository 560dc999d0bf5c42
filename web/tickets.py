"""The ticket page (conversation, reply and note, properties, SLA, tasks, outgoing mail, audit
trail, the process diagram), and what it links to: attachments and the original HTML of mail.

A rendered page is kept per process, as the inbox's are (web.inbox_cache), under a key of
everything it is a function of: the database (both revisions of workflows.page_revision, read
first), the viewer (id, name, role, groups: what they may see, the header, the claim buttons),
the URL (the ticket reference as written, ``?canned=``), the minute (SLA shares and time left,
ages are computed as of its start) and the SLA configuration (by identity). The CSRF token is
put in when the page is sent; a page showing a flashed message is rendered and not kept, and
so is every answer but a 200 (a 404, a 403, a refused reply re-shown with its error).

Mail content is never trusted: the page shows its text only; its HTML is served alone, sanitised,
under a sandboxing CSP, into a sandboxed frame; attachments are always downloads.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    abort,
    flash,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from flask_login import login_required
from werkzeug.wrappers import Response

from workflows.errors import InvalidInput, PermissionDenied
from workflows.models import Attachment, ConversationEntry, MailMessage, Ticket
from workflows.page_revision import page_revisions
from workflows.sla import load_sla_config
from workflows.ticket_page import diagram_state, original_html, pinned_diagram, ticket_page
from workflows.tickets import add_note, get_ticket, may_work_on, reply_as_agent

from . import inbox_cache
from .app import local
from .auth import me
from .db import db, desk

bp = Blueprint("tickets", __name__)
PAGES = "lanedesk_ticket_pages"
#: hit (the kept page), miss (rendered and kept) or off (rendered, not kept).
CACHE_HEADER = "X-Page-Cache"

#: What a browser gets with mail HTML: no script, no plugin, no request anywhere.
MAIL_CSP = "sandbox; default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'"
#: For downloads and diagram XML (XML can carry script if someone opens it directly).
INERT_CSP = "sandbox; default-src 'none'"
#: Attachment types served as they are; anything else (HTML, SVG, XML, scripts...) as octet-stream.
SAFE_TYPES = re.compile(
    r"(image/(png|jpeg|gif|webp|bmp|tiff)|application/(pdf|zip|gzip|x-7z-compressed|msword|vnd\.[\w.+-]+)"
    r"|text/(plain|csv|calendar)|audio/[\w.+-]+|video/[\w.+-]+)"
)


@bp.record_once
def _make_cache(state: BlueprintSetupState) -> None:
    state.app.extensions[PAGES] = inbox_cache.PageCache()


def _ticket(reference: str) -> Ticket:
    found = get_ticket(db(), desk().settings, reference)
    _authorise(found)
    return found


def _authorise(ticket: Ticket | None) -> Ticket:
    if ticket is None:
        abort(404)
    if not may_work_on(db(), me(), ticket):
        raise PermissionDenied("this ticket belongs to a group you are not in")
    return ticket


def _page(
    reference: str,
    status: int = 200,
    composer: dict[str, str] | None = None,
    now: datetime | None = None,
    **extra: Any,
) -> tuple[str, int]:
    ticket = _ticket(reference)
    now = now or desk().clock()
    page = ticket_page(db(), desk().settings, ticket, now=now)
    composer = composer or {}
    canned = request.args.get("canned", type=int)
    if canned is not None and "reply_text" not in composer:  # without JavaScript: a canned start
        composer["reply_text"] = next((c.body for c in page.canned if c.id == canned), "")
    events = _events(page.timeline, desk().settings.zone)
    html = render_template(
        "tickets/ticket.html", page=page, events=events, now=now, composer=composer, **extra
    )
    return html, status


@dataclass(frozen=True, slots=True)
class Event:
    """An audit trail line's strings (up to 500 a page: Jinja only escapes and joins them)."""

    iso: str
    when: str
    actor: str
    action: str
    element_id: str | None
    detail: str


def _events(rows: list[Any], zone: ZoneInfo) -> list[Event]:
    times: dict[datetime, tuple[str, str]] = {}  # a step's events share their time stamp
    found = []
    for row in rows:
        at = times.get(row.created_at)
        if at is None:
            at = times[row.created_at] = (row.created_at.isoformat(), local(row.created_at, zone))
        found.append(Event(*at, row.actor, row.action.replace("_", " "), row.element_id, row.detail))
    return found


@bp.get("/tickets/<reference>")
@login_required
def ticket(reference: str) -> Response:
    """The page from the process's cache when nothing it shows has changed, else rendered."""
    revisions = page_revisions(db())  # before anything else is read (see page_revisions)
    if revisions is None or session.get("_flashes"):
        shown = make_response(_page(reference))
        shown.headers[CACHE_HEADER] = "off"
        return shown
    as_of = desk().clock().replace(second=0, microsecond=0)
    return inbox_cache.serve(
        PAGES,
        revisions,
        as_of,
        load_sla_config(desk().settings),
        CACHE_HEADER,
        lambda: _page(reference, now=as_of, csrf_token=lambda: inbox_cache.PLACEHOLDER)[0],
    )


@bp.post("/tickets/<reference>/reply")
@login_required
def reply(reference: str) -> Response | tuple[str, int]:
    return _write(
        reference,
        reply_as_agent,
        "reply",
        "Your reply is on the conversation and on its way to the customer (see Outgoing mail).",
    )


@bp.post("/tickets/<reference>/note")
@login_required
def note(reference: str) -> Response | tuple[str, int]:
    return _write(reference, add_note, "note", "Internal note added (agents only; the customer is not told).")


def _write(
    reference: str, service: Callable[..., ConversationEntry], form: str, done: str
) -> Response | tuple[str, int]:
    """Post the composer's ``form`` (reply or note) through ``service``; errors re-show it."""
    body = request.form.get("body", "")
    try:
        entry = service(
            db(), desk().settings, ticket_ref=reference, agent_email=me().email, body=body, now=desk().clock()
        )
    except InvalidInput as exc:
        db().rollback()
        return _page(reference, 422, {f"{form}_text": body, f"{form}_error": _sentence(exc)})
    flash(done)
    return redirect(url_for("tickets.ticket", reference=reference, _anchor=f"entry-{entry.id}"))


def _sentence(exc: Exception) -> str:
    text = str(exc)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


@bp.get("/tickets/<reference>/diagram.bpmn")
@login_required
def diagram(reference: str) -> Response:
    """The BPMN XML of the version the ticket's process is pinned to."""
    found = pinned_diagram(db(), _ticket(reference))
    if found is None:
        abort(404, "this ticket has no process")
    xml, facts = found
    response = Response(xml, mimetype="application/xml")
    response.headers["Content-Security-Policy"] = INERT_CSP
    response.headers["Cache-Control"] = "private, no-cache"
    response.set_etag(facts.content_hash)  # a version never changes: revalidation is enough
    return response.make_conditional(request)


@bp.get("/tickets/<reference>/diagram-state.json")
@login_required
def diagram_state_json(reference: str) -> Any:
    """Which elements of the diagram are current and which the process has passed."""
    state = diagram_state(db(), _ticket(reference))
    if state is None:
        abort(404, "this ticket has no process")
    return jsonify(
        current=state.current,
        completed=state.completed,
        process_id=state.process_id,
        version=state.version,
        status=state.status,
    )


@bp.get("/attachments/<int:attachment_id>")
@login_required
def attachment(attachment_id: int) -> Response:
    found = db().get(Attachment, attachment_id)
    if found is None or found.ticket_id is None:
        abort(404)
    _authorise(db().get(Ticket, found.ticket_id))
    mimetype = found.content_type.lower() if SAFE_TYPES.fullmatch(found.content_type.lower()) else ""
    return _download(found.data, mimetype or "application/octet-stream", found.filename)


@bp.get("/mail/<int:mail_id>/html")
@login_required
def mail_html(mail_id: int) -> Response:
    """The mail's HTML, sanitised, for the page's sandboxed frame (and nothing else)."""
    mail = _mail(mail_id)
    body = original_html(mail)
    if body is None:
        abort(404, "this mail had no HTML part")
    document = f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{body}</body></html>'
    response = Response(document, mimetype="text/html")
    response.headers["Content-Security-Policy"] = MAIL_CSP
    response.headers["X-Frame-Options"] = "SAMEORIGIN"  # the app's DENY, eased for our own page
    return response


@bp.get("/mail/<int:mail_id>/original.eml")
@login_required
def mail_original(mail_id: int) -> Response:
    """The mail exactly as it arrived (a download, never shown by the browser)."""
    mail = _mail(mail_id)
    return _download(mail.raw, "message/rfc822", f"mail-{mail.id}.eml")


def _mail(mail_id: int) -> MailMessage:
    mail = db().get(MailMessage, mail_id)
    if mail is None or mail.ticket_id is None:
        abort(404)
    _authorise(db().get(Ticket, mail.ticket_id))
    return mail


def _download(data: bytes, mimetype: str, filename: str) -> Response:
    response = Response(data, mimetype=mimetype)
    ascii_name, full_name = safe_filename(filename)
    response.headers["Content-Disposition"] = (
        f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(full_name, safe='')}"
    )
    response.headers["Content-Security-Policy"] = INERT_CSP
    response.headers["Cache-Control"] = "private, no-store"
    return response


def safe_filename(name: str) -> tuple[str, str]:
    """An ASCII fallback and the full name, with no path, quote, control or leading dot."""
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '/\\"<>:|?*;')
    name = name.strip().lstrip(".").strip()[:200] or "attachment"
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii").strip()
    plain = plain.lstrip(".").strip() or "attachment"
    return plain, name


@bp.app_template_filter("span")
def span(seconds: float | None) -> str:
    """``3 d 4 h``, ``2 h 5 min``, ``12 min``: a span of time, rounded down to a minute."""
    if seconds is None:
        return "—"
    minutes = int(abs(seconds)) // 60
    days, hours, mins = minutes // 1440, minutes % 1440 // 60, minutes % 60
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {mins} min" if mins else f"{hours} h"
    return f"{mins} min" if mins else "under a minute"


@bp.app_template_filter("filesize")
def filesize(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / 1024 / 1024:.1f} MB"
