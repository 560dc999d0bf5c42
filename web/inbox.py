"""The inbox (tasks most urgent first), claiming and assigning, and the task forms.

``/inbox`` and ``/inbox/rows`` (what the page polls) are rendered from plain rows with every
string computed once per row here, kept per process until something they show changes, and
revalidated with weak ETags (web.inbox_cache says why a kept page is never stale or another's).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from flask_login import login_required
from sqlalchemy import select
from werkzeug.wrappers import Response

from engine.errors import FormInvalid
from workflows.errors import Conflict, InvalidInput, PermissionDenied
from workflows.inbox import SORTS, VIEWS, TaskLine, inbox_lines, inbox_revision
from workflows.models import Group, HumanTask, User
from workflows.sla import PRIORITIES, load_sla_config
from workflows.worklist import claim_task, complete_task, may_work_on_task, release_task

from . import inbox_cache
from .app import duration
from .auth import me
from .db import db, desk

bp = Blueprint("inbox", __name__)
PAGES = "lanedesk_inbox_pages"
FULL, ROWS = "inbox/inbox.html", "inbox/rows.html"
#: hit (the kept page), miss (rendered and kept) or off (rendered, not kept): for operators and bench.web.
CACHE_HEADER = "X-Inbox-Cache"


@bp.record_once
def _make_cache(state: BlueprintSetupState) -> None:
    state.app.extensions[PAGES] = inbox_cache.PageCache()


def _filters() -> dict[str, Any]:
    args = request.args
    user = me()
    default_view = "mine" if args.get("view") is None and _holds_tasks(user) else "groups"
    return {
        "view": args.get("view", default_view) if args.get("view", default_view) in VIEWS else "groups",
        "group": args.get("group") or None,
        "priority": args.get("priority") or None,
        "sla": args.get("sla") or None,
        "sort": args.get("sort", "urgency") if args.get("sort", "urgency") in SORTS else "urgency",
        "page": request.args.get("page", 1, type=int) or 1,
    }


def _holds_tasks(user: User) -> bool:
    query = select(HumanTask.id).where(HumanTask.state == "open", HumanTask.assignee_id == user.id).limit(1)
    return db().scalar(query) is not None


@dataclass(frozen=True, slots=True)
class Line:
    """A table row's strings (Jinja only escapes and joins them)."""

    task_id: str
    task: str
    ref: str
    subject: str
    requester: str
    requester_email: str
    tier: str
    priority: str
    created: str  # ISO 8601
    age: str
    holder: str
    action: str | None  # claim | unclaim | None
    sla_class: str
    sla_title: str
    sla_text: str


_SLA_CLASS = {"breached": "sla-bad", "at_risk": "sla-warn", "ok": "sla-ok"}


def _line(line: TaskLine, prefix: str, me_id: int, now: datetime) -> Line:
    u = line.urgency
    if u.state == "none":
        sla_class, title, text = "sla-none", "", "—"
    elif u.state == "paused":
        sla_class, title, text = "sla-none", f"{u.clock} paused", "paused"
    else:
        clock = (u.clock or "").replace("_", " ")
        sla_class, title, text = (
            _SLA_CLASS[u.state],
            f"{clock}: {u.percent} % of the target used",
            f"{u.percent} %",
        )
    held = line.assignee_id
    return Line(
        line.task_id,
        line.name,
        f"{prefix}-{line.ticket_number}",
        _truncate(line.subject),
        line.requester,
        line.requester_email,
        line.group or "—",
        line.priority,
        line.created_at.isoformat(),
        duration((now - line.created_at).total_seconds()),
        line.assignee or "—",
        "claim" if held is None else "unclaim" if held == me_id else None,
        sla_class,
        title,
        text,
    )


def _truncate(text: str, length: int = 60, end: str = "...", leeway: int = 5) -> str:
    """Jinja's ``truncate(60)``: whole words, "..." at the end, 5 characters of leeway."""
    if len(text) <= length + leeway:
        return text
    return text[: length - len(end)].rsplit(" ", 1)[0] + end


def _render(template: str, as_of: datetime, **extra: Any) -> str:
    user = me()
    filters = _filters()
    page = inbox_lines(db(), desk().settings, user, now=as_of, **filters)
    prefix = desk().settings.ticket_prefix
    lines = [_line(line, prefix, user.id, as_of) for line in page.lines]
    context: dict[str, Any] = {"page": page, "lines": lines, "filters": filters}
    if template == FULL:
        groups = (
            user.groups if user.role != "admin" else list(db().scalars(select(Group).order_by(Group.slug)))
        )
        context |= {"groups": groups, "priorities": PRIORITIES, "views": VIEWS, "sorts": SORTS}
    return render_template(template, **context, **extra)


