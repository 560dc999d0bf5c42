"""Full-text search and ticket lists: the index follows every write, queries never fail, visibility holds."""

from __future__ import annotations

import random
import string
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, delete, inspect, select, text, update
from sqlalchemy.orm import Session

from workflows import migrate
from workflows.models import ConversationEntry, Customer, Group, HumanTask, Ticket, User
from workflows.search import (
    MAX_TERMS,
    ParsedQuery,
    TicketPage,
    link_args,
    parse_filters,
    parse_query,
    search_tickets,
    ticket_for_reference,
    visible_tickets,
    websearch_text,
)
from workflows.settings import Settings
from workflows.tickets import may_work_on, open_ticket, reply_as_agent

from .helpers import agent, open_task

HOSTILE = [
    '"',
    '""',
    '"unbalanced',
    "NEAR(",
    "NEAR(a b, 3)",
    "*",
    "print*",
    "^start",
    "AND OR",
    "OR",
    "or or or",
    "NOT",
    "- -- ---",
    "-printer",
    "'; drop table ticket; --",
    "subject:printer",
    "{subject body}: x",
    "a:b:c",
    "(((",
    ")",
    "\\",
    "%_%",
    "\x00nul\x00",
    "\u200b\u200b",
    "ÄÖÜ straße ﬁle 東京 Ελληνικά العربية 😀",
    "🙂🙂",
    "x" * 5000,
    "word " * 3000,
    '"' * 999,
    "LD-",
    "LD-99999999999999999999",
]


def customer(session: Session, now: datetime) -> Customer:
    found = session.scalar(select(Customer).where(Customer.email == "jana@customer.example"))
    if found is None:
        found = Customer(email="jana@customer.example", name="Jana Nováková", created_at=now)
        session.add(found)
        session.flush()
    return found


def make_ticket(
    session: Session,
    now: datetime,
    subject: str,
    *bodies: str,
    group: str | None = None,
    status: str = "open",
    priority: str = "P3",
    kinds: tuple[str, ...] = (),
    assignee: User | None = None,
) -> Ticket:
    """A ticket row with conversation entries, without a process (the index is the point here)."""
    group_id = session.scalar(select(Group.id).where(Group.slug == group)) if group else None
    ticket = Ticket(
        subject=subject,
        status=status,
        priority=priority,
        requester=customer(session, now),
        group_id=group_id,
        assignee_id=assignee.id if assignee else None,
        created_at=now,
        updated_at=now,
    )
    session.add(ticket)
    session.flush()
    for index, body in enumerate(bodies):
        kind = kinds[index] if index < len(kinds) else "inbound"
        session.add(ConversationEntry(ticket_id=ticket.id, kind=kind, body=body, created_at=now))
    session.flush()
    return ticket


@pytest.fixture
def admin(session: Session, now: datetime) -> User:
    return agent(session, "ada@desk.example", role="admin", now=now)


def found(
    session: Session, settings: Settings, user: User, now: datetime, q: str, **filters: Any
) -> list[int]:
    page = search_tickets(session, settings, user, now=now, q=q, **filters)
    return [row.ticket.id for row in page.rows]


# --- the query language ---------------------------------------------------------------------------


def test_queries_are_rebuilt_from_their_words() -> None:
    assert websearch_text(parse_query("printer toner")) == '"printer" "toner"'
    assert websearch_text(parse_query('"paper jam" or toner -ink')) == '"paper jam" or "toner" -"ink"'
    assert websearch_text(parse_query("-ink")) == '"ink"'  # nothing but an exclusion: the minus was text
    assert websearch_text(parse_query('a"b')) == '"a b"'
    assert not parse_query('* -- ( ) - or "')
    assert len(parse_query(" ".join(f"w{i}" for i in range(100))).terms) == MAX_TERMS
    assert isinstance(parse_query("x" * 10_000), ParsedQuery)


@pytest.mark.parametrize("q", HOSTILE)
def test_hostile_queries_never_raise(
    session: Session, settings: Settings, admin: User, now: datetime, q: str
) -> None:
    make_ticket(session, now, "Printer on floor 3", "It prints only NEAR the window.")
    for sort in ("", "relevance", "urgent", "nonsense"):
        page = search_tickets(session, settings, admin, now=now, q=q, sort=sort, status="all")
        assert isinstance(page, TicketPage)
    # The session is still usable (on PostgreSQL an error would have aborted the transaction).
    assert session.scalar(select(Ticket.id).limit(1)) is not None


# --- what is found ---------------------------------------------------------------------------------


