"""Mail templates: bundled in two languages, sanitised HTML, and editable by admins without a deploy."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import lxml.html
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tasks.cli import main
from workflows import templates
from workflows.app import Desk
from workflows.errors import InvalidInput
from workflows.models import AuditEvent, ConversationEntry, MailTemplate, OutboxMessage, Ticket, User
from workflows.outbox import queue_mail
from workflows.outmail import compose
from workflows.settings import Settings
from workflows.templates import TemplateProblem
from workflows.tickets import open_ticket, reply_as_agent

from .helpers import agent, new_ticket

ENGLISH_WORDS = {"the", "we", "you", "your", "has", "have", "is", "was", "from", "of", "and", "our"}
ENGLISH_WORDS |= {"hello", "please", "thank", "open", "received", "waiting", "yours", "resolved"}
GERMAN_WORDS = {"sie", "ihre", "ihnen", "wir", "von", "hat", "wurde", "und", "bitte", "guten", "tag"}
GERMAN_WORDS |= {"bei", "noch", "öffnen", "seines", "eingegangen", "geschlossen", "gelöst", "fällig"}


# -- helpers -----------------------------------------------------------------------------------
def outbox_rows(session: Session, ticket: Ticket, template: str | None = None) -> list[OutboxMessage]:
    query = select(OutboxMessage).where(OutboxMessage.ticket_id == ticket.id).order_by(OutboxMessage.id)
    if template is not None:
        query = query.where(OutboxMessage.template == template)
    return list(session.scalars(query))


def acknowledgement(session: Session, ticket: Ticket) -> OutboxMessage:
    rows = outbox_rows(session, ticket, "acknowledgement")
    assert len(rows) == 1, rows
    return rows[0]


def parse(raw: bytes | None) -> EmailMessage:
    assert raw is not None
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def subject_of(msg: EmailMessage) -> str:
    return " ".join(str(msg["Subject"]).split())  # the stdlib may fold right after "Subject:"


def composed(session: Session, settings: Settings, row: OutboxMessage, now: datetime) -> EmailMessage:
    compose(session, settings, row, now)
    return parse(row.raw)


def text_of(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def html_of(msg: EmailMessage) -> str:
    part = msg.get_body(("html",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def parse_html(markup: str) -> lxml.html.HtmlElement:
    document = lxml.html.document_fromstring(markup)
    assert isinstance(document, lxml.html.HtmlElement)
    return document


def words(*texts: str) -> set[str]:
    return {w.lower() for text in texts for w in re.findall(r"[^\W\d_]+", text)}


def neutral(value: Any) -> Any:
    """The sample context with every text replaced, so only a template's own words remain."""
    if isinstance(value, dict):
        return {key: neutral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [neutral(item) for item in value]
    return "Qx" if isinstance(value, str) else value


def count_templates(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(MailTemplate)) or 0


def admin(session: Session, now: datetime) -> User:
    return agent(session, "root@desk.example", role="admin", now=now)


# -- the bundled templates -------------------------------------------------------------------------
def test_every_language_bundles_every_template() -> None:
    assert {"en", "de"} <= set(templates.languages())
    for language in ("en", "de"):
        assert set(templates.bundled()[language]) == set(templates.TEMPLATES), language


@pytest.mark.parametrize("name", list(templates.TEMPLATES))
def test_every_bundled_template_renders_in_english_and_really_in_german(name: str) -> None:
    context = templates.sample_context(name)
    english = templates.render(templates.bundled_source(name, "en"), context)
    german = templates.render(templates.bundled_source(name, "de"), context)
    assert (english.language, german.language) == ("en", "de")
    for rendered in (english, german):
        assert rendered.subject and "\n" not in rendered.subject
        assert rendered.text.strip() and rendered.html.strip()
    if name == "agent_reply":  # the agent's own words, in whatever language they wrote them ...
        assert german.subject == english.subject
        assert context["body"] in german.text and context["body"] in english.text
        # ... above the customer's last message, quoted in the mail's language
        assert "Ada Lovelace schrieb:\n> It jams." in german.text
        assert "Ada Lovelace wrote:\n> It jams." in english.text
        assert "schrieb:" in german.html and "wrote:" in english.html
        return
    assert german.subject != english.subject
    assert german.text != english.text and german.html != english.html
    # Only the templates' own words: every variable renders as "Qx".
    plain = neutral(context)
    en = templates.render(templates.bundled_source(name, "en"), plain)
    de = templates.render(templates.bundled_source(name, "de"), plain)
    en_words, de_words = words(en.subject, en.text), words(de.subject, de.text)
    assert de_words & GERMAN_WORDS and not de_words & ENGLISH_WORDS, de_words
    assert en_words & ENGLISH_WORDS and not en_words & GERMAN_WORDS, en_words


def test_a_ticket_opened_in_german_gets_a_german_acknowledgement(
    session: Session, settings: Settings, now: datetime
) -> None:
    ticket = open_ticket(
        session,
        settings,
        requester="jana@customer.example",
        subject="Drucker im 3. Stock klemmt",
        body="Der Drucker klemmt.",
        now=now,
        language="de",
    )
    row = acknowledgement(session, ticket)
    msg = composed(session, settings, row, now)
    german = templates.bundled()["de"]["acknowledgement"]
    assert subject_of(msg) == (
        f"[LD-{ticket.number}] Ihre Anfrage ist bei uns eingegangen: Drucker im 3. Stock klemmt"
    )
    assert german["subject"].startswith("Ihre Anfrage ist bei uns eingegangen:")
    assert msg["Content-Language"] == "de" and row.language == "de"
    text = text_of(msg)
    assert "Guten Tag jana," in text and "vielen Dank für Ihre Nachricht" in text
    assert "Hello" not in text and "thank you" not in text
    document = parse_html(html_of(msg))
    assert document.get("lang") == "de"
    assert "Ihre Anfrage liegt unserem Support-Team" in document.text_content()


@pytest.mark.parametrize(
    ("desk_language", "ticket_language", "customer_language", "expected"),
    [
        ("en", None, None, "en"),  # nobody said: the desk's default
        ("de", None, None, "de"),
        ("en", None, "de", "de"),  # the customer's language, when the ticket has none
        ("de", "en", "de", "en"),  # the ticket's wins
        ("en", "fr", None, "en"),  # no French templates: English
        ("de", "fr", None, "de"),  # ... or rather the desk's default, which has them
        ("fr", None, None, "en"),  # a desk default with no templates at all: English
    ],
)
def test_the_language_of_mail_follows_ticket_customer_desk_then_english(
    session: Session,
    settings: Settings,
    now: datetime,
    desk_language: str,
    ticket_language: str | None,
    customer_language: str | None,
    expected: str,
) -> None:
    configured = dataclasses.replace(settings, language=desk_language)
    ticket = open_ticket(
        session,
        configured,
        requester="jana@customer.example",
        subject="Cannot log in",
        body="Help",
        now=now,
        language=ticket_language,
    )
    ticket.requester.language = customer_language
    row = acknowledgement(session, ticket)
    msg = composed(session, configured, row, now)
    assert msg["Content-Language"] == expected and row.language == expected
    opening = templates.bundled()[expected]["acknowledgement"]["subject"].split("{{")[0]
    assert subject_of(msg).startswith(f"[LD-{ticket.number}] {opening}")
    assert parse_html(html_of(msg)).get("lang") == expected


# -- the HTML alternative ------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(templates.TEMPLATES))
def test_every_template_composes_into_text_and_a_complete_html_document(
    session: Session, settings: Settings, now: datetime, name: str
) -> None:
    ticket = new_ticket(session, settings, now)
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    to_customer = name in templates.CUSTOMER_TEMPLATES
    if name == "acknowledgement":
        row = acknowledgement(session, ticket)
    else:
        row = queue_mail(
            session,
            settings,
            ticket=ticket,
            template=name,
            recipient=ticket.requester.email if to_customer else tereza.email,
            kind="customer_mail" if to_customer else "agent_notification",
            now=now,
            actor="system",
        )
        assert row.state == "queued"
    msg = composed(session, settings, row, now)
    assert msg.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["Auto-Submitted"] == templates.TEMPLATES[name]
    subject = subject_of(msg)
    assert subject.startswith(f"[LD-{ticket.number}] ") and row.subject == subject
    text = text_of(msg)
    assert text.rstrip().endswith(f"LD-{ticket.number}")
    html = html_of(msg)
    assert html.lstrip().lower().startswith("<!doctype html>")
    document = parse_html(html)
    assert document.tag == "html" and document.get("lang") == "en"
    (head,) = document.findall("head")
    (title,) = head.findall("title")
    assert title.text and title.text in subject
    assert head.xpath("meta[@charset]")
    (body,) = document.findall("body")
    assert body.text_content().strip()
    assert f"LD-{ticket.number}" in body.text_content()
    assert not document.xpath("//script | //iframe | //object | //style")


def test_an_admins_html_is_stored_as_written_but_sent_sanitised(
    session: Session, settings: Settings, now: datetime
) -> None:
    hostile = (
        '<p onclick="steal()">Hello {{ customer.name }}</p>\n'
        "<script>alert(1)</script>\n"
        "<img src=x onerror=alert(1)>\n"
        '<a href="javascript:alert(1)">your ticket</a>\n'
        '<a href=" JaVaScRiPt:alert(1)">again</a>\n'
        '<iframe src="https://evil.example/"></iframe>\n'
        '<p style="background:url(https://evil.example/x.png)">styled</p>\n'
        '<a href="{{ ticket.url }}">{{ ticket.reference }}</a>'
    )
    stored = templates.save(
        session,
        name="acknowledgement",
        language="en",
        subject="Got it: {{ ticket.subject }}",
        text="Hello {{ customer.name }}, we have {{ ticket.reference }}.",
        html=hostile,
        by=admin(session, now),
        now=now,
    )
    session.flush()
    assert session.get_one(MailTemplate, stored.id).html == hostile  # kept as the admin wrote it
    ticket = new_ticket(session, settings, now)
    msg = composed(session, settings, acknowledgement(session, ticket), now)
    assert subject_of(msg) == f"[LD-{ticket.number}] Got it: Cannot log in"
    html = html_of(msg)
    for bad in ("<script", "alert(", "onerror", "onclick", "javascript:", "iframe", "evil.example"):
        assert bad not in html.lower(), bad
    document = parse_html(html)
    assert not document.xpath("//script | //iframe")
    assert not [name for element in document.iter() for name in element.attrib if str(name).startswith("on")]
    links = [a.get("href") for a in document.iter("a")]
    assert links == [None, None, f"{settings.base_url}/tickets/LD-{ticket.number}"]
    assert "Hello jana" in document.text_content() and "your ticket" in document.text_content()


def test_variables_are_escaped_in_html_and_left_alone_in_text(
    session: Session, settings: Settings, now: datetime
) -> None:
    markup = "<img src=x onerror=alert(1)>"
    ticket = new_ticket(session, settings, now, subject=f"Broken {markup} page")
    agent(session, "tereza@desk.example", "tier-1", now=now)
    body = "Try <b>this</b> & <script>alert(2)</script> then reload."
    reply_as_agent(
        session, settings, ticket_ref=ticket.number, agent_email="tereza@desk.example", body=body, now=now
    )
    (row,) = outbox_rows(session, ticket, "agent_reply")
    msg = composed(session, settings, row, now)
    assert subject_of(msg) == f"[LD-{ticket.number}] Broken {markup} page"
    assert body in text_of(msg)  # plain text: as written
    html = html_of(msg)
    assert "Try &lt;b&gt;this&lt;/b&gt; &amp; &lt;script&gt;alert(2)&lt;/script&gt; then reload." in html
    assert "<b>" not in html and "<script" not in html and "<img" not in html
    document = parse_html(html)
    assert not document.xpath("//img | //script | //b")
    assert document.findall("head/title")[0].text == f"Broken {markup} page"
    assert body in document.text_content()
    ack = composed(session, settings, acknowledgement(session, ticket), now)
    assert markup in subject_of(ack)
    ack_document = parse_html(html_of(ack))
    assert not ack_document.xpath("//img")
    assert markup in (ack_document.findall("head/title")[0].text or "")


# -- saving: refused unless it renders -------------------------------------------------------------
BUNDLED_EN = templates.bundled()["en"]["acknowledgement"]


@pytest.mark.parametrize(
    ("part", "body", "expected"),
    [
        ("text", "Hello\n\n{{ customer.name \nthere", ["acknowledgement (en) text: line 4:", "'there'"]),
        ("html", "<p>{% for x in excerpt %}</p>", ["acknowledgement (en) html: line 1:", "endfor"]),
        ("subject", "{% if ticket %}Hi", ["acknowledgement (en) subject: line 1:"]),
        (
            "text",
            "Hello\n{{ customr.name }}",
            ["acknowledgement (en) text: line 2:", "'customr' is undefined"],
        ),
        ("html", "<p>{{ ticket.nonsense }}</p>", ["html: line 1:", "has no attribute 'nonsense'"]),
        ("text", "{{ ''.__class__.__mro__ }}", ["acknowledgement (en) text: line 1:", "unsafe"]),
        ("html", "\n{{ cycler.__init__.__globals__ }}", ["acknowledgement (en) html: line 2:", "unsafe"]),
        ("text", "{{ excerpt.append(1) }}", ["text: line 1:", "unsafe"]),
        ("text", "{{ desk.__class__ }}", ["unsafe"]),
        ("subject", "{{ '' }}", ["subject: must render to 1-250 characters on one line; got 0"]),
        ("subject", "   \n  ", ["subject: must render to 1-250 characters on one line; got 0"]),
        (
            "subject",
            "{% for i in range(20) %}{{ ticket.subject }}\n{% endfor %}",
            ["subject: must render to 1-250 characters on one line"],
        ),
        (
            "text",
            "{% for i in range(3) %}{{ 'x' * 100000 }}{% endfor %}",
            ["text: renders 300000 characters"],
        ),
        ("text", "{% for i in range(10**6) %}x{% endfor %}", ["text: line 1: OverflowError: Range too big"]),
        ("html", "<p>\n{{ 1 / 0 }}</p>", ["acknowledgement (en) html: line 2: ZeroDivisionError"]),
        ("subject", "{{ ticket.priority + 1 }}", ["acknowledgement (en) subject: line 1: TypeError"]),
    ],
)
def test_a_template_that_does_not_render_is_refused_and_nothing_is_stored(
    session: Session, now: datetime, part: str, body: str, expected: list[str]
) -> None:
    parts = {**BUNDLED_EN, part: body}
    with pytest.raises(TemplateProblem) as refused:
        templates.save(
            session, name="acknowledgement", language="en", by=admin(session, now), now=now, **parts
        )
    for fragment in expected:
        assert fragment in str(refused.value), str(refused.value)
    assert count_templates(session) == 0


def test_only_admins_edit_known_templates_in_sane_languages(session: Session, now: datetime) -> None:
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    root = admin(session, now)
    with pytest.raises(InvalidInput, match=r"tereza@desk\.example is not an admin"):
        templates.save(session, name="acknowledgement", language="en", by=tereza, now=now, **BUNDLED_EN)
    with pytest.raises(InvalidInput, match=r"no mail template 'welcome'; templates: acknowledgement, "):
        templates.save(session, name="welcome", language="en", by=root, now=now, **BUNDLED_EN)
    for language in ("", "de at", "x" * 17, "../en"):
        with pytest.raises(InvalidInput, match="language must be a tag"):
            templates.save(session, name="acknowledgement", language=language, by=root, now=now, **BUNDLED_EN)
    assert count_templates(session) == 0
    with pytest.raises(InvalidInput, match="no mail template 'welcome'"):
        templates.reset(session, "welcome", "en")
    assert templates.reset(session, "acknowledgement", "en") is False


def test_saving_again_replaces_the_custom_version(session: Session, now: datetime) -> None:
    root = admin(session, now)
    for subject in ("First: {{ ticket.subject }}", "Second: {{ ticket.subject }}"):
        parts = {**BUNDLED_EN, "subject": subject}
        templates.save(session, name="reminder", language="DE", by=root, now=now, **parts)
    session.flush()
    (row,) = session.scalars(select(MailTemplate)).all()
    assert (row.name, row.language, row.subject, row.updated_by_id) == (
        "reminder",
        "de",
        "Second: {{ ticket.subject }}",
        root.id,
    )
    chosen = templates.source(session, "reminder", "de", "en")
    assert (chosen.origin, chosen.language, chosen.subject) == ("custom", "de", row.subject)
    assert templates.source(session, "reminder", "en", "en").origin == "bundled"


def test_a_custom_template_that_breaks_later_does_not_stop_the_mail(
    session: Session, settings: Settings, now: datetime
) -> None:
    # Stored behind save()'s back (an older desk, a hand-edited row): it no longer renders.
    session.add(
        MailTemplate(
            name="acknowledgement",
            language="en",
            subject="Custom: {{ ticket.subject }}",
            text="Hello {{ customer.nickname }}",
            html="<p>Hi</p>",
            updated_at=now,
        )
    )
    session.flush()
    ticket = new_ticket(session, settings, now)
    row = acknowledgement(session, ticket)
    msg = composed(session, settings, row, now)
    assert subject_of(msg).startswith(f"[LD-{ticket.number}] We received your request: ")
    assert "an agent will answer you soon" in text_of(msg)
    assert row.last_error is not None
    assert row.last_error.startswith("custom template failed (acknowledgement (en) text: line 1: ")
    assert "nickname" in row.last_error and row.last_error.endswith("the bundled one was sent")
    session.flush()  # the timeline keeps it after delivery has cleared last_error
    failed = session.scalars(
        select(AuditEvent).where(
            AuditEvent.ticket_id == ticket.id, AuditEvent.action == "mail_template_failed"
        )
    ).all()
    assert [e.detail for e in failed] == [row.last_error]


def test_a_custom_german_template_that_breaks_falls_back_to_the_bundled_german(
    session: Session, settings: Settings, now: datetime
) -> None:
    session.add(
        MailTemplate(
            name="acknowledgement",
            language="de",
            subject="{{ nope }}",
            text="x",
            html="x",
            updated_at=now,
        )
    )
    session.flush()
    ticket = open_ticket(
        session, settings, requester="jana@customer.example", subject="S", body="B", now=now, language="de"
    )
    row = acknowledgement(session, ticket)
    msg = composed(session, settings, row, now)
    assert msg["Content-Language"] == "de" and "Guten Tag" in text_of(msg)
    assert row.last_error is not None and "subject" in row.last_error


def test_the_excerpt_never_shows_internal_notes(session: Session, settings: Settings, now: datetime) -> None:
    ticket = new_ticket(session, settings, now)
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    reply_as_agent(
        session,
        settings,
        ticket_ref=ticket.number,
        agent_email=tereza.email,
        body="Which browser do you use?",
        now=now + timedelta(hours=1),
    )
    session.add(
        ConversationEntry(
            ticket_id=ticket.id,
            kind="note",
            author_id=tereza.id,
            body="INTERNAL: this customer is on the watch list",
            created_at=now + timedelta(hours=2),
        )
    )
    session.flush()
    later = now + timedelta(days=3)
    reminder = queue_mail(
        session,
        settings,
        ticket=ticket,
        template="reminder",
        recipient=ticket.requester.email,
        kind="customer_mail",
        now=later,
        actor="system",
    )
    msg = composed(session, settings, reminder, later)
    for body in (text_of(msg), html_of(msg)):
        assert "Which browser do you use?" in body
        assert "INTERNAL" not in body and "watch list" not in body
    # A template that shows the whole excerpt shows no note either.
    templates.save(
        session,
        name="reminder",
        language="en",
        subject="Waiting: {{ ticket.subject }}",
        text="{% for e in excerpt %}[{{ e.kind }}] {{ e.who }}: {{ e.text }}\n{% endfor %}",
        html="{% for e in excerpt %}<p>{{ e.text }}</p>{% endfor %}",
        by=None,
        now=later,
    )
    reminder.raw = None
    msg = composed(session, settings, reminder, later)
    lines = [line for line in text_of(msg).splitlines() if line.startswith("[")]
    assert lines == [
        "[outbound] tereza: Which browser do you use?",
        "[inbound] jana: The login page says my password is wrong.",
    ]
    assert "INTERNAL" not in html_of(msg)
    # An agent's next reply quotes the last message the customer could see, not the note.
    templates.reset(session, "reminder", "en")
    reply_as_agent(
        session,
        settings,
        ticket_ref=ticket.number,
        agent_email=tereza.email,
        body="Any news?",
        now=later + timedelta(minutes=5),
    )
    answer = outbox_rows(session, ticket, "agent_reply")[-1]
    quoted = text_of(composed(session, settings, answer, later + timedelta(minutes=5)))
    assert "wrote:\n> Which browser do you use?" in quoted and "INTERNAL" not in quoted


# -- the command line ----------------------------------------------------------------------------
class Clock:
    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now


Cli = Callable[..., Result]


@pytest.fixture
def cli(desk: Desk, now: datetime) -> Iterator[Cli]:
    timed = dataclasses.replace(desk, clock=Clock(now))
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, list(args), obj=timed, catch_exceptions=False)

    yield invoke


