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
from lxml import etree
from sqlalchemy import select

from engine.parser import read_form_fields
from engine.runtime import Definition
from web.assets import NODE_MODULES, built, editor_built, init_app
from workflows.app import Desk
from workflows.definitions import validate_definition
from workflows.models import ProcessDraft, ProcessVersion, User
from workflows.studio import newest_version, save_draft, version_xml

from ..conftest import MONDAY_9
from .browser import chromium_tab, require_browser, serve, shot
from .conftest import PASSWORD

sync_api = pytest.importorskip("playwright.sync_api")

NS = {"bpmn": "http://www.omg.org/spec/BPMN/20100524/MODEL"}
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


# -- A new user task: "Call the customer" in the Tier 2 lane, with a generated form ---------------

NEW_TASK = "Call the customer"
#: Where the owner drops the new task: on the Tier 2 work's outgoing flow, whose first segment
#: runs through the Tier 2 lane from "Work ticket (Tier 2)" towards the work-done gateway.
INSERT_ON = "flow_work_tier_2_done"

#: The screen point at ``fraction`` of the first segment of connection ``id``, read from the
#: connection's SVG hit path (straight segments) and the canvas's current transform.
SEGMENT_POINT = """([id, fraction]) => {
  const hit = document.querySelector(`#studio-editor g.djs-connection[data-element-id="${id}"] .djs-hit`);
  const [x0, y0, x1, y1] = hit.getAttribute("d").match(/-?\\d+(?:\\.\\d+)?/g).map(Number);
  const point = new DOMPoint(x0 + (x1 - x0) * fraction, y0 + (y1 - y0) * fraction);
  const { x, y } = point.matrixTransform(hit.getScreenCTM());
  return { x, y };
}"""


def segment_point(tab: object, connection: str, fraction: float) -> dict[str, float]:
    return tab.evaluate(SEGMENT_POINT, [connection, fraction])  # type: ignore[attr-defined,no-any-return]


def zoom_in_at(tab: object, point: dict[str, float], steps: int) -> None:
    """Ctrl + mouse wheel over ``point``, as an owner zooms in on the part they are about to edit."""
    tab.mouse.move(point["x"], point["y"])  # type: ignore[attr-defined]
    tab.keyboard.down("Control")  # type: ignore[attr-defined]
    for _ in range(steps):
        tab.mouse.wheel(0, -100)  # type: ignore[attr-defined]
    tab.keyboard.up("Control")  # type: ignore[attr-defined]


def form_field(tab: object, index: int, entry: str) -> object:
    """An input of the ``index``-th form field in the properties panel: formFieldID, formFieldType..."""
    entry_box = f'#studio-properties [data-entry-id$="-formField-{index}-{entry}"]'
    return tab.locator(entry_box).locator("input, select")  # type: ignore[attr-defined]


def commit(field: object, text: str) -> None:
    field.fill(text)  # type: ignore[attr-defined]
    field.press("Tab")  # type: ignore[attr-defined]  # the panel commits a field on blur


def add_list_item(tab: object, index: int, entry: str) -> object:
    """Presses Create on a list of the ``index``-th form field (formFieldValues, formFieldConstraints);
    returns that list's items."""
    box = tab.locator(f'#studio-properties [data-entry-id$="-formField-{index}-{entry}"]')  # type: ignore[attr-defined]
    box.locator(".bio-properties-panel-list-entry-header .bio-properties-panel-add-entry").click()
    return box.locator("li.bio-properties-panel-list-entry-item")