def test_finds_by_subject_word(session: Session, settings: Settings, admin: User, now: datetime) -> None:
    printer = make_ticket(session, now, "Printer on floor 3 is jammed", "Help please")
    make_ticket(session, now, "Cannot log in", "The login page rejects me")
    assert found(session, settings, admin, now, "printer") == [printer.id]
    assert found(session, settings, admin, now, "JAMMED") == [printer.id]


def test_finds_a_word_only_in_an_agent_reply(
    session: Session, settings: Settings, admin: User, now: datetime
) -> None:
    ticket = open_ticket(
        session, settings, requester="jana@customer.example", subject="VPN", body="It drops.", now=now
    )
    assert found(session, settings, admin, now, "wireguard") == []
    reply_as_agent(
        session,
        settings,
        ticket_ref=ticket.id + 1000,
        agent_email="ada@desk.example",
        body="Please switch to the WireGuard profile.",
        now=now,
    )
    assert found(session, settings, admin, now, "wireguard") == [ticket.id]


def test_finds_a_customer_reply_and_an_internal_note(
    session: Session, settings: Settings, admin: User, now: datetime
) -> None:
    ticket = make_ticket(
        session,
        now,
        "Invoice",
        "Where is my invoice?",
        "Checked SAP: posting blocked",
        kinds=("inbound", "note"),
    )
    assert found(session, settings, admin, now, "invoice") == [ticket.id]
    assert found(session, settings, admin, now, "sap") == [ticket.id]
    assert found(session, settings, admin, now, "posting blocked") == [ticket.id]


def test_every_word_may_be_in_a_different_message(
    session: Session, settings: Settings, admin: User, now: datetime
) -> None:
    ticket = make_ticket(session, now, "Printer broken", "the toner is empty", "replaced the drum")
    other = make_ticket(session, now, "Toner order", "please order more")
    assert found(session, settings, admin, now, "printer toner drum") == [ticket.id]
    assert found(session, settings, admin, now, "printer banana") == []
    assert set(found(session, settings, admin, now, "toner")) == {ticket.id, other.id}
    assert found(session, settings, admin, now, "toner -drum") == [other.id]
    assert set(found(session, settings, admin, now, "drum or order")) == {ticket.id, other.id}
    assert found(session, settings, admin, now, '"toner is empty"') == [ticket.id]
    assert found(session, settings, admin, now, '"empty toner"') == []


def test_unicode_words(session: Session, settings: Settings, admin: User, now: datetime) -> None:
    ticket = make_ticket(session, now, "Zählerstand München", "東京 office, Ελληνικά keyboard")
    assert found(session, settings, admin, now, "zählerstand") == [ticket.id]
    assert found(session, settings, admin, now, "ελληνικά") == [ticket.id]


def test_subject_matches_rank_first(session: Session, settings: Settings, admin: User, now: datetime) -> None:
    in_body = make_ticket(session, now, "Question", "By the way the scanner beeps")
    in_subject = make_ticket(session, now, "Scanner beeps", "It started this morning")
    unrelated = make_ticket(session, now, "Scanner", "the scanner, the scanner")
    ranked = found(session, settings, admin, now, "scanner beeps")
    assert ranked == [in_subject.id, in_body.id]
    assert unrelated.id not in ranked
    # Asking for another order overrides relevance.
    assert found(session, settings, admin, now, "scanner", sort="oldest") == [
        in_body.id,
        in_subject.id,
        unrelated.id,
    ]


def test_changes_and_deletions_are_reflected(
    session: Session, settings: Settings, admin: User, now: datetime
) -> None:
    ticket = make_ticket(session, now, "Mouse", "the cursor jumps", "try another pad")
    entries = list(
        session.scalars(
            select(ConversationEntry)
            .where(ConversationEntry.ticket_id == ticket.id)
            .order_by(ConversationEntry.id)
        )
    )  # in the order written: the first says "cursor" (unordered, PostgreSQL may return either first)
    assert found(session, settings, admin, now, "cursor") == [ticket.id]

    entries[0].body = "the pointer jumps"
    session.flush()
    assert found(session, settings, admin, now, "cursor") == []
    assert found(session, settings, admin, now, "pointer") == [ticket.id]

    session.execute(delete(ConversationEntry).where(ConversationEntry.id == entries[1].id))
    assert found(session, settings, admin, now, "pad") == []
    assert found(session, settings, admin, now, "pointer") == [ticket.id]

    session.execute(update(Ticket).where(Ticket.id == ticket.id).values(subject="Trackball"))
    assert found(session, settings, admin, now, "mouse") == []
    assert found(session, settings, admin, now, "trackball pointer") == [ticket.id]

    session.execute(delete(ConversationEntry).where(ConversationEntry.ticket_id == ticket.id))
    session.execute(delete(Ticket).where(Ticket.id == ticket.id))
    assert found(session, settings, admin, now, "trackball") == []


