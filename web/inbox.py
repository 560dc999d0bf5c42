"""The inbox (tasks most urgent first), claiming and assigning, and the task forms."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import login_required
from sqlalchemy import select
from werkzeug.wrappers import Response

from engine.errors import FormInvalid
from workflows.errors import Conflict, InvalidInput, PermissionDenied
from workflows.inbox import SORTS, VIEWS
from workflows.inbox import inbox as inbox_page
from workflows.models import TICKET_NUMBER_OFFSET, Group, HumanTask, User
from workflows.sla import PRIORITIES
from workflows.worklist import claim_task, complete_task, may_work_on_task, release_task

from .auth import me
from .db import db, desk

bp = Blueprint("inbox", __name__)


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


def _page(filters: dict[str, Any]) -> Any:
    return inbox_page(db(), desk().settings, me(), now=desk().clock(), **filters)


@bp.get("/inbox")
@login_required
def inbox() -> str:
    filters = _filters()
    user = me()
    groups = user.groups if user.role != "admin" else list(db().scalars(select(Group).order_by(Group.slug)))
    return render_template(
        "inbox/inbox.html",
        page=_page(filters),
        filters=filters,
        groups=groups,
        priorities=PRIORITIES,
        views=VIEWS,
        sorts=SORTS,
        prefix=desk().settings.ticket_prefix,
        offset=TICKET_NUMBER_OFFSET,
        now=desk().clock(),
    )


@bp.get("/inbox/rows")
@login_required
def rows() -> str:
    """The table body alone: what the page polls to refresh itself."""
    filters = _filters()
    return render_template(
        "inbox/rows.html",
        page=_page(filters),
        filters=filters,
        prefix=desk().settings.ticket_prefix,
        offset=TICKET_NUMBER_OFFSET,
        now=desk().clock(),
    )


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
