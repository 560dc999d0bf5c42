"""One unit of work per request: read-only for GET, a write transaction otherwise.

Views call :func:`db` for the request's session. The transaction commits just before a
successful response (status below 400) leaves, and rolls back when the view raised or answered
with an error, including domain errors an error handler turned into a page.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from flask import Flask, Response, current_app, g, request
from sqlalchemy.orm import Session

from workflows.app import Desk

_SAFE = {"GET", "HEAD", "OPTIONS"}


def desk() -> Desk:
    found: Desk = current_app.extensions["lanedesk"]
    return found


def db() -> Session:
    """The request's session (opened on first use)."""
    if "_lanedesk_session" not in g:
        unit: AbstractContextManager[Session] = desk().unit_of_work(readonly=request.method in _SAFE)
        g._lanedesk_unit = unit
        g._lanedesk_session = unit.__enter__()
    session: Session = g._lanedesk_session
    return session


def fail() -> None:
    """Roll this request's transaction back at its end (an error page is being shown)."""
    g._lanedesk_failed = True
    if "_lanedesk_session" in g:
        g._lanedesk_session.rollback()


def init_app(app: Flask) -> None:
    @app.after_request
    def _commit(response: Response) -> Response:
        # Commit before the response leaves: a failed commit must not follow a success page.
        unit = g.pop("_lanedesk_unit", None)
        g.pop("_lanedesk_session", None)
        if unit is not None:
            if g.pop("_lanedesk_failed", False) or response.status_code >= 400:
                error = RuntimeError(f"request answered {response.status_code}")
                unit.__exit__(type(error), error, None)
            else:
                unit.__exit__(None, None, None)
        return response

    @app.teardown_request
    def _roll_back(exc: BaseException | None) -> None:
        unit = g.pop("_lanedesk_unit", None)  # still open: the request raised before a response
        g.pop("_lanedesk_session", None)
        if unit is not None:
            error = exc or RuntimeError("request ended without a response")
            unit.__exit__(type(error), error, None)
