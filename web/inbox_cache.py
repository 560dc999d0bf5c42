"""Rendered inbox pages kept per process, and the weak ETags the live refresh revalidates with
(the ticket page keeps its pages the same way: web.tickets says what its key holds).

A page is a function of: the database (summed up by ``workflows.inbox.inbox_revision``, which
every transaction that changes a task, ticket, SLA clock, customer, agent or group increments
before it commits), the viewer (id, name, role, groups: what they may see and the header), the
URL (view, filters, sort, page; the "back" links), the minute (SLA shares, colours, ages and the
SLA filter are computed as of its start), the SLA configuration and the session's CSRF token. The
key holds all but the last two: the configuration is checked by identity (a changed file is a new
object), and the token is left out of the stored body as a per-process random placeholder, put in
when the page is sent, so one stored page serves every session of its viewer. The ETag is a digest
of the body without tokens plus one of the session's token: a new session never revalidates a
page that carries another session's token.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime

from flask import current_app, make_response, request, session
from flask_wtf.csrf import generate_csrf
from werkzeug.wrappers import Response

from .auth import me

#: Where the CSRF token goes in a stored page (random: no subject or name can contain it).
PLACEHOLDER = "csrf-" + secrets.token_hex(16)


@dataclass(frozen=True)
class Rendered:
    body: str  # the page with PLACEHOLDER for the token
    digest: str  # of the body without the tokens
    config: object  # the SLA configuration it was computed with

    def page(self, token: str) -> str:
        return self.body.replace(PLACEHOLDER, token)


def rendered(body: str, *, config: object) -> Rendered:
    digest = hashlib.sha256(body.replace(PLACEHOLDER, "").encode()).hexdigest()[:32]
    return Rendered(body, digest, config)


def etag(page: Rendered, session_token: str) -> str:
    session = hashlib.sha256(session_token.encode()).hexdigest()[:16]
    return f"{page.digest}.{session}"


def send(kept: Rendered, outcome: str, header: str) -> Response:
    """The page with this session's CSRF token, or 304 when the browser holds it already;
    ``header`` says whether it was kept (``outcome``: hit or miss)."""
    field = current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
    if field not in session:
        generate_csrf()  # the session's token, made now
    tag = etag(kept, session[field])
    response: Response
    if request.if_none_match.contains_weak(tag):
        response = Response(status=304)
    else:
        response = make_response(kept.page(generate_csrf()))
    response.set_etag(tag, weak=True)
    response.headers[header] = outcome
    # The browser keeps the page but asks every time (If-None-Match): never shown unchecked.
    response.headers["Cache-Control"] = "private, no-cache"
    response.headers["Vary"] = "Cookie"
    return response


def serve(
    extension: str,
    revision: Hashable,
    as_of: datetime,
    config: object,
    header: str,
    render: Callable[[], str],
) -> Response:
    """The page this URL shows this viewer, kept in ``current_app.extensions[extension]`` under
    the key the module docstring describes, or rendered by ``render`` (with the placeholder for
    the CSRF token: pass ``csrf_token=lambda: PLACEHOLDER`` to the template) and kept."""
    user = me()
    groups = tuple(sorted(g.id for g in user.groups))
    key = (request.full_path, user.id, user.name, user.role, groups, revision, as_of)
    pages: PageCache = current_app.extensions[extension]
    kept, hit = pages.fetch(key, config, lambda: rendered(render(), config=config))
    return send(kept, "hit" if hit else "miss", header)


class PageCache:
    """A bounded, thread-safe LRU of rendered pages (gunicorn threads share one per process)."""

    def __init__(self, size: int = 256):
        self.size = size
        self._pages: OrderedDict[Hashable, Rendered] = OrderedDict()
        self._lock = threading.Lock()
        self._rendering: dict[Hashable, threading.Lock] = {}

    def fetch(self, key: Hashable, config: object, render: Callable[[], Rendered]) -> tuple[Rendered, bool]:
        """The kept page (True), or the one ``render`` makes and this keeps (False).

        One render per key at a time: a thread that finds the page being rendered waits for it
        instead of rendering it too (after each change, every poller of a page asks at once).
        """
        page = self.get(key, config)
        if page is not None:
            return page, True
        with self._lock:
            rendering = self._rendering.setdefault(key, threading.Lock())
        try:
            with rendering:
                page = self.get(key, config)
                if page is not None:
                    return page, True
                page = render()
                self.put(key, page)
                return page, False
        finally:
            with self._lock:
                self._rendering.pop(key, None)

    def get(self, key: Hashable, config: object) -> Rendered | None:
        with self._lock:
            page = self._pages.get(key)
            if page is None:
                return None
            if page.config is not config:
                del self._pages[key]
                return None
            self._pages.move_to_end(key)
            return page

    def put(self, key: Hashable, page: Rendered) -> None:
        with self._lock:
            self._pages[key] = page
            self._pages.move_to_end(key)
            while len(self._pages) > self.size:
                self._pages.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._pages.clear()