def listed(cli: Cli) -> dict[tuple[str, str], str]:
    result = cli("template", "list", "--json")
    assert result.exit_code == 0, result.output
    return {(item["name"], item["language"]): item["origin"] for item in json.loads(result.output)}


def test_an_admin_edits_a_template_from_the_command_line_and_it_applies_at_once(
    cli: Cli, tmp_path: Path
) -> None:
    assert cli("user", "add", "root@desk.example", "--role", "admin").exit_code == 0
    before = listed(cli)
    assert set(before.values()) == {"bundled"}
    assert ("acknowledgement", "de") in before and ("assigned", "en") in before
    ticket = cli("ticket", "open", "--from", "jana@customer.example", "--subject", "Printer").output.strip()
    (mail,) = json.loads(cli("outbox", "--json").output)
    assert (mail["template"], mail["state"]) == ("acknowledgement", "queued")

    text = tmp_path / "ack.txt"
    text.write_text("Dear {{ customer.name }},\nwe filed your request as {{ ticket.reference }}.\n")
    saved = cli(
        "template",
        "set",
        "acknowledgement",
        "--language",
        "en",
        "--subject",
        "Filed: {{ ticket.subject }}",
        "--text",
        str(text),
        "--as",
        "root@desk.example",
    )
    assert saved.exit_code == 0 and "template acknowledgement (en) saved" in saved.output
    now_listed = listed(cli)
    assert now_listed.pop(("acknowledgement", "en")) == "custom"
    assert set(now_listed.values()) == {"bundled"}
    shown = cli("template", "show", "acknowledgement", "--language", "en").output
    assert shown.startswith("# acknowledgement (en, custom)\nsubject: Filed: {{ ticket.subject }}")
    assert "we filed your request as {{ ticket.reference }}" in shown
    assert "<p>Hello {{ customer.name or customer.email }},</p>" in shown  # the html part was kept
    assert cli("template", "show", "acknowledgement", "-l", "de").output.startswith(
        "# acknowledgement (de, bundled)\nsubject: Ihre Anfrage ist bei uns eingegangen"
    )

    # The mail not yet sent is written with the new text: no deploy, no restart.
    raw = cli("outbox", "show", str(mail["id"])).output
    assert f"Subject: [{ticket}] Filed: Printer" in raw
    assert f"we filed your request as {ticket}." in raw

    reset = cli("template", "reset", "acknowledgement", "-l", "en", "--as", "root@desk.example")
    assert reset.exit_code == 0 and "reset to the bundled one" in reset.output
    again = cli("template", "reset", "acknowledgement", "-l", "en", "--as", "root@desk.example")
    assert again.exit_code == 0 and "was not customised" in again.output
    assert set(listed(cli).values()) == {"bundled"}
    raw = cli("outbox", "show", str(mail["id"])).output
    assert f"Subject: [{ticket}] We received your request: Printer" in raw
    assert json.loads(cli("outbox", "--json").output)[0]["subject"] is None  # show kept nothing


