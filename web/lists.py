"""Ticket lists and search: ``GET /tickets`` with filters, ``?q=`` full-text search, pages of 50.

The filter form is a plain GET form (works without JavaScript; every page link keeps the
filters). A query that is a ticket reference (``LD-1042``, ``1042``) jumps to that ticket when
it exists and the agent may see it. The queries are workflows.search's (three per page).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for
from flask_login import login_required
from sqlalchemy import select
from werkzeug.wrappers import Response

from workflows.models import Group, User
from workflows.operations import STATUSES
from workflows.search import SORTS, link_args, parse_filters, search_tickets, ticket_for_reference
from workflows.sla import PRIORITIES
from workflows.tickets import reference

from .auth import me
from .db import db, desk

bp = Blueprint("lists", __name__)

SORT_LABELS = {
    "relevance": "best match (newest when not searching)",
    "newest": "newest first",
    "oldest": "oldest first",
    "urgent": "most urgent first (SLA due)",
    "updated": "recently updated",
}


@bp.get("/tickets")
@login_required
def tickets() -> str | Response:
    settings = desk().settings
    filters = parse_filters(request.args)
    if filters["q"]:
        named = ticket_for_reference(db(), settings, me(), filters["q"])
        if named is not None:
            return redirect(url_for("tickets.ticket", reference=reference(settings, named)))
    page = search_tickets(
        db(), settings, me(), now=desk().clock(), page=request.args.get("page", 1, type=int) or 1, **filters
    )
    colleagues = select(User.id, User.name).where(User.id != me().id).order_by(User.name)
    return render_template(
        "lists/tickets.html",
        page=page,
        filters=filters,
        args=link_args(filters),
        numbers=page_numbers(page.page, page.pages),
        statuses=STATUSES,
        groups=list(db().scalars(select(Group).order_by(Group.name))),
        colleagues=db().execute(colleagues).all(),
        priorities=PRIORITIES,
        sorts=[(value, SORT_LABELS[value]) for value in SORTS],
        prefix=settings.ticket_prefix,
        now=desk().clock(),
    )


def page_numbers(current: int, pages: int, *, around: int = 2) -> list[Any]:
    """The page links to show: the first, the last and a window around ``current`` (None: a gap)."""
    shown = sorted({1, pages, *range(max(1, current - around), min(pages, current + around) + 1)})
    numbers: list[Any] = []
    for number in shown:
        if numbers and number - numbers[-1] > 1:
            numbers.append(None)
        numbers.append(number)
    return numbers
