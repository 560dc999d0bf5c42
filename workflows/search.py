"""Ticket lists and full-text search: queues, filters, relevance, in a constant number of queries.

What is searched: a ticket's subject and the body of every conversation entry (customer mail,
agent replies, internal notes). A query is words and "quoted phrases"; ``or`` between words
offers alternatives and ``-word`` excludes (the syntax of PostgreSQL's ``websearch_to_tsquery``,
given the same meaning on SQLite). Every word must occur somewhere in the ticket, not
necessarily in the same message. Whatever an agent types, the query is rebuilt from the words it
contains, each quoted: no input can produce a syntax error (at most, nothing is found).

The index, ``ticket_search``, is built by migration 0006 and kept current by database triggers,
so every writer (mail, web, API, CLI, workflow scripts) keeps it right without knowing of it:

* **PostgreSQL**: one row per ticket, ``document tsvector`` = the subject weighted ``A`` and
  every entry's body weighted ``B``, with a GIN index; matched with
  ``document @@ websearch_to_tsquery('simple', :q)`` and ranked by ``ts_rank`` (a subject match
  counts 1.0, a conversation match 0.4). One document per ticket rather than expression indexes
  on ``ticket.subject`` and ``conversation_entry.body`` because the ranking has to read the
  vectors: an expression index stores none, so ranking a frequent word would re-parse every
  matching message (a few hundred thousand at 100,000 tickets), and the matches of two indexes
  would have to be merged per ticket before filters and ``LIMIT`` apply. With one row per ticket
  the filters (status, group, visibility) and the ranking work on one row per candidate, and
  "every word somewhere in the ticket" is what ``@@`` means. A new entry is appended to its
  ticket's document (a new reply costs one small update, not a rebuild); an edited or deleted
  entry or a changed subject rebuilds that ticket's document. A document stops growing near the
  1 MB a tsvector may hold (and each body adds at most its first 100,000 characters), so a huge
  mail is only partly searchable instead of failing to be stored. 'simple' (no stemming, no stop
  words) because tickets come in any language.
* **SQLite**: an FTS5 table with one row per source (the subject at rowid ``-ticket.id``, each
  entry's body at rowid ``entry.id``), matched with ``MATCH`` and ranked by ``bm25`` with the
  subject column weighted 10 to the body's 1, summed per ticket. A row per source keeps a reply's
  cost independent of the ticket's length; the all-words-per-ticket meaning is obtained by
  matching each word on its own and intersecting the tickets.

A page costs three queries whatever its length: the count, the page (tickets with their
requester, group and assignee joined), and the SLA clocks of the page's tickets (for colouring);
a search on PostgreSQL two more, to plan with ``random_page_cost`` 1.1 (:func:`_prefer_indexes`).
Every sort has an index: newest/oldest the primary key (ticket numbers follow the order tickets
were opened in), most urgent ``sla_due_at``, recently updated ``updated_at``. Relevance needs
every candidate's score (PostgreSQL reads and decompresses each one's document), so only the
tickets that pass every filter are ranked, and only up to RANK_LIMIT of them (5 % of 100,000):
beyond, a search is listed newest first and the page says so. A search counts at most
COUNT_LIMIT matches ("more than 10,000"). A word in every ticket then costs about what an
unfiltered list does. bench/search.py measures all of this at 100,000 tickets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnClause,
    ColumnElement,
    Float,
    Integer,
    Select,
    and_,
    column,
    false,
    func,
    literal_column,
    or_,
    select,
    table,
    text,
    true,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, aliased, lazyload

from .errors import NotFound
from .inbox import Urgency, clocks_of, urgency
from .models import Group, HumanTask, Ticket, User
from .operations import STATUSES
from .settings import Settings
from .sla import PRIORITIES, load_sla_config
from .tickets import may_work_on, parse_ticket_ref

PAGE_SIZE = 50
#: The default queue: everything not yet resolved or closed.
UNRESOLVED = tuple(s for s in STATUSES if s not in ("resolved", "closed"))
#: Values of the status filter besides the statuses themselves.
STATUS_QUEUES = ("unresolved", "all")
SORTS = ("relevance", "newest", "oldest", "urgent", "updated")
#: Longer queries are cut (a search box, not a document), and only so many words are used.
MAX_QUERY_CHARS = 256
MAX_TERMS = 16

#: Beyond this many matching tickets a search is listed newest first instead of by relevance:
#: ranking reads every match's index entry, and a word in most tickets ranks nothing useful.
RANK_LIMIT = 5_000
#: A search counts its matches up to this many ("more than 10,000"): an exact count of a word
#: that is in every ticket would read the whole index.
COUNT_LIMIT = 10_000

#: The search index is not in the models' metadata (see workflows/migrations/versions/0006).
SEARCH_TABLE = "ticket_search"


def include_name(name: str | None, type_: str, parent_names: Mapping[Any, Any]) -> bool:
    """Alembic's ``include_name`` hook: leave the search index (and FTS5's shadow tables) alone."""
    if type_ == "table" and name is not None:
        return name != SEARCH_TABLE and not name.startswith(f"{SEARCH_TABLE}_")
    return True


# --- the query language ---------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    text: str
    phrase: bool = False


@dataclass(frozen=True)
class Alternative:
    """Tickets with every ``include`` term and none of the ``exclude`` terms."""

    include: tuple[Term, ...]
    exclude: tuple[Term, ...] = ()


@dataclass(frozen=True)
class ParsedQuery:
    """Alternatives joined by ``or`` (as in ``websearch_to_tsquery``, ``or`` binds loosest)."""

    alternatives: tuple[Alternative, ...]

    def __bool__(self) -> bool:
        return bool(self.alternatives)

    @property
    def terms(self) -> list[Term]:
        return [t for a in self.alternatives for t in a.include]


_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')


def parse_query(q: str) -> ParsedQuery:
    """The words and phrases of ``q``; empty when it has nothing to search for (``*``, ``"``)."""
    q = "".join(ch if ch.isprintable() else " " for ch in q[: MAX_QUERY_CHARS * 4])[:MAX_QUERY_CHARS]
    alternatives: list[tuple[list[Term], list[Term]]] = [([], [])]
    count = 0
    for match in _TOKEN.finditer(q):
        minus, phrase, word = match.groups()
        if word is not None:
            if word.lower() == "or":
                if alternatives[-1][0] or alternatives[-1][1]:
                    alternatives.append(([], []))
                continue
            minus = "-" if word.startswith("-") else ""
            text, is_phrase = word.lstrip("-"), False
        else:
            text, is_phrase = phrase, True
        text = " ".join(text.split())
        if not any(ch.isalnum() for ch in text) or count >= MAX_TERMS:
            continue
        count += 1
        alternatives[-1][1 if minus else 0].append(Term(text, is_phrase))
    built = []
    for include, exclude in alternatives:
        if not include:  # only exclusions would match nearly everything: the minus was text
            include, exclude = exclude, []
        if include:
            built.append(Alternative(tuple(include), tuple(exclude)))
    return ParsedQuery(tuple(built))


def fts5_term(term: Term) -> str:
    """An FTS5 string: a quoted phrase, so nothing in it is FTS5 syntax."""
    return '"' + term.text.replace('"', '""') + '"'


def websearch_text(query: ParsedQuery) -> str:
    """``query`` rebuilt for ``websearch_to_tsquery`` (every term quoted)."""

    def quoted(term: Term) -> str:
        return '"' + term.text.replace('"', " ") + '"'

    return " or ".join(
        " ".join([*(quoted(t) for t in a.include), *("-" + quoted(t) for t in a.exclude)])
        for a in query.alternatives
    )


# --- who sees what ----------------------------------------------------------------------------


def visible_tickets(user: User) -> ColumnElement[bool]:
    """The tickets ``user`` may see: the SQL form of workflows.tickets.may_work_on."""
    if user.role == "admin":
        return true()
    groups = [g.id for g in user.groups]
    # Not a correlated EXISTS: the few tickets the user holds a task on are looked up once (a
    # hashed subplan), not once per ticket row.
    holds = Ticket.id.in_(
        select(HumanTask.ticket_id).where(HumanTask.state == "open", HumanTask.assignee_id == user.id)
    )
    return or_(
        Ticket.group_id.is_(None),
        Ticket.group_id.in_(groups) if groups else false(),
        Ticket.assignee_id == user.id,
        holds,
    )


def ticket_for_reference(session: Session, settings: Settings, user: User, q: str) -> Ticket | None:
    """The ticket ``q`` names (``LD-1042``, ``1042``, ``#1042``) if it exists and ``user`` may see it."""
    text = q.strip().lstrip("#")
    if not text or len(text) > 40:
        return None
    try:
        ticket_id = parse_ticket_ref(settings, text)
    except NotFound:
        return None
    ticket = session.get(Ticket, ticket_id)
    if ticket is None or not may_work_on(session, user, ticket):
        return None
    return ticket


# --- filters ------------------------------------------------------------------------------------

DEFAULTS: dict[str, Any] = {
    "q": "",
    "status": "unresolved",  # "all" when searching: a search looks through closed tickets too
    "group": "",
    "assignee": "",
    "priority": "",
    "breached": False,
    "sort": "relevance",
}


def _default(key: str, q: str) -> Any:
    return "all" if key == "status" and q else DEFAULTS[key]


def parse_filters(args: Mapping[str, str]) -> dict[str, Any]:
    """Filters from a query string; unknown values fall back to the default (never an error).

    ``q``: the search. ``status``: unresolved | all | a status (default: unresolved, or all when
    searching). ``group``: a group's slug | none. ``assignee``: me | none | a user id (empty:
    anyone). ``priority``: P1..P4. ``breached``: 1. ``sort``: relevance (the default: newest
    first when not searching) | newest | oldest | urgent | updated.
    """
    q = (args.get("q") or "").strip()[:MAX_QUERY_CHARS]
    status = args.get("status") or _default("status", q)
    assignee = (args.get("assignee") or "").strip()
    priority = args.get("priority") or ""
    sort = args.get("sort") or ""
    return {
        "q": q,
        "status": status if status in STATUS_QUEUES or status in STATUSES else _default("status", q),
        "group": (args.get("group") or "").strip()[:64],
        "assignee": assignee if assignee in ("me", "none") or _user_id(assignee) else "",
        "priority": priority if priority in PRIORITIES else "",
        "breached": args.get("breached", "") in ("1", "on", "true", "yes"),
        "sort": sort if sort in SORTS else "relevance",
    }


def _user_id(value: str) -> bool:
    return value.isdigit() and len(value) < 12


def link_args(filters: Mapping[str, Any]) -> dict[str, str]:
    """The filters that differ from the defaults, as query-string arguments (for links)."""
    q = filters.get("q", "")
    found: dict[str, str] = {}
    for key in DEFAULTS:
        value = filters.get(key, _default(key, q))
        if value != _default(key, q):
            found[key] = "1" if value is True else str(value)
    return found


# --- the page -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TicketRow:
    ticket: Ticket
    assignee: User | None
    urgency: Urgency


@dataclass(frozen=True)
class TicketPage:
    rows: list[TicketRow]
    total: int
    page: int
    pages: int
    page_size: int
    #: What the results are ordered by (relevance only when there was something to search).
    sort: str
    #: True when ``q`` was given but holds no word to search for (only punctuation, say).
    unsearchable: bool = False
    #: True when relevance was asked for but more than RANK_LIMIT tickets match (newest first).
    unranked: bool = False
    #: True when more than COUNT_LIMIT tickets match a search (``total`` is COUNT_LIMIT then).
    capped: bool = False


def search_tickets(
    session: Session,
    settings: Settings,
    user: User,
    *,
    now: datetime,
    q: str = "",
    status: str = "unresolved",
    group: str = "",
    assignee: str = "",
    priority: str = "",
    breached: bool = False,
    sort: str = "relevance",
    page: int = 1,
    page_size: int = PAGE_SIZE,
) -> TicketPage:
    """One page of the tickets ``user`` may see, filtered, searched and sorted.

    Filter values are those of :func:`parse_filters` (unknown ones are treated as no filter).
    """
    conditions: list[ColumnElement[bool]] = [visible_tickets(user)]
    if status in STATUSES:
        conditions.append(Ticket.status == status)
    elif status != "all":
        conditions.append(Ticket.status.in_(UNRESOLVED))
    if group == "none":
        conditions.append(Ticket.group_id.is_(None))
    elif group:
        conditions.append(Ticket.group_id.in_(select(Group.id).where(Group.slug == group)))
    if assignee == "me":
        conditions.append(Ticket.assignee_id == user.id)
    elif assignee == "none":
        conditions.append(Ticket.assignee_id.is_(None))
    elif _user_id(assignee):
        conditions.append(Ticket.assignee_id == int(assignee))
    if priority in PRIORITIES:
        conditions.append(Ticket.priority == priority)
    if breached:
        conditions.append(Ticket.sla_due_at <= now)

    query = parse_query(q) if q.strip() else None
    if sort not in SORTS or (sort == "relevance" and not query):
        sort = "relevance" if query else "newest"
    if query is not None and not query:
        return TicketPage([], 0, 1, 1, page_size, sort, unsearchable=True)

    matching: list[ColumnElement[bool]] = []
    if query:
        matching.append(_matching(session, query))
    with _prefer_indexes(session, searching=query is not None):
        if query:
            matches = select(Ticket.id).where(*conditions, *matching).limit(COUNT_LIMIT + 1).subquery()
            total = session.scalar(select(func.count()).select_from(matches)) or 0
        else:
            total = session.scalar(select(func.count(Ticket.id)).where(*conditions)) or 0
        capped = query is not None and total > COUNT_LIMIT
        if capped:
            total = COUNT_LIMIT
        pages = max(1, -(-total // page_size))
        page = min(max(page, 1), pages)
        unranked = sort == "relevance" and (capped or total > RANK_LIMIT)
        if unranked:
            sort = "newest"

        holder = aliased(User, name="assignee")
        listed = select(Ticket, holder).outerjoin(holder, holder.id == Ticket.assignee_id)
        if query and sort == "relevance":
            # Rank the (at most RANK_LIMIT) tickets that pass every filter, nothing more.
            candidates = select(Ticket.id).where(*conditions, *matching).limit(RANK_LIMIT).cte("candidates")
            scored = _scores(session, query, candidates.prefix_with("MATERIALIZED", dialect="postgresql"))
            listed = listed.join(scored, scored.c.ticket_id == Ticket.id)
            order: Sequence[Any] = (scored.c.score.desc(), Ticket.id.desc())
        else:
            listed = listed.where(*conditions, *matching)
            order = {
                # Ticket numbers follow the order tickets were opened in: the primary key is the index.
                "newest": (Ticket.id.desc(),),
                "oldest": (Ticket.id,),
                "urgent": (Ticket.sla_due_at.asc().nulls_last(), Ticket.id),
                "updated": (Ticket.updated_at.desc(), Ticket.id.desc()),
            }[sort]
        found = session.execute(
            listed.options(lazyload(holder.groups))
            .order_by(*order)
            .limit(page_size)
            .offset((page - 1) * page_size)
        ).all()
    clocks = clocks_of(session, [ticket.id for ticket, _ in found])
    config = load_sla_config(settings)
    rows = [
        TicketRow(ticket, holder_row, urgency(clocks.get(ticket.id, []), config, now))
        for ticket, holder_row in found
    ]
    return TicketPage(rows, total, page, pages, page_size, sort, unranked=unranked, capped=capped)


# --- the two indexes ----------------------------------------------------------------------------

_FTS = table(SEARCH_TABLE, column("ticket_id", Integer), column("rank", Float))
_FTS_TABLE: ColumnClause[Any] = literal_column(SEARCH_TABLE)
#: bm25 weights per column: ticket_id (unindexed), subject, body.
_BM25 = "bm25(0.0, 10.0, 1.0)"
_PG = table(SEARCH_TABLE, column("ticket_id", Integer), column("document", postgresql.TSVECTOR))


def _postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _tsquery(query: ParsedQuery) -> ColumnElement[Any]:
    return postgresql.websearch_to_tsquery("simple", websearch_text(query))


def _matching(session: Session, query: ParsedQuery) -> ColumnElement[bool]:
    """The condition for the tickets that match ``query``."""
    if _postgresql(session):
        return Ticket.id.in_(select(_PG.c.ticket_id).where(_PG.c.document.bool_op("@@")(_tsquery(query))))
    # Rows are single messages: a ticket matches when its rows together hold every word.
    return or_(*(_fts5_alternative(a) for a in query.alternatives))


def _scores(session: Session, query: ParsedQuery, candidates: Any) -> Any:
    """``(ticket_id, score)`` of the ``candidates`` (a CTE of ticket ids); higher is better."""
    if _postgresql(session):
        return (
            select(_PG.c.ticket_id, func.ts_rank(_PG.c.document, _tsquery(query)).label("score"))
            .join(candidates, candidates.c.id == _PG.c.ticket_id)
            .subquery("hits")
        )
    # bm25 of each row with any of the words, summed per ticket (rows of other tickets skipped).
    any_term = " OR ".join(fts5_term(t) for t in query.terms)
    matches = (
        select(_FTS.c.ticket_id, _FTS.c.rank.label("rank"))
        .where(
            _FTS_TABLE.bool_op("MATCH")(any_term),
            _FTS.c.rank.bool_op("MATCH")(_BM25),
            _FTS.c.ticket_id.in_(select(candidates.c.id)),
        )
        .subquery("matches")
    )
    return (
        select(matches.c.ticket_id, (-func.sum(matches.c.rank)).label("score"))
        .group_by(matches.c.ticket_id)
        .subquery("hits")
    )


@contextmanager
def _prefer_indexes(session: Session, *, searching: bool) -> Iterator[None]:
    """On PostgreSQL, plan a search's statements with ``random_page_cost`` at most 1.1 (the value
    for SSDs and cached data; PostgreSQL's default 4 models spinning disks).

    With the default, a word in a tenth of the tickets is matched by reading and decompressing
    every document in the table (the planner does not count the decompression) instead of
    the few the GIN index names: 400 ms instead of 50 at 100,000 tickets. Transaction-local,
    and put back afterwards.
    """
    if not searching or not _postgresql(session):
        yield
        return
    previous = session.execute(
        text(
            "WITH previous AS (SELECT current_setting('random_page_cost') AS value) "
            "SELECT value, set_config('random_page_cost', least(value::float8, 1.1)::text, true) "
            "FROM previous"
        )
    ).scalar_one()
    yield  # (after an error the transaction is rolled back, and the setting with it)
    session.execute(text("SELECT set_config('random_page_cost', :value, true)"), {"value": previous})


def _fts5_alternative(alternative: Alternative) -> ColumnElement[bool]:
    """Every word somewhere in the ticket (its rows are matched one word at a time)."""

    def tickets_with(term: Term) -> Select[Any]:
        return select(_FTS.c.ticket_id).where(_FTS_TABLE.bool_op("MATCH")(fts5_term(term))).correlate(None)

    return and_(
        *(Ticket.id.in_(tickets_with(t)) for t in alternative.include),
        *(Ticket.id.not_in(tickets_with(t)) for t in alternative.exclude),
    )