def test_a_huge_conversation_is_stored_and_stays_searchable(
    session: Session, settings: Settings, admin: User, now: datetime
) -> None:
    # Random words: as many distinct lexemes as possible, far beyond what one tsvector may hold.
    rng = random.Random(7)

    def noise(words: int) -> str:
        return " ".join("".join(rng.choices(string.ascii_lowercase, k=8)) for _ in range(words))

    ticket = make_ticket(session, now, "Log dump", "zebrafish " + noise(60_000))
    for _ in range(4):
        session.add(
            ConversationEntry(ticket_id=ticket.id, kind="inbound", body=noise(30_000), created_at=now)
        )
        session.flush()
    assert found(session, settings, admin, now, "zebrafish") == [ticket.id]
    assert found(session, settings, admin, now, "dump") == [ticket.id]


def test_a_search_leaves_the_planner_settings_as_it_found_them(
    session: Session, settings: Settings, admin: User, now: datetime
) -> None:
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("a PostgreSQL planner setting")
    before = session.scalar(text("SELECT current_setting('random_page_cost')"))
    make_ticket(session, now, "Printer", "toner")
    assert found(session, settings, admin, now, "printer toner") != []
    assert session.scalar(text("SELECT current_setting('random_page_cost')")) == before


# --- filters and pages -------------------------------------------------------------------------------


def test_filters(session: Session, settings: Settings, admin: User, now: datetime) -> None:
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    overdue = make_ticket(session, now, "Overdue", group="tier-1", priority="P1", assignee=tereza)
    overdue.sla_due_at = now - timedelta(minutes=1)
    due_later = make_ticket(session, now, "Later", group="tier-2", priority="P2")
    due_later.sla_due_at = now + timedelta(hours=3)
    solved = make_ticket(session, now, "Solved", status="resolved")
    session.flush()

    def ids(**filters: Any) -> set[int]:
        return set(found(session, settings, admin, now, "", **filters))

    assert ids() == {overdue.id, due_later.id}
    assert ids(status="all") == {overdue.id, due_later.id, solved.id}
    assert ids(status="resolved") == {solved.id}
    assert ids(group="tier-2") == {due_later.id}
    assert ids(group="none", status="all") == {solved.id}
    assert ids(group="no-such-group") == set()
    assert ids(priority="P1") == {overdue.id}
    assert ids(breached=True) == {overdue.id}
    assert ids(assignee=str(tereza.id)) == {overdue.id}
    assert ids(assignee="none") == {due_later.id}
    assert set(found(session, settings, tereza, now, "", assignee="me")) == {overdue.id}
    assert found(session, settings, admin, now, "", sort="urgent") == [overdue.id, due_later.id]


def test_pages(session: Session, settings: Settings, admin: User, now: datetime) -> None:
    tickets = [make_ticket(session, now + timedelta(minutes=i), f"Ticket {i}") for i in range(7)]
    first = search_tickets(session, settings, admin, now=now, page_size=3)
    assert (first.total, first.pages, first.page) == (7, 3, 1)
    assert [r.ticket.id for r in first.rows] == [t.id for t in reversed(tickets)][:3]
    last = search_tickets(session, settings, admin, now=now, page_size=3, page=99)
    assert last.page == 3 and [r.ticket.id for r in last.rows] == [tickets[0].id]


def test_parse_filters_ignores_nonsense_and_links_keep_only_what_differs() -> None:
    filters = parse_filters({"status": "weird", "assignee": "x", "priority": "P9", "sort": "random"})
    assert filters["status"] == "unresolved" and filters["assignee"] == "" and filters["sort"] == "relevance"
    assert link_args(filters) == {}
    searching = parse_filters({"q": " a ", "status": "weird"})
    assert searching["status"] == "all"  # a search looks through closed tickets too
    assert link_args(searching) == {"q": "a"}
    assert link_args(parse_filters({"q": "a", "status": "unresolved"})) == {"q": "a", "status": "unresolved"}
    chosen = parse_filters({"status": "closed", "group": "tier-2", "breached": "1", "assignee": "me"})
    assert link_args(chosen) == {"status": "closed", "group": "tier-2", "assignee": "me", "breached": "1"}


# --- visibility ----------------------------------------------------------------------------------------


