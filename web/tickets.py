"""The ticket page (being built: see the issue "agent workspace")."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import login_required

from workflows.errors import PermissionDenied
from workflows.tickets import get_ticket, may_work_on

from .auth import me
from .db import db, desk

bp = Blueprint("tickets", __name__)


@bp.get("/tickets/<reference>")
@login_required
def ticket(reference: str) -> str:
    found = get_ticket(db(), desk().settings, reference)
    if not may_work_on(db(), me(), found):
        raise PermissionDenied("this ticket belongs to a group you are not in")
    return render_template("error.html", status=200, title=reference, message=found.subject)
