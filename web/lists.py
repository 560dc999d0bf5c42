"""Ticket lists and search (being built)."""

from __future__ import annotations

from flask import Blueprint, abort
from flask_login import login_required

bp = Blueprint("lists", __name__)


@bp.get("/tickets")
@login_required
def tickets() -> str:
    abort(404)
