"""What the browser tests share: Debian's Chromium through Playwright, the app on a loopback
HTTP server (werkzeug, in a thread), a tab that records script errors, and screenshots under
var/screenshots/ (not committed) for a human to look at.

A test skips when Chromium or the front-end packages are missing, unless
LANEDESK_REQUIRE_CHROMIUM=1 (CI), where it fails instead.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from web.assets import NODE_MODULES, installed

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
REQUIRED = os.environ.get("LANEDESK_REQUIRE_CHROMIUM") == "1"


def require_browser(*missing: str | None) -> None:
    """Skip (or, in CI, fail) when Chromium, the npm packages or anything in ``missing`` is absent."""
    problems = [
        f"{CHROMIUM} is missing (Debian: apt-get install chromium)" if not CHROMIUM.exists() else None,
        "the front-end packages are missing (npm ci --prefix web)" if not installed(NODE_MODULES) else None,
        *missing,
    ]
    problem = next((p for p in problems if p), None)
    if problem:
        if REQUIRED:
            pytest.fail(problem)
        pytest.skip(problem)


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    """The app on a free loopback port; yields its base URL."""
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_port}"
    finally:
        http.shutdown()
        thread.join(timeout=10)


@contextmanager
def chromium_tab(*, width: int, height: int = 900, expected: str, **context: Any) -> Iterator[Any]:
    """A headless Chromium tab; after the test, any script error but ``expected`` fails it.

    (A CSP violation or a broken bundle only shows as a console error: it must not pass unseen.
    ``expected`` is the browser's note about a status the test provokes on purpose.)
    """
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        tab_context = browser.new_context(viewport={"width": width, "height": height}, **context)
        tab = tab_context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        tab.set_default_timeout(15_000)
        try:
            yield tab
        finally:
            tab_context.close()
            browser.close()
        assert [e for e in errors if expected not in e] == []


def shot(tab: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
