"""The studio's BPMN editor in a real browser: headless Chromium (Debian's /usr/bin/chromium).

A process owner's change to the ticket lifecycle: open the deployed version as a draft, change the
Tier 1 first-response timer in the properties panel to a bare ``PT2H`` (refused: a timer is a
Python expression), see Check mark the timer and list the problem, fix it as ``"PT2H"``, check
clean, save the draft, deploy it with a note and find the new version on the process page. The app
runs in a real HTTP server on loopback, as in test_browser.py; screenshots go to var/screenshots/.

Skipped when Chromium, the npm packages or the editor bundle are missing, unless
LANEDESK_REQUIRE_CHROMIUM=1 (CI), where `make test` builds the bundle first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from web.assets import NODE_MODULES, built, editor_built, init_app
from workflows.app import Desk
from workflows.models import ProcessDraft, ProcessVersion, User
from workflows.studio import save_draft, version_xml

from ..conftest import MONDAY_9
from .browser import chromium_tab, require_browser, serve, shot
from .conftest import PASSWORD

sync_api = pytest.importorskip("playwright.sync_api")

TIMER = "triage_first_response_due"  # the boundary timer on Triage: "First response due"


@pytest.fixture
def server(app: Flask) -> Iterator[str]:
    require_browser(
        None if built(NODE_MODULES) else "the studio's editor is not built (npm run build --prefix web)"
    )
    with serve(app) as url:
        yield url


@pytest.fixture
def page(server: str) -> Iterator[object]:
    with chromium_tab(width=1400, expected="status of 409", accept_downloads=True) as tab:
        yield tab


def test_the_bundle_is_served_from_dist_beside_the_assets_dir_and_nothing_else_is(tmp_path: Path) -> None:
    root = tmp_path / "node_modules"  # as LANEDESK_ASSETS_DIR names it; the bundle is in ../dist
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "studio.js").write_text("/* built */", encoding="utf-8")
    (tmp_path / "dist" / "secret.txt").write_text("not listed", encoding="utf-8")
    app = Flask(__name__)
    init_app(app, root)
    client = app.test_client()

    assert not built(root) and not editor_built(app)  # studio.css is missing
    (tmp_path / "dist" / "studio.css").write_text("/* built */", encoding="utf-8")
    assert built(root) and editor_built(app)
    with client.get("/static/vendor/studio.js") as answer:
        assert (answer.status_code, answer.get_data(as_text=True)) == (200, "/* built */")
        assert answer.headers["Cache-Control"] == "no-cache"  # revalidated: a rebuild shows at once
    assert client.get("/static/vendor/secret.txt").status_code == 404
    assert client.get("/static/vendor/htmx.min.js").status_code == 404  # not installed under root


def log_in_as_owner(tab: object, server: str, make_user: Callable[..., User]) -> None:
    make_user("olga@desk.example", role="owner", groups=())
    tab.goto(f"{server}/login")  # type: ignore[attr-defined]
    tab.get_by_label("E-mail").fill("olga@desk.example")  # type: ignore[attr-defined]
    tab.get_by_label("Password").fill(PASSWORD)  # type: ignore[attr-defined]
    tab.get_by_role("button", name="Log in").click()  # type: ignore[attr-defined]


def open_new_draft(tab: object, server: str) -> int:
    tab.goto(f"{server}/studio/processes/ticket_lifecycle")  # type: ignore[attr-defined]
    tab.get_by_role("button", name="Edit the newest version (new draft)").click()  # type: ignore[attr-defined]
    tab.wait_for_url(f"{server}/studio/drafts/*")  # type: ignore[attr-defined]
    sync_api.expect(tab.locator("#studio-status")).to_contain_text("Diagram loaded")  # type: ignore[attr-defined]
    return int(tab.url.rsplit("/", 1)[1])  # type: ignore[attr-defined]


def open_timer(tab: object) -> object:
    """Selects the Tier 1 first-response timer; its properties panel shows the Timer group open."""
    timer = tab.locator(f'#studio-editor g.djs-element[data-element-id="{TIMER}"]')  # type: ignore[attr-defined]
    timer.click()
    header = tab.locator(".bio-properties-panel-header")  # type: ignore[attr-defined]
    sync_api.expect(header).to_contain_text("First response due")
    tab.locator('[data-group-id="group-timer"] .bio-properties-panel-group-header').click()  # type: ignore[attr-defined]
    return timer


def set_timer(tab: object, text: str) -> None:
    value = tab.locator("#bio-properties-panel-timerEventDefinitionValue")  # type: ignore[attr-defined]
    value.fill(text)
    value.press("Tab")  # the panel commits a field on blur (typing is debounced)


def test_an_owner_changes_the_tier_1_timer_checks_saves_and_deploys_a_new_version(
    desk: Desk, server: str, page: object, make_user: Callable[..., User]
) -> None:
    with desk.unit_of_work(readonly=True) as session:
        before = session.scalar(
            select(ProcessVersion.version)
            .where(ProcessVersion.process_id == "ticket_lifecycle")
            .order_by(ProcessVersion.version.desc())
            .limit(1)
        )
    assert before is not None
    tab = page
    expect = sync_api.expect

    log_in_as_owner(tab, server, make_user)
    open_new_draft(tab, server)
    status = tab.locator("#studio-status")  # type: ignore[attr-defined]
    shot(tab, "studio-1-draft")

    # The timer in the properties panel: a duration, first written as bare ISO text.
    timer = open_timer(tab)
    tab.locator("#bio-properties-panel-timerEventDefinitionType").select_option("timeDuration")  # type: ignore[attr-defined]
    set_timer(tab, "PT2H")
    expect(tab.locator(".studio")).to_have_class(re.compile(r"\bstudio-dirty\b"))  # type: ignore[attr-defined]

    tab.get_by_role("button", name="Check", exact=True).click()  # type: ignore[attr-defined]
    expect(status).to_contain_text("Check found 1 problem")
    expect(timer).to_have_class(re.compile(r"\bstudio-problem\b"))
    problems = tab.locator("#studio-problems li")  # type: ignore[attr-defined]
    expect(problems).to_have_count(1)
    expect(problems.first).to_contain_text("ticket_lifecycle.bpmn:")
    expect(problems.first).to_contain_text(f": {TIMER}: timer PT2H is not a Python expression")
    expect(tab.locator(".studio-problem-note")).to_contain_text("quote it")  # type: ignore[attr-defined]
    shot(tab, "studio-2-problem")

    # The list selects the element it names (the panel shows it again after a click elsewhere).
    tab.locator('#studio-editor g.djs-element[data-element-id="triage"]').click()  # type: ignore[attr-defined]
    expect(tab.locator(".bio-properties-panel-header")).to_contain_text("Triage")  # type: ignore[attr-defined]
    problems.first.get_by_role("button").click()
    expect(tab.locator(".bio-properties-panel-header")).to_contain_text("First response due")  # type: ignore[attr-defined]
    expect(timer).to_have_class(re.compile(r"\bselected\b"))

    # Fixed: quoted, it is a Python expression giving an ISO 8601 duration.
    set_timer(tab, '"PT2H"')
    tab.get_by_role("button", name="Check", exact=True).click()  # type: ignore[attr-defined]
    expect(status).to_contain_text("Check passed: no problems found.")
    expect(problems).to_have_count(0)
    expect(tab.locator("#studio-editor g.studio-problem")).to_have_count(0)  # type: ignore[attr-defined]

    tab.get_by_role("button", name="Save draft").click()  # type: ignore[attr-defined]
    expect(status).to_contain_text("saved as revision 2")
    expect(tab.locator(".studio")).not_to_have_class(re.compile(r"\bstudio-dirty\b"))  # type: ignore[attr-defined]
    shot(tab, "studio-3-saved")

    tab.get_by_label("Deploy note").fill("First response reminder after two hours")  # type: ignore[attr-defined]
    tab.get_by_role("button", name="Deploy", exact=True).click()  # type: ignore[attr-defined]
    tab.wait_for_url(f"{server}/studio/processes/ticket_lifecycle")  # type: ignore[attr-defined]
    newest = tab.get_by_role("row").filter(has_text=f"version {before + 1}")  # type: ignore[attr-defined]
    expect(newest).to_contain_text("First response reminder after two hours")
    shot(tab, "studio-4-deployed")

    with desk.unit_of_work(readonly=True) as session:
        version = session.scalars(
            select(ProcessVersion).where(
                ProcessVersion.process_id == "ticket_lifecycle", ProcessVersion.version == before + 1
            )
        ).one()
        assert version.note == "First response reminder after two hours"
        xml = version_xml(session, version).decode()
    assert '<bpmn:timeDuration xsi:type="bpmn:tFormalExpression">"PT2H"</bpmn:timeDuration>' in xml


def test_an_old_version_opens_read_only_and_can_be_checked_and_downloaded(
    server: str, page: object, make_user: Callable[..., User]
) -> None:
    tab = page
    expect = sync_api.expect
    log_in_as_owner(tab, server, make_user)

    tab.goto(f"{server}/studio/processes/ticket_lifecycle/versions/1")  # type: ignore[attr-defined]
    expect(tab.locator("#studio-status")).to_contain_text("Diagram loaded, read-only")  # type: ignore[attr-defined]
    expect(tab.locator("#studio-editor .djs-palette")).to_have_count(0)  # type: ignore[attr-defined]
    expect(tab.locator("#studio-properties")).to_have_count(0)  # type: ignore[attr-defined]
    expect(tab.get_by_role("button", name="Save draft")).to_have_count(0)  # type: ignore[attr-defined]
    expect(tab.get_by_role("button", name="Deploy", exact=True)).to_have_count(0)  # type: ignore[attr-defined]

    tab.get_by_role("button", name="Check", exact=True).click()  # type: ignore[attr-defined]
    expect(tab.locator("#studio-status")).to_contain_text("Check passed")  # type: ignore[attr-defined]
    with tab.expect_download() as caught:  # type: ignore[attr-defined]
        tab.get_by_role("button", name="Download").click()  # type: ignore[attr-defined]
    download = caught.value
    assert download.suggested_filename == "ticket_lifecycle.bpmn"
    assert 'id="triage_first_response_due"' in Path(download.path()).read_text(encoding="utf-8")
    shot(tab, "studio-5-read-only")


def test_a_save_over_someone_elses_newer_revision_is_refused_and_the_work_stays(
    desk: Desk, server: str, page: object, make_user: Callable[..., User]
) -> None:
    tab = page
    expect = sync_api.expect
    log_in_as_owner(tab, server, make_user)
    draft_id = open_new_draft(tab, server)
    open_timer(tab)
    tab.locator("#bio-properties-panel-timerEventDefinitionType").select_option("timeDuration")  # type: ignore[attr-defined]
    set_timer(tab, '"PT2H"')

    # Meanwhile a colleague saves revision 2 of the same draft.
    with desk.unit_of_work() as session:
        colleague = session.scalars(select(User).where(User.email == "olga@desk.example")).one()
        xml = (Path(__file__).resolve().parents[2] / "bpmn" / "ticket_lifecycle.bpmn").read_bytes()
        save_draft(session, draft_id, xml=xml, base_revision=1, actor=colleague, now=MONDAY_9)

    tab.get_by_role("button", name="Save draft").click()  # type: ignore[attr-defined]
    status = tab.locator("#studio-status")  # type: ignore[attr-defined]
    expect(status).to_contain_text("Not saved: ")
    expect(status).to_contain_text("Your changes are still here")
    expect(tab.locator(".studio")).to_have_class(re.compile(r"\bstudio-dirty\b"))  # type: ignore[attr-defined]
    expect(tab.locator("#bio-properties-panel-timerEventDefinitionValue")).to_have_value('"PT2H"')  # type: ignore[attr-defined]
    shot(tab, "studio-6-conflict")
    with desk.unit_of_work(readonly=True) as session:
        assert session.get(ProcessDraft, draft_id).revision == 2  # type: ignore[union-attr]

    # On a narrow screen the properties panel folds under the canvas, opened by its button.
    tab.set_viewport_size({"width": 800, "height": 900})  # type: ignore[attr-defined]
    panel = tab.locator("#studio-properties")  # type: ignore[attr-defined]
    toggle = tab.get_by_role("button", name="Properties")  # type: ignore[attr-defined]
    expect(panel).to_be_hidden()
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(panel).to_be_visible()
    expect(tab.locator("#bio-properties-panel-timerEventDefinitionValue")).to_have_value('"PT2H"')  # type: ignore[attr-defined]
    shot(tab, "studio-7-narrow")