def test_visibility_follows_may_work_on(session: Session, settings: Settings, now: datetime) -> None:
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    petr = agent(session, "petr@desk.example", "tier-2", now=now)
    own_group = make_ticket(session, now, "Alpha keyboard", group="tier-1")
    other_group = make_ticket(session, now, "Alpha monitor", group="tier-2")
    no_group = make_ticket(session, now, "Alpha cable")
    assigned = make_ticket(session, now, "Alpha chair", group="tier-2", assignee=tereza)
    held = open_ticket(
        session, settings, requester="jana@customer.example", subject="Alpha desk", body="-", now=now
    )
    held.group_id = session.scalar(select(Group.id).where(Group.slug == "tier-2"))
    task = open_task(session, held)
    task.assignee_id = tereza.id
    session.flush()

    seen = set(found(session, settings, tereza, now, "alpha", status="all"))
    assert seen == {own_group.id, no_group.id, assigned.id, held.id}
    assert other_group.id not in seen
    assert set(found(session, settings, petr, now, "alpha", status="all")) == {
        other_group.id,
        no_group.id,
        assigned.id,
        held.id,
    }
    everyone = list(session.scalars(select(Ticket)))
    for user in (tereza, petr):
        by_sql = set(session.scalars(select(Ticket.id).where(visible_tickets(user))))
        assert by_sql == {t.id for t in everyone if may_work_on(session, user, t)}
    # Held tasks that are finished no longer make a ticket visible.
    session.execute(update(HumanTask).where(HumanTask.id == task.id).values(state="completed"))
    assert held.id not in set(found(session, settings, tereza, now, "alpha", status="all"))


def test_a_reference_names_a_ticket_only_when_visible(
    session: Session, settings: Settings, now: datetime
) -> None:
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    mine = make_ticket(session, now, "Mine", group="tier-1")
    theirs = make_ticket(session, now, "Theirs", group="tier-2")
    number = mine.id + 1000
    for q in (f"LD-{number}", f"ld-{number}", f" {number} ", f"#{number}"):
        assert ticket_for_reference(session, settings, tereza, q) is mine, q
    assert ticket_for_reference(session, settings, tereza, f"LD-{theirs.id + 1000}") is None
    assert ticket_for_reference(session, settings, tereza, "LD-999999") is None
    assert ticket_for_reference(session, settings, tereza, "12") is None
    assert ticket_for_reference(session, settings, tereza, "printer") is None


# --- the migration ------------------------------------------------------------------------------------


@pytest.fixture
def scratch_engine(db_engine: Engine, tmp_path: Path) -> Iterator[Engine]:
    """An empty database of the suite's kind (PostgreSQL: a schema of its own), not the shared one."""
    if db_engine.dialect.name != "postgresql":
        engine = create_engine(f"sqlite:///{tmp_path / 'scratch.db'}")
        yield engine
        engine.dispose()
        return
    schema = f"search_{uuid.uuid4().hex[:12]}"
    with db_engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    engine = create_engine(db_engine.url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with db_engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))


def test_migration_backfills_and_downgrades_cleanly(scratch_engine: Engine, settings: Settings) -> None:
    config = migrate.alembic_config(scratch_engine)
    with scratch_engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0005")
    with scratch_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO customer (id, email, name, created_at) "
                "VALUES (1, 'c@example.com', 'C', '2026-03-02 09:00:00+00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO ticket (id, subject, status, priority, requester_id, created_at, updated_at) "
                "VALUES (1, 'Old printer', 'open', 'P3', 1, '2026-03-02 09:00:00+00:00', "
                "'2026-03-02 09:00:00+00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO conversation_entry (id, ticket_id, kind, body, created_at) "
                "VALUES (1, 1, 'inbound', 'legacy toner words', '2026-03-02 09:00:00+00:00')"
            )
        )
    before = set(inspect(scratch_engine).get_table_names())
    with scratch_engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0006")
    admin = User(id=0, email="admin@desk.example", name="Admin", role="admin")
    session = Session(scratch_engine)
    try:
        hits = {
            q: search_tickets(session, settings, admin, now=datetime.now().astimezone(), q=q).total
            for q in ("printer", "toner", "printer toner", "absent")
        }
    finally:
        session.close()
    assert hits == {"printer": 1, "toner": 1, "printer toner": 1, "absent": 0}
    with scratch_engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0005")
    assert set(inspect(scratch_engine).get_table_names()) == before
    with scratch_engine.begin() as conn:  # the triggers went too: writes work without the index
        conn.execute(text("UPDATE ticket SET subject = 'Renamed' WHERE id = 1"))
        conn.execute(text("DELETE FROM conversation_entry"))
    with scratch_engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
