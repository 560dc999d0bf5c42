"""The workspace on the suite's database: an app per test, users with passwords, a logged-in client."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from workflows.app import Desk
from workflows.models import User
from workflows.users import add_user, set_password

from ..conftest import MONDAY_9

PASSWORD = "correct horse battery"


@pytest.fixture
def app(desk: Desk) -> Iterator[Flask]:
    from web import create_app

    desk.clock = lambda: MONDAY_9
    flask_app = create_app(desk=desk)
    flask_app.config.update(TESTING=True)
    yield flask_app


@pytest.fixture
def make_user(desk: Desk) -> Callable[..., User]:
    def make(
        email: str, role: str = "agent", groups: tuple[str, ...] = ("tier-1",), lead_of: tuple[str, ...] = ()
    ) -> User:
        with desk.unit_of_work() as session:
            user = add_user(
                session, email=email, role=role, groups=list(groups), now=MONDAY_9, lead_of=list(lead_of)
            )
            set_password(session, user, PASSWORD, now=MONDAY_9)
        return user

    return make


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', html) or re.search(
        r'name="csrf_token"[^>]*value="([^"]+)"', html
    )
    assert found, "no CSRF token on the page"
    return found.group(1)


def log_in(client: FlaskClient, email: str, password: str = PASSWORD) -> None:
    page = client.get("/login").get_data(as_text=True)
    answer = client.post("/login", data={"email": email, "password": password, "csrf_token": csrf_of(page)})
    assert answer.status_code == 302, answer.get_data(as_text=True)


@pytest.fixture
def agent_client(app: Flask, make_user: Callable[..., User]) -> FlaskClient:
    make_user("tereza@desk.example")
    client = app.test_client()
    log_in(client, "tereza@desk.example")
    return client