def test_an_owner_adds_a_call_the_customer_task_in_tier_2_with_a_form_checks_and_deploys_it(
    desk: Desk, server: str, page: object, make_user: Callable[..., User]
) -> None:
    """The issue's user story, in the real editor.

    The owner zooms in (Ctrl + wheel) on the Tier 2 work's outgoing flow, drags a task from the
    palette onto that flow (bpmn-js inserts a shape dropped on a connection, and puts it in the
    lane it lands in), types its name, makes it a user task with the context pad's "Change
    element" menu, and in the properties panel gives it a generated form: an enum
    ``call_outcome`` (two values, required) and a date ``called_at``. Check, Save draft, Deploy.
    The server then holds a new version where the task sits in the Tier 2 lane between the Tier 2
    work and the work-done gateway, with the form fields as the desk parses them, and which
    validates clean.

    Only mouse, keyboard and the panel's inputs are used; the one thing read from the page's
    script side is where the flow's first segment is on screen (its SVG path and transform), so
    the drop lands on the flow whatever the zoom.
    """
    tab = page
    expect = sync_api.expect
    with desk.unit_of_work(readonly=True) as session:
        before = newest_version(session, "ticket_lifecycle").version

    log_in_as_owner(tab, server, make_user)
    open_new_draft(tab, server)
    status = tab.locator("#studio-status")  # type: ignore[attr-defined]

    # Zoom in on the flow, then drag a task from the palette onto it, in the Tier 2 lane.
    zoom_in_at(tab, segment_point(tab, INSERT_ON, 0.65), steps=8)
    drop = segment_point(tab, INSERT_ON, 0.65)
    canvas = tab.locator("#studio-editor").bounding_box()  # type: ignore[attr-defined]
    assert canvas["x"] + 150 < drop["x"] < canvas["x"] + canvas["width"] - 100, (drop, canvas)
    assert canvas["y"] + 100 < drop["y"] < canvas["y"] + canvas["height"] - 100, (drop, canvas)
    tab.locator('.djs-palette .entry[data-action="create.task"]').hover()  # type: ignore[attr-defined]
    tab.mouse.down()  # type: ignore[attr-defined]
    tab.mouse.move(drop["x"], drop["y"], steps=12)  # type: ignore[attr-defined]
    tab.mouse.up()  # type: ignore[attr-defined]

    # bpmn-js opens the new task's label for typing.
    label = tab.locator(".djs-direct-editing-parent")  # type: ignore[attr-defined]
    expect(label).to_be_visible()
    tab.keyboard.type(NEW_TASK)  # type: ignore[attr-defined]
    tab.keyboard.press("Enter")  # type: ignore[attr-defined]
    expect(label).to_be_hidden()
    task = tab.locator("#studio-editor g.djs-shape").filter(has_text=NEW_TASK)  # type: ignore[attr-defined]
    expect(task).to_have_count(1)
    expect(tab.locator(".studio")).to_have_class(re.compile(r"\bstudio-dirty\b"))  # type: ignore[attr-defined]

    # A user task: the context pad's wrench, "Change element" → User task. On a loaded machine
    # the first click can land while bpmn-js is still redrawing the renamed shape and select
    # nothing; select it again until its context pad is there (a retry, not a wait).
    replace = tab.locator('.djs-context-pad .entry[data-action="replace"]')  # type: ignore[attr-defined]
    for _attempt in range(3):
        task.click()
        try:
            replace.wait_for(state="visible", timeout=5_000)
            break
        except sync_api.TimeoutError:
            continue
    replace.click()
    tab.locator('.djs-popup [data-id="replace-with-user-task"]').click()  # type: ignore[attr-defined]
    header = tab.locator(".bio-properties-panel-header")  # type: ignore[attr-defined]
    expect(header.locator(".bio-properties-panel-header-type")).to_have_text("User Task")
    expect(header.locator(".bio-properties-panel-header-label")).to_have_text(NEW_TASK)
    shot(tab, "studio-add-task-1-inserted")

    # Forms → Generated Task Forms, and two fields.
    tab.locator('[data-group-id="group-CamundaPlatform__Form"] .bio-properties-panel-group-header').click()  # type: ignore[attr-defined]
    tab.locator("#bio-properties-panel-formType").select_option("formData")  # type: ignore[attr-defined]
    fields = tab.locator('[data-group-id="group-CamundaPlatform__FormData"]')  # type: ignore[attr-defined]
    add_field = fields.locator(".bio-properties-panel-group-header .bio-properties-panel-add-entry")

    add_field.click()
    commit(form_field(tab, 0, "formFieldID"), "call_outcome")
    commit(form_field(tab, 0, "formFieldLabel"), "Call outcome")
    form_field(tab, 0, "formFieldType").select_option("enum")  # type: ignore[attr-defined]
    values = [("reached", "Reached the customer"), ("no_answer", "No answer")]
    for number, (value_id, value_name) in enumerate(values):
        value = add_list_item(tab, 0, "formFieldValues").nth(number)
        commit(value.get_by_label("ID", exact=True), value_id)
        commit(value.get_by_label("Name", exact=True), value_name)
    constraint = add_list_item(tab, 0, "formFieldConstraints").first
    commit(constraint.get_by_label("Name", exact=True), "required")

    add_field.click()
    commit(form_field(tab, 1, "formFieldID"), "called_at")
    commit(form_field(tab, 1, "formFieldLabel"), "Called at")
    form_field(tab, 1, "formFieldType").select_option("date")  # type: ignore[attr-defined]
    expect(fields.locator(".bio-properties-panel-list-badge").first).to_have_text("2")
    shot(tab, "studio-add-task-2-form")

    tab.get_by_role("button", name="Check", exact=True).click()  # type: ignore[attr-defined]
    expect(status).to_contain_text("Check passed: no problems found.")
    expect(tab.locator("#studio-problems li")).to_have_count(0)  # type: ignore[attr-defined]

    tab.get_by_role("button", name="Save draft").click()  # type: ignore[attr-defined]
    expect(status).to_contain_text("saved as revision 2")
    shot(tab, "studio-add-task-3-saved")

    note = "Tier 2 calls the customer after working the ticket"
    tab.get_by_label("Deploy note").fill(note)  # type: ignore[attr-defined]
    tab.get_by_role("button", name="Deploy", exact=True).click()  # type: ignore[attr-defined]
    tab.wait_for_url(f"{server}/studio/processes/ticket_lifecycle")  # type: ignore[attr-defined]
    expect(tab.get_by_role("row").filter(has_text=f"version {before + 1}")).to_contain_text(note)  # type: ignore[attr-defined]
    shot(tab, "studio-add-task-4-deployed")

    # On the server: the deployed version, as the desk reads it.
    with desk.unit_of_work(readonly=True) as session:
        version = newest_version(session, "ticket_lifecycle")
        assert (version.version, version.note) == (before + 1, note)
        xml = version_xml(session, version)
        assert validate_definition(session, desk.settings, xml, version.filename) == []

    root = etree.fromstring(xml)
    (node,) = root.xpath("//bpmn:userTask[@name=$name]", namespaces=NS, name=NEW_TASK)
    task_id = node.get("id")
    lanes = root.xpath("//bpmn:lane[bpmn:flowNodeRef=$id]/@name", namespaces=NS, id=task_id)
    assert lanes == ["Tier 2"]
    flows = {(f.get("sourceRef"), f.get("targetRef")) for f in root.iterfind(".//bpmn:sequenceFlow", NS)}
    assert {("work_tier_2", task_id), (task_id, "work_done")} <= flows
    assert ("work_tier_2", "work_done") not in flows  # the flow was split, not doubled

    spec = Definition.parse(xml, version.filename, "ticket_lifecycle").spec.task_specs[task_id]
    assert (type(spec).__name__, spec.bpmn_name, spec.lane) == ("UserTask", NEW_TASK, "Tier 2")
    assert (
        spec.extensions["form"]
        == read_form_fields(node)
        == [
            {
                "id": "call_outcome",
                "label": "Call outcome",
                "type": "enum",
                "default": None,
                "date_pattern": None,
                "options": [["reached", "Reached the customer"], ["no_answer", "No answer"]],
                "validation": {"required": None},
                "properties": {},
            },
            {
                "id": "called_at",
                "label": "Called at",
                "type": "date",
                "default": None,
                "date_pattern": None,
                "options": [],
                "validation": {},
                "properties": {},
            },
        ]
    )
