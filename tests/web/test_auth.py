"""Logging in and out: argon2 passwords, the rate limit, safe redirects, cookies, headers, CSRF."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.routing import Rule

from tests.workflows.helpers import new_ticket, open_task
from web import create_app
from web.cli import main
from workflows import users
from workflows.app import Desk
from workflows.models import Base, User
from workflows.tickets import reference
from workflows.users import add_user

from ..conftest import MONDAY_9
from .conftest import PASSWORD, csrf_of, log_in

WRONG = "not the password at all"


class Clock:
    """The desk's clock, moved by hand."""

    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(app: Flask, desk: Desk) -> Clock:
    moving = Clock(MONDAY_9)
    desk.clock = moving  # the app reads the clock through the same desk object
    return moving


def use_cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2 at its lowest cost: 1 ms a hash instead of 0.5 s on a busy two-core runner.

    For tests about what the web layer does around a login (limits, redirects, who sees what),
    not about the hash; the tests of the hash itself keep the real parameters.
    """
    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    monkeypatch.setattr(users, "_hasher", cheap)
    monkeypatch.setattr(users, "_DUMMY_HASH", cheap.hash("lanedesk: no such user"))


@pytest.fixture
def cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    use_cheap_passwords(monkeypatch)


def attempt(client: FlaskClient, email: str, password: str, next_url: str = "") -> Any:
    token = csrf_of(client.get("/login").get_data(as_text=True))
    data = {"email": email, "password": password, "csrf_token": token}
    if next_url:
        data["next"] = next_url
    return client.post("/login", data=data)


def error_of(html: str) -> str:
    found = re.search(r'<p class="error" role="alert">([^<]*)</p>', html)
    assert found, html
    return found.group(1)


def without_tokens(html: str) -> str:
    return re.sub(r'(name="csrf-token" content|name="csrf_token"[^>]*value)="[^"]+"', "TOKEN", html)


# -- logging in ----------------------------------------------------------------------------------
def test_the_right_password_logs_in_and_lands_in_the_inbox(
    app: Flask, make_user: Callable[..., User]
) -> None:
    make_user("tereza@desk.example")
    client = app.test_client()
    assert client.get("/inbox").status_code == 302

    answer = attempt(client, "Tereza@Desk.Example", PASSWORD)

    assert answer.status_code == 302
    assert answer.headers["Location"] == "/inbox"
    page = client.get("/inbox")
    assert page.status_code == 200
    assert "Welcome, tereza." in page.get_data(as_text=True)


def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(
    app: Flask, desk: Desk, make_user: Callable[..., User]
) -> None:
    make_user("tereza@desk.example")
    with desk.unit_of_work() as session:  # a user who never set a password
        add_user(session, email="nopass@desk.example", role="agent", groups=["tier-1"], now=MONDAY_9)
    client = app.test_client()

    wrong = attempt(client, "tereza@desk.example", WRONG)
    unknown = attempt(client, "nobody@desk.example", WRONG)
    no_password = attempt(client, "nopass@desk.example", "")
    no_password_guess = attempt(client, "nopass@desk.example", WRONG)

    assert wrong.status_code == unknown.status_code == no_password_guess.status_code == 401
    assert error_of(wrong.get_data(as_text=True)) == "Wrong e-mail or password."
    assert error_of(unknown.get_data(as_text=True)) == "Wrong e-mail or password."
    assert error_of(no_password_guess.get_data(as_text=True)) == "Wrong e-mail or password."
    # Apart from the address typed in, the two pages are the same: nothing tells users apart.
    same = [
        without_tokens(a.get_data(as_text=True)).replace(email, "EMAIL")
        for a, email in ((wrong, "tereza@desk.example"), (unknown, "nobody@desk.example"))
    ]
    assert same[0] == same[1]
    assert no_password.status_code == 422  # an empty password is a form error, not a login attempt
    assert client.get("/inbox").status_code == 302


def test_a_user_without_a_password_cannot_log_in(app: Flask, desk: Desk) -> None:
    with desk.unit_of_work() as session:
        add_user(session, email="nopass@desk.example", role="admin", groups=[], now=MONDAY_9)
    client = app.test_client()

    for password in (WRONG, PASSWORD, "lanedesk: no such user"):  # the last is the dummy hash's
        assert attempt(client, "nopass@desk.example", password).status_code == 401
    assert client.get("/inbox").status_code == 302


# -- the rate limit ------------------------------------------------------------------------------
@pytest.mark.usefixtures("cheap_passwords")
def test_the_sixth_try_for_one_account_is_refused_for_15_minutes(
    app: Flask, clock: Clock, make_user: Callable[..., User]
) -> None:
    make_user("tereza@desk.example")
    make_user("jan@desk.example")
    client = app.test_client()
    for _ in range(5):
        assert attempt(client, "tereza@desk.example", WRONG).status_code == 401

    refused = attempt(client, "tereza@desk.example", PASSWORD)  # the right one, too late

    assert refused.status_code == 429
    assert "Too many failed attempts" in refused.get_data(as_text=True)
    assert client.get("/inbox").status_code == 302
    # Another account from the same address is not locked out.
    colleague = app.test_client()
    assert attempt(colleague, "jan@desk.example", PASSWORD).status_code == 302
    clock.advance(minutes=14, seconds=59)
    assert attempt(client, "tereza@desk.example", PASSWORD).status_code == 429
    clock.advance(seconds=1)
    assert attempt(client, "tereza@desk.example", PASSWORD).status_code == 302
    assert client.get("/inbox").status_code == 200


@pytest.mark.usefixtures("cheap_passwords")
def test_twenty_failures_from_one_address_lock_that_address_only(
    app: Flask, make_user: Callable[..., User]
) -> None:
    make_user("tereza@desk.example")
    guesser = app.test_client()
    for n in range(20):  # four tries at five accounts: no account reaches its own limit
        assert attempt(guesser, f"guess{n % 5}@desk.example", WRONG).status_code == 401

    assert attempt(guesser, "tereza@desk.example", PASSWORD).status_code == 429
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "192.0.2.7"
    assert attempt(elsewhere, "tereza@desk.example", PASSWORD).status_code == 302


@pytest.mark.usefixtures("cheap_passwords")
def test_behind_a_trusted_proxy_the_limit_counts_the_forwarded_client(
    desk: Desk, settings: Any, make_user: Callable[..., User]
) -> None:
    make_user("tereza@desk.example")
    desk.settings = dataclasses.replace(desk.settings, trusted_proxies=1)
    proxied = create_app(desk=desk)
    proxied.config.update(TESTING=True)
    guesser, colleague = proxied.test_client(), proxied.test_client()
    guesser.environ_base.update(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.9")
    colleague.environ_base.update(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.4")
    for n in range(20):  # all through the same proxy (10.0.0.2), from one client behind it
        assert attempt(guesser, f"guess{n % 5}@desk.example", WRONG).status_code == 401

    assert attempt(guesser, "tereza@desk.example", PASSWORD).status_code == 429
    assert attempt(colleague, "tereza@desk.example", PASSWORD).status_code == 302


# -- where a login leads -------------------------------------------------------------------------
@pytest.mark.usefixtures("cheap_passwords")
def test_a_login_returns_to_the_page_that_asked_for_it(app: Flask, make_user: Callable[..., User]) -> None:
    make_user("tereza@desk.example")
    client = app.test_client()
    asked = client.get("/inbox?view=all&priority=P1")
    assert asked.status_code == 302
    login_page = client.get(asked.headers["Location"]).get_data(as_text=True)
    hidden = re.search(r'name="next" value="([^"]*)"', login_page)
    assert hidden
    next_url = hidden.group(1).replace("&amp;", "&")
    assert next_url == "/inbox?view=all&priority=P1"

    answer = attempt(client, "tereza@desk.example", PASSWORD, next_url)

    assert answer.headers["Location"] == "/inbox?view=all&priority=P1"


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "//evil.example/inbox",
        "https://evil.example",
        "https://evil.example/inbox",
        "http:evil.example",
        "javascript:alert(1)",
        "/\\evil.example",  # browsers read a backslash as a slash: //evil.example
        "\\\\evil.example",
        "/\t/evil.example",  # browsers drop tabs and newlines: //evil.example
        "/\n/evil.example",
        "evil.example",
    ],
)
@pytest.mark.usefixtures("cheap_passwords")
def test_next_only_leads_to_a_path_on_this_site(
    app: Flask, make_user: Callable[..., User], target: str
) -> None:
    make_user("tereza@desk.example")

    answer = attempt(app.test_client(), "tereza@desk.example", PASSWORD, target)

    assert answer.status_code == 302
    assert where_a_browser_goes(answer.headers["Location"]).netloc == "localhost"
    if "\\" not in target:  # a backslash is sent percent-encoded, /%5Cevil.example: harmless
        assert answer.headers["Location"] == "/inbox"


def where_a_browser_goes(location: str) -> SplitResult:
    """``location`` resolved as browsers do (WHATWG URL: tabs and newlines dropped, \\ is /)."""
    cleaned = re.sub(r"[\t\n\r]", "", location.strip("\x00 ")).replace("\\", "/")
    return urlsplit(urljoin("http://localhost/login", cleaned))


# -- logging out ---------------------------------------------------------------------------------
def test_logout_needs_a_post_with_the_csrf_token(agent_client: FlaskClient) -> None:
    assert agent_client.get("/logout").status_code == 405
    assert agent_client.post("/logout").status_code == 400
    page = agent_client.get("/inbox")
    assert page.status_code == 200  # still logged in

    answer = agent_client.post("/logout", data={"csrf_token": csrf_of(page.get_data(as_text=True))})

    assert answer.status_code == 302
    assert answer.headers["Location"] == "/login"
    assert "You are logged out." in agent_client.get("/login").get_data(as_text=True)
    assert agent_client.get("/inbox").status_code == 302


# -- cookies and headers -------------------------------------------------------------------------
def session_cookie(response: Any) -> str:
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("lanedesk_session=")]
    assert cookies, response.headers
    return str(cookies[-1])


def test_the_session_cookie_is_http_only_and_same_site_lax(
    app: Flask, make_user: Callable[..., User]
) -> None:
    make_user("tereza@desk.example")

    cookie = session_cookie(attempt(app.test_client(), "tereza@desk.example", PASSWORD))

    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # http://127.0.0.1:8000: a Secure cookie would never come back


def test_the_session_cookie_is_secure_when_the_desk_is_served_over_https(
    desk: Desk, settings: Any, make_user: Callable[..., User]
) -> None:
    make_user("tereza@desk.example")
    https = dataclasses.replace(desk, settings=dataclasses.replace(settings, base_url="https://desk.example"))
    secure_app = create_app(desk=https)
    secure_app.config.update(TESTING=True)
    client = secure_app.test_client()
    page = client.get("/login", base_url="https://desk.example")
    token = csrf_of(page.get_data(as_text=True))

    answer = client.post(
        "/login",
        base_url="https://desk.example",
        data={"email": "tereza@desk.example", "password": PASSWORD, "csrf_token": token},
        headers={"Referer": "https://desk.example/login"},  # Flask-WTF checks it over https
    )

    assert answer.status_code == 302
    cookie = session_cookie(answer)
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert answer.headers["Strict-Transport-Security"].startswith("max-age=")


def csp_directives(header: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def assert_secure_headers(response: Any) -> None:
    csp = csp_directives(response.headers["Content-Security-Policy"])
    assert csp["script-src"] == ["'self'"], csp
    assert "'unsafe-inline'" not in csp["script-src"] and "'unsafe-eval'" not in csp["script-src"]
    assert csp["default-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["object-src"] == ["'none'"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] in ("same-origin", "no-referrer", "strict-origin")
    assert "Strict-Transport-Security" not in response.headers  # plain http: would pin a wrong host


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE)


def test_pages_carry_a_strict_csp_and_the_security_headers(
    app: Flask, desk: Desk, make_user: Callable[..., User]
) -> None:
    make_user("tereza@desk.example")
    with desk.unit_of_work() as session:
        task_id = open_task(session, new_ticket(session, desk.settings, MONDAY_9)).id
    anonymous = app.test_client()
    agent = app.test_client()
    log_in(agent, "tereza@desk.example")

    answers = {
        "login": anonymous.get("/login"),
        "redirect": anonymous.get("/inbox"),
        "inbox": agent.get("/inbox"),
        "rows": agent.get("/inbox/rows"),
        "task": agent.get(f"/tasks/{task_id}"),
        "not found": agent.get("/no/such/page"),
        "csrf refused": agent.post(f"/tasks/{task_id}/claim"),
        "json": agent.get("/healthz"),
    }

    assert [name for name, a in answers.items() if a.status_code >= 500] == []
    for name, answer in answers.items():
        assert_secure_headers(answer)
        if answer.mimetype == "text/html":  # the CSP forbids inline scripts: there must be none
            html = answer.get_data(as_text=True)
            assert not INLINE_SCRIPT.search(html), name
            assert not INLINE_HANDLER.search(html), name
    assert answers["inbox"].headers["Cache-Control"] == "no-store"


# -- CSRF ----------------------------------------------------------------------------------------
def snapshot(desk: Desk) -> dict[str, list[str]]:
    """Every row of every table, to prove that a refused request changed nothing."""
    with desk.engine.connect() as conn:
        return {
            table.name: sorted(repr(tuple(row)) for row in conn.execute(select(table)))
            for table in Base.metadata.sorted_tables
        }


def post_url(app: Flask, rule: Rule, ticket_ref: str, task_id: str) -> str:
    """A URL for ``rule`` naming real objects where it can (a ticket, a task), else 1."""
    values: dict[str, Any] = {}
    for name in rule.arguments:
        if "task" in name:
            values[name] = task_id
        elif "ref" in name or "ticket" in name:
            values[name] = ticket_ref
        else:  # an attachment, a mail: a number fits every converter
            values[name] = "1"
    return app.url_map.bind("localhost").build(rule.endpoint, values, method="POST")


@pytest.mark.usefixtures("cheap_passwords")
def test_every_post_without_the_csrf_token_is_refused_and_changes_nothing(
    app: Flask, desk: Desk, make_user: Callable[..., User]
) -> None:
    make_user("admin@desk.example", role="admin", groups=())
    make_user("jan@desk.example")
    with desk.unit_of_work() as session:
        ticket = new_ticket(session, desk.settings, MONDAY_9)
        ticket_ref, task_id = reference(desk.settings, ticket), open_task(session, ticket).id
    client = app.test_client()
    log_in(client, "admin@desk.example")
    rules = [r for r in app.url_map.iter_rules() if "POST" in (r.methods or ())]
    assert {r.rule for r in rules} >= {"/login", "/logout", "/tasks/<task_id>", "/tasks/<task_id>/claim"}
    before = snapshot(desk)

    answers = {}
    for rule in rules:
        url = post_url(app, rule, ticket_ref, task_id)
        form = {"assignee": "jan@desk.example", "body": "Hello", "category": "incident", "priority": "P2"}
        answers[rule.rule] = client.post(url, data={**form, "summary": "x", "email": "a@b.example"})

    # The API authenticates by bearer token, not by cookie: a cookie alone gets 401 there.
    expected = {path: (401 if path.startswith("/api/") else 400) for path in answers}
    assert {path: a.status_code for path, a in answers.items()} == expected
    assert snapshot(desk) == before
    assert client.get("/inbox").status_code == 200  # the logout was refused too


def test_htmx_sends_the_token_as_a_header(app: Flask, desk: Desk, agent_client: FlaskClient) -> None:
    with desk.unit_of_work() as session:
        task_id = open_task(session, new_ticket(session, desk.settings, MONDAY_9)).id
    token = csrf_of(agent_client.get("/inbox").get_data(as_text=True))

    answer = agent_client.post(f"/tasks/{task_id}/claim", headers={"X-CSRFToken": token})

    assert answer.status_code == 302
    assert task_id in agent_client.get("/inbox?view=mine").get_data(as_text=True)


def test_a_token_from_another_session_is_refused(
    app: Flask, desk: Desk, agent_client: FlaskClient, make_user: Callable[..., User]
) -> None:
    make_user("jan@desk.example")
    with desk.unit_of_work() as session:
        task_id = open_task(session, new_ticket(session, desk.settings, MONDAY_9)).id
    other = app.test_client()
    log_in(other, "jan@desk.example")
    foreign = csrf_of(other.get("/inbox").get_data(as_text=True))

    answer = agent_client.post(f"/tasks/{task_id}/claim", data={"csrf_token": foreign})

    assert answer.status_code == 400
    assert "did not come from this site" in answer.get_data(as_text=True)


# -- `lanedesk user password` --------------------------------------------------------------------
def test_the_password_command_sets_a_password_that_logs_in(app: Flask, desk: Desk) -> None:
    with desk.unit_of_work() as session:
        add_user(session, email="tereza@desk.example", role="agent", groups=["tier-1"], now=MONDAY_9)
    runner = CliRunner()

    result = runner.invoke(
        main,
        ["user", "password", "Tereza@desk.example", "--password-stdin"],
        obj=desk,
        input="a long enough passphrase\n",
    )

    assert result.exit_code == 0, result.output
    assert "password set for tereza@desk.example" in result.output
    assert "a long enough passphrase" not in result.output
    log_in(app.test_client(), "tereza@desk.example", "a long enough passphrase")


def test_the_password_command_refuses_short_passwords_and_unknown_users(app: Flask, desk: Desk) -> None:
    with desk.unit_of_work() as session:
        add_user(session, email="tereza@desk.example", role="agent", groups=["tier-1"], now=MONDAY_9)
    runner = CliRunner()

    short = runner.invoke(
        main, ["user", "password", "tereza@desk.example", "--password-stdin"], obj=desk, input="short\n"
    )
    unknown = runner.invoke(
        main,
        ["user", "password", "nobody@desk.example", "--password-stdin"],
        obj=desk,
        input="a long enough passphrase\n",
    )

    assert short.exit_code == 1
    assert "at least 10 characters" in short.output
    assert unknown.exit_code == 1 and "no user nobody@desk.example" in unknown.output
    with desk.unit_of_work() as session:
        user = session.scalar(select(User).where(User.email == "tereza@desk.example"))
        assert user is not None and user.password_hash is None
    assert attempt(app.test_client(), "tereza@desk.example", "short").status_code == 401
