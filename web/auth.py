"""Logging in and out, who may see what, and the login rate limit.

Roles: ``agent`` (works the tasks of their groups), ``owner`` (deploys diagrams; sees what an
agent of their groups sees), ``admin`` (sees and does everything). Group membership decides
which tickets and tasks an agent sees (workflows.tickets.may_work_on).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from flask import Blueprint, Flask, abort, flash, redirect, render_template, request, url_for
from flask_login import LoginManager, current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.orm import joinedload
from werkzeug.wrappers import Response
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from workflows.models import LoginFailure, User
from workflows.users import authenticate

from .db import db, desk

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to see this page."
login_manager.session_protection = "strong"

#: Failed logins allowed per account, and per client address, in WINDOW.
MAX_FAILURES_PER_ACCOUNT = 5
MAX_FAILURES_PER_ADDRESS = 20
WINDOW = timedelta(minutes=15)

F = TypeVar("F", bound=Callable[..., Any])


class Account:
    """What Flask-Login keeps of a user: the row's id (loaded fresh for every request)."""

    def __init__(self, user: User):
        self.user = user
        self.id = user.id
        self.is_authenticated = True
        self.is_active = True
        self.is_anonymous = False

    def get_id(self) -> str:
        return str(self.id)


#: One statement, built once (every request runs it): the groups every page needs joined, not
#: a second SELECT. The request's session is new, so Session.get's identity map lookup would
#: find nothing; building its query each time cost a quarter of a kept page's CPU.
_USER = select(User).options(joinedload(User.groups)).where(User.id == bindparam("user_id"))


@login_manager.user_loader
def _load(user_id: str) -> Account | None:
    if not user_id.isdigit():
        return None
    user = db().execute(_USER, {"user_id": int(user_id)}).unique().scalar_one_or_none()
    return Account(user) if user is not None and user.password_hash else None


def me() -> User:
    """The logged-in user (views behind ``login_required`` only)."""
    return cast(Account, current_user).user


def roles(*allowed: str) -> Callable[[F], F]:
    """Only users with one of ``allowed`` roles (403 for others, the login page for nobody)."""

    def decorate(view: F) -> F:
        @wraps(view)
        @login_required
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if me().role not in allowed:
                abort(403)
            return view(*args, **kwargs)

        return cast(F, wrapped)

    return decorate


class LoginForm(FlaskForm):
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


def _client() -> str:
    return (request.remote_addr or "unknown")[:64]


def _too_many(email: str) -> bool:
    since = desk().clock() - WINDOW
    session = db()
    by_account = session.scalar(
        select(func.count()).where(LoginFailure.email == email, LoginFailure.created_at > since)
    )
    by_address = session.scalar(
        select(func.count()).where(LoginFailure.ip == _client(), LoginFailure.created_at > since)
    )
    return (by_account or 0) >= MAX_FAILURES_PER_ACCOUNT or (by_address or 0) >= MAX_FAILURES_PER_ADDRESS


def _safe_next(target: str | None) -> str:
    """Only a path on this site (no scheme, no host, no //evil.example)."""
    if not target:
        return url_for("inbox.inbox")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("inbox.inbox")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    form = LoginForm()
    if request.method == "GET":
        return render_template("login.html", form=form, next=request.args.get("next", ""))
    if not form.validate_on_submit():
        return render_template("login.html", form=form, next=request.form.get("next", "")), 422
    email = (form.email.data or "").strip().lower()
    if _too_many(email):
        return (
            render_template(
                "login.html",
                form=form,
                next=request.form.get("next", ""),
                error="Too many failed attempts. Wait 15 minutes and try again.",
            ),
            429,
        )
    user = authenticate(db(), email, form.password.data or "")
    if user is None:
        now = desk().clock()
        session = db()
        session.add(LoginFailure(email=email[:320], ip=_client(), created_at=now))
        session.execute(delete(LoginFailure).where(LoginFailure.created_at < now - timedelta(days=1)))
        session.commit()  # kept although the answer is an error page
        return (
            render_template(
                "login.html", form=form, next=request.form.get("next", ""), error="Wrong e-mail or password."
            ),
            401,
        )
    login_user(Account(user))
    flash(f"Welcome, {user.name}.")
    return redirect(_safe_next(request.form.get("next")))


@bp.post("/logout")
@login_required
def logout() -> Response:
    logout_user()
    flash("You are logged out.")
    return redirect(url_for("auth.login"))


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    app.register_blueprint(bp)

    @app.context_processor
    def _user() -> dict[str, Any]:
        return {"me": me() if current_user.is_authenticated else None}
