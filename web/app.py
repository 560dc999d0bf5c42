"""``create_app``: builds the Flask application and nothing else (no connection, no thread)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask import Flask, Response, redirect, request, url_for
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response as BaseResponse

from workflows.app import Desk, build_desk
from workflows.secrets import secret_key
from workflows.settings import Settings

from . import assets, auth, db, errors

#: The diagram viewer (bpmn-js) injects inline styles; scripts come only from this origin.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'; object-src 'none'"
)


def create_app(settings: Settings | None = None, *, desk: Desk | None = None) -> Flask:
    """The workspace for ``settings`` (or an existing ``desk``, which tests and `run` share)."""
    desk = desk or build_desk(settings)
    app = Flask(__name__)
    secure = desk.settings.base_url.startswith("https://")
    app.config.update(
        # Derived, so the one LANEDESK_SECRET_KEY signs reply tokens and sessions differently.
        SECRET_KEY=hmac.new(secret_key(desk.settings), b"web-session", hashlib.sha256).hexdigest(),
        SESSION_COOKIE_NAME="lanedesk_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=secure,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        JSON_SORT_KEYS=False,
    )
    app.extensions["lanedesk"] = desk
    if desk.settings.trusted_proxies:
        # The client's address (login rate limit) and scheme as the proxies in front saw them.
        hops = desk.settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
    csrf = CSRFProtect(app)
    db.init_app(app)
    auth.init_app(app)
    errors.init_app(app)
    assets.init_app(app, desk.settings.assets_dir)
    _register_blueprints(app, csrf)

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers.setdefault("X-Frame-Options", "DENY")  # a view may opt into SAMEORIGIN
        response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        if secure:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        if request.endpoint != "static":
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    app.jinja_env.filters["age"] = age
    app.jinja_env.filters["duration"] = duration
    app.jinja_env.filters["local"] = lambda moment: local(moment, desk.settings.zone)

    @app.get("/")
    def index() -> BaseResponse:
        return redirect(url_for("inbox.inbox"))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def age(moment: datetime | None, now: datetime) -> str:
    """``5 min``, ``3 h``, ``2 d``: how long ago ``moment`` was."""
    if moment is None:
        return "—"
    return duration((now - moment).total_seconds())


def duration(seconds: float | None) -> str:
    """``5 min``, ``3 h``, ``2 d`` for a number of seconds (``—`` for None)."""
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400 * 2:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def local(moment: datetime | None, zone: ZoneInfo) -> str:
    """A timestamp in the desk's time zone, e.g. ``Mon 2026-03-02 09:15 CET``."""
    return moment.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z") if moment else "—"


def _register_blueprints(app: Flask, csrf: CSRFProtect) -> None:
    from . import api, inbox, lists, studio, tickets

    # The API authenticates with bearer tokens only, never the session cookie: no CSRF there.
    csrf.exempt(api.bp)

    app.register_blueprint(inbox.bp)
    app.register_blueprint(tickets.bp)
    app.register_blueprint(lists.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(studio.bp)
