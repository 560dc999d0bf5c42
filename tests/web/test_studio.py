"""The studio's pages and the editor's JSON calls, through Flask's test client."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from tests.workflows.helpers import TRIAGE
from workflows.app import Desk
from workflows.models import ProcessDraft, ProcessVersion, User
from workflows.tickets import open_ticket
from workflows.worklist import complete_task

from ..conftest import MONDAY_9
from .conftest import csrf_of, log_in

PROCESS = "ticket_lifecycle"


@pytest.fixture
def owner(app: Flask, make_user: Callable[..., User]) -> FlaskClient:
    make_user("olga@desk.example", role="owner", groups=())
    client = app.test_client()
    log_in(client, "olga@desk.example")
    return client


@pytest.fixture
def lifecycle(desk: Desk) -> str:
    return (desk.settings.bpmn_dir / "ticket_lifecycle.bpmn").read_text()


def token(client: FlaskClient) -> dict[str, str]:
    return {"X-CSRFToken": csrf_of(client.get("/studio").get_data(as_text=True))}


def new_draft(client: FlaskClient) -> int:
    answer = client.post(
        f"/studio/processes/{PROCESS}/drafts", data={"csrf_token": token(client)["X-CSRFToken"]}
    )
    assert answer.status_code == 302, answer.get_data(as_text=True)
    found = re.search(r"/studio/drafts/(\d+)$", answer.headers["Location"])
    assert found
    return int(found.group(1))


def versions(desk: Desk) -> int:
    with desk.unit_of_work(readonly=True) as session:
        return session.scalar(select(func.count()).select_from(ProcessVersion)) or 0


def test_the_index_lists_the_lifecycle_and_agents_are_kept_out(
    owner: FlaskClient, agent_client: FlaskClient
) -> None:
    page = owner.get("/studio").get_data(as_text=True)

    assert f'href="/studio/processes/{PROCESS}"' in page and "version 1" in page
    assert agent_client.get("/studio").status_code == 403
    assert agent_client.get(f"/studio/processes/{PROCESS}").status_code == 403


def test_edit_save_check_and_deploy_from_the_editor(owner: FlaskClient, desk: Desk, lifecycle: str) -> None:
    draft = new_draft(owner)
    editor = owner.get(f"/studio/drafts/{draft}").get_data(as_text=True)
    for attribute in ("data-xml-url", "data-save-url", "data-check-url", "data-deploy-url"):
        assert attribute in editor
    assert owner.get(f"/studio/drafts/{draft}/diagram.bpmn").get_data(as_text=True) == lifecycle

    broken = lifecycle.replace('sla_due("first_response")', "PT2H")
    saved = owner.post(
        f"/studio/drafts/{draft}/save", json={"xml": broken, "base_revision": 1}, headers=token(owner)
    )
    checked = owner.post("/studio/check", json={"xml": broken}, headers=token(owner)).get_json()
    refused = owner.post(
        f"/studio/drafts/{draft}/deploy", json={"xml": broken, "note": "faster"}, headers=token(owner)
    )
    fixed = lifecycle.replace('sla_due("first_response")', 'sla_due("first_response", 50)')
    deployed = owner.post(
        f"/studio/drafts/{draft}/deploy", json={"xml": fixed, "note": "faster"}, headers=token(owner)
    )

    assert saved.status_code == 201 and saved.get_json()["revision"] == 2
    assert checked["ok"] is False
    assert [p["element_id"] for p in checked["problems"]] == ["triage_first_response_due"]
    assert re.match(r"^diagram\.bpmn:\d+: triage_first_response_due: ", checked["problems"][0]["text"])
    assert (
        refused.status_code == 422
        and refused.get_json()["problems"][0]["element_id"] == "triage_first_response_due"
    )
    assert deployed.status_code == 201, deployed.get_data(as_text=True)
    assert deployed.get_json() == {
        "version": 2, "created": True, "process_id": PROCESS, "url": f"/studio/processes/{PROCESS}",
    }  # fmt: skip
    page = owner.get(f"/studio/processes/{PROCESS}").get_data(as_text=True)
    assert "version 2" in page and "faster" in page and "olga@desk.example" in page
    assert owner.get(f"/studio/drafts/{draft}").get_data(as_text=True).count('data-read-only="1"') == 1


def test_a_stale_save_is_refused_and_the_newer_one_kept(
    owner: FlaskClient, desk: Desk, lifecycle: str
) -> None:
    draft = new_draft(owner)
    mine = lifecycle.replace('name="Triage"', 'name="Mine"', 1)
    theirs = lifecycle.replace('name="Triage"', 'name="Theirs"', 1)

    first = owner.post(
        f"/studio/drafts/{draft}/save", json={"xml": theirs, "base_revision": 1}, headers=token(owner)
    )
    second = owner.post(
        f"/studio/drafts/{draft}/save", json={"xml": mine, "base_revision": 1}, headers=token(owner)
    )

    assert first.status_code == 201
    assert second.status_code == 409 and "saved again (revision 2)" in second.get_json()["error"]
    assert second.get_json()["latest_revision"] == 2
    assert 'name="Theirs"' in owner.get(f"/studio/drafts/{draft}/diagram.bpmn").get_data(as_text=True)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"xml": ""}, 422, "no diagram was sent"),
        ({"xml": "<definitions"}, 422, "malformed XML"),
        ({"xml": '<!DOCTYPE x [<!ENTITY e "boom">]><x/>'}, 422, "DOCTYPE and entity declarations"),
    ],
)
def test_a_save_of_something_that_is_no_diagram_is_refused(
    owner: FlaskClient, body: dict[str, str], status: int, message: str
) -> None:
    draft = new_draft(owner)

    answer = owner.post(f"/studio/drafts/{draft}/save", json=body, headers=token(owner))

    assert answer.status_code == status and message in answer.get_data(as_text=True)


def test_json_calls_without_the_csrf_header_are_refused(
    owner: FlaskClient, desk: Desk, lifecycle: str
) -> None:
    draft = new_draft(owner)

    answer = owner.post(f"/studio/drafts/{draft}/deploy", json={"xml": lifecycle, "note": "x"})

    assert answer.status_code == 400
    assert versions(desk) == 1


def test_versions_open_read_only_download_compare_and_roll_back(
    owner: FlaskClient, desk: Desk, lifecycle: str
) -> None:
    draft = new_draft(owner)
    renamed = lifecycle.replace('name="Triage"', 'name="Triage the ticket"', 1)
    owner.post(
        f"/studio/drafts/{draft}/deploy", json={"xml": renamed, "note": "rename"}, headers=token(owner)
    )

    read_only = owner.get(f"/studio/processes/{PROCESS}/versions/1").get_data(as_text=True)
    download = owner.get(f"/studio/processes/{PROCESS}/versions/1/diagram.bpmn?download=1")
    compared = owner.get(f"/studio/processes/{PROCESS}/compare?from=1&to=2").get_data(as_text=True)
    rolled = owner.post(
        f"/studio/processes/{PROCESS}/versions/1/roll-back", data={"csrf_token": token(owner)["X-CSRFToken"]}
    )

    assert 'data-read-only="1"' in read_only and 'data-save-url=""' in read_only
    assert download.get_data(as_text=True) == lifecycle
    assert download.headers["Content-Disposition"] == f'attachment; filename="{PROCESS}-v1.bpmn"'
    assert download.headers["Content-Security-Policy"].startswith("sandbox")
    assert "<code>triage</code>" in compared and "name" in compared
    assert rolled.status_code == 302 and versions(desk) == 3
    assert "Deployed version 3 with the content of version 1." in owner.get(
        rolled.headers["Location"]
    ).get_data(as_text=True)


def test_an_upload_that_can_run_becomes_a_draft_and_one_that_cannot_is_explained(
    owner: FlaskClient, desk: Desk, lifecycle: str
) -> None:
    def upload(data: bytes, name: str):  # type: ignore[no-untyped-def]
        return owner.post(
            "/studio/upload",
            data={"csrf_token": token(owner)["X-CSRFToken"], "diagram": (io.BytesIO(data), name)},
            content_type="multipart/form-data",
        )

    good = upload(lifecycle.encode(), "from-camunda.bpmn")
    bad = upload(lifecycle.replace('sla_due("first_response")', "PT2H").encode(), "broken.bpmn")
    hostile = upload(
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><d>&x;</d>', "x.bpmn"
    )

    assert good.status_code == 302 and re.search(r"/studio/drafts/\d+$", good.headers["Location"])
    assert bad.status_code == 422
    body = bad.get_data(as_text=True)
    assert "broken.bpmn cannot run here as it is" in body and "triage_first_response_due" in body
    assert "Nothing was stored" in body
    assert hostile.status_code == 422 and "DOCTYPE and entity declarations" in hostile.get_data(as_text=True)
    with desk.unit_of_work(readonly=True) as session:
        assert session.scalar(select(func.count()).select_from(ProcessDraft)) == 1


def test_the_monitor_shows_waiting_tickets_per_task_and_lists_them(owner: FlaskClient, desk: Desk) -> None:
    with desk.unit_of_work() as session:
        lead = session.scalars(select(User).where(User.email == "olga@desk.example")).one()
        tickets = [
            open_ticket(
                session,
                desk.settings,
                requester="jana@customer.example",
                subject=f"VPN {i}",
                body="Down.",
                now=MONDAY_9,
            )
            for i in range(3)
        ]
        from workflows.models import HumanTask

        first = session.scalars(select(HumanTask).where(HumanTask.ticket_id == tickets[0].id)).one()
        lead.role = "admin"  # admins may work any ticket
        complete_task(session, desk.settings, task_id=first.id, user=lead, data=TRIAGE, now=MONDAY_9)

    page = owner.get(f"/studio/processes/{PROCESS}/monitor").get_data(as_text=True)
    data = owner.get(f"/studio/processes/{PROCESS}/monitor.json").get_json()
    listing = owner.get(f"/studio/processes/{PROCESS}/monitor/triage").get_data(as_text=True)

    triage = next(e for e in data["elements"] if e["element_id"] == "triage")
    assert (triage["name"], triage["waiting"]) == ("Triage", 2)
    assert triage["url"] == f"/studio/processes/{PROCESS}/monitor/triage"
    assert 'data-monitor-url="/studio/processes/ticket_lifecycle/monitor.json"' in page and "Triage" in page
    assert "VPN 1" in listing and "VPN 2" in listing and "VPN 0" not in listing


def test_simulating_a_draft_shows_the_timeline_and_touches_no_live_ticket(
    owner: FlaskClient, desk: Desk
) -> None:
    draft = new_draft(owner)

    answer = owner.post(f"/studio/drafts/{draft}/simulate", data={"csrf_token": token(owner)["X-CSRFToken"]})
    wrong = owner.post(
        f"/studio/drafts/{draft}/simulate",
        data={"csrf_token": token(owner)["X-CSRFToken"], "scenario": "arrival: [1"},
    )

    body = answer.get_data(as_text=True)
    assert answer.status_code == 200, body
    assert "Timeline:" in body and "<code>triage</code>" in body
    assert wrong.status_code == 422 and 'role="alert"' in wrong.get_data(as_text=True)
    with desk.unit_of_work(readonly=True) as session:
        from workflows.models import Ticket

        assert session.scalar(select(func.count()).select_from(Ticket)) == 0


def test_running_tickets_are_previewed_then_moved_and_the_rest_stay_with_the_reason(
    owner: FlaskClient, desk: Desk
) -> None:
    from workflows.models import Ticket, WorkflowInstance

    with desk.unit_of_work() as session:
        ticket = open_ticket(
            session,
            desk.settings,
            requester="jana@customer.example",
            subject="VPN",
            body="Down.",
            now=MONDAY_9,
        )
        ref = f"LD-{ticket.id + 1000}"
    data = (Path(__file__).resolve().parents[1] / "data" / "migration" / "call_customer.bpmn").read_text()
    draft = new_draft(owner)
    owner.post(
        f"/studio/drafts/{draft}/deploy", json={"xml": data, "note": "call them"}, headers=token(owner)
    )

    preview = owner.get(f"/studio/processes/{PROCESS}/migrate").get_data(as_text=True)
    instance = re.search(r'name="instance" value="(\d+)"', preview)
    revision = re.search(r'name="revision-\d+" value="(\d+)"', preview)
    assert instance and revision and ref in preview and "1 running ticket on other versions" in preview
    moved = owner.post(
        f"/studio/processes/{PROCESS}/migrate",
        data={
            "csrf_token": token(owner)["X-CSRFToken"],
            "to": "2",
            "instance": instance.group(1),
            f"revision-{instance.group(1)}": revision.group(1),
        },
    )

    body = moved.get_data(as_text=True)
    assert moved.status_code == 200, body
    assert "Moved 1 ticket" in body and "No running ticket" in body
    with desk.unit_of_work(readonly=True) as session:
        row = session.scalars(select(WorkflowInstance).where(WorkflowInstance.ticket_id == ticket.id)).one()
        assert row.process_version.version == 2
        assert session.get(Ticket, ticket.id) is not None