def test_the_command_line_refuses_bad_templates_and_stores_nothing(cli: Cli, tmp_path: Path) -> None:
    cli("user", "add", "root@desk.example", "--role", "admin")
    cli("user", "add", "tereza@desk.example", "--role", "agent", "--group", "tier-1")
    broken = tmp_path / "broken.html"
    broken.write_text("<p>Hello</p>\n<p>{{ ticket.reference </p>\n")
    undefined = tmp_path / "undefined.txt"
    undefined.write_text("Hello\n\n{{ custmer.name }}\n")
    escape = tmp_path / "escape.txt"
    escape.write_text("{{ cycler.__init__.__globals__ }}")
    ack = ("template", "set", "acknowledgement", "-l", "en")
    cases: list[tuple[tuple[str, ...], int, str]] = [
        (
            (*ack, "--html", str(broken), "--as", "root@desk.example"),
            1,
            "error: acknowledgement (en) html: line 2: ",
        ),
        (
            (*ack, "--text", str(undefined), "--as", "root@desk.example"),
            1,
            "error: acknowledgement (en) text: line 3: 'custmer' is undefined",
        ),
        ((*ack, "--text", str(escape), "--as", "root@desk.example"), 1, "is unsafe"),
        ((*ack, "--subject", "{{ '' }}", "--as", "root@desk.example"), 1, "subject: must render to 1-250"),
        ((*ack, "--subject", "Hi", "--as", "tereza@desk.example"), 1, "tereza@desk.example is not an admin"),
        ((*ack, "--subject", "Hi", "--as", "nobody@desk.example"), 1, "no user nobody@desk.example"),
        (
            ("template", "set", "welcome", "-l", "en", "--subject", "Hi", "--as", "root@desk.example"),
            1,
            "no mail template 'welcome'",
        ),
        ((*ack, "--as", "root@desk.example"), 2, "give at least one of --subject, --text FILE, --html FILE"),
        (
            ("template", "reset", "acknowledgement", "-l", "en", "--as", "tereza@desk.example"),
            1,
            "is not an admin",
        ),
        (("template", "show", "welcome"), 1, "no mail template 'welcome'"),
    ]
    for args, code, message in cases:
        result = cli(*args)
        assert (result.exit_code, message in result.output) == (code, True), (args, result.output)
    assert set(listed(cli).values()) == {"bundled"}