def _respond(template: str) -> Response:
    """The page from the process's cache when nothing it shows has changed, else rendered.

    A full page that shows a flashed message is rendered and not kept.
    """
    revision = inbox_revision(db())  # before anything else is read (see inbox_revision)
    # SLA shares, colours, ages and the SLA filter as of the minute: a page keeps for a minute.
    as_of = desk().clock().replace(second=0, microsecond=0)
    if revision is None or (template == FULL and session.get("_flashes")):
        shown = make_response(_render(template, as_of))
        shown.headers[CACHE_HEADER] = "off"
        return shown
    # The raw URL is in the key, not the filters: the default view depends on the data, which
    # the revision covers.
    return inbox_cache.serve(
        PAGES,
        revision,
        as_of,
        load_sla_config(desk().settings),
        CACHE_HEADER,
        lambda: _render(template, as_of, csrf_token=lambda: inbox_cache.PLACEHOLDER),
    )


@bp.get("/inbox")
@login_required
def inbox() -> Response:
    return _respond(FULL)


@bp.get("/inbox/rows")
@login_required
def rows() -> Response:
    """The table body alone: what the page polls to refresh itself."""
    return _respond(ROWS)


def _back() -> Response:
    target = request.form.get("next") or ""
    if not target.startswith("/") or target.startswith("//"):
        target = url_for("inbox.inbox")
    return redirect(target)


@bp.post("/tasks/<task_id>/claim")
@login_required
def claim(task_id: str) -> Response:
    task = claim_task(db(), task_id=task_id, user=me(), now=desk().clock())
    flash(f"You hold “{task.name}” now.")
    return _back()


@bp.post("/tasks/<task_id>/unclaim")
@login_required
def unclaim(task_id: str) -> Response:
    task = release_task(db(), desk().settings, task_id=task_id, user=me(), to=None, now=desk().clock())
    flash(f"“{task.name}” is back in the group's queue.")
    return _back()


@bp.post("/tasks/<task_id>/assign")
@login_required
def assign(task_id: str) -> Response:
    email = (request.form.get("assignee") or "").strip().lower()
    colleague = db().scalar(select(User).where(User.email == email)) if email else None
    if colleague is None:
        raise InvalidInput(f"no colleague {email or '(none given)'}")
    task = release_task(db(), desk().settings, task_id=task_id, user=me(), to=colleague, now=desk().clock())
    flash(f"“{task.name}” is {colleague.name}'s now.")
    return _back()


def _task_or_404(task_id: str) -> HumanTask:
    task = db().get(HumanTask, task_id)
    if task is None:
        abort(404)
    if not may_work_on_task(me(), task):
        raise PermissionDenied("this task belongs to a group you are not in")
    return task


@bp.route("/tasks/<task_id>", methods=["GET", "POST"])
@login_required
def task(task_id: str) -> Response | str | tuple[str, int]:
    """The form the process owner drew; on POST, validated on the server and completed."""
    found = _task_or_404(task_id)
    ticket = found.ticket
    reference = f"{desk().settings.ticket_prefix}-{ticket.number}"
    colleagues = _colleagues(found)
    if request.method == "GET":
        return render_template(
            "inbox/task.html",
            task=found,
            ticket=ticket,
            reference=reference,
            values={},
            errors={},
            colleagues=colleagues,
        )
    if found.state != "open":
        raise Conflict(f"task “{found.name}” was already {found.state}; nothing was changed")
    values = {f["id"]: request.form.get(f["id"], "") for f in found.form}
    for field in found.form:
        if field["type"] == "boolean":
            values[field["id"]] = "true" if request.form.get(field["id"]) else "false"
    try:
        complete_task(db(), desk().settings, task_id=task_id, user=me(), data=values, now=desk().clock())
    except FormInvalid as exc:
        db().rollback()
        html = render_template(
            "inbox/task.html",
            task=found,
            ticket=ticket,
            reference=reference,
            values=values,
            errors=exc.errors,
            colleagues=colleagues,
        )
        return html, 422
    flash(f"“{found.name}” on {reference} is done.")
    return redirect(url_for("tickets.ticket", reference=reference))


def _colleagues(task: HumanTask) -> list[User]:
    if task.group_id is None:
        return []
    query = select(User).where(User.groups.any(Group.id == task.group_id)).order_by(User.name)
    return list(db().scalars(query))
