"""Ticket search and lists at scale: how long one page takes with 100,000 tickets.

    python -m bench.search                       # PostgreSQL, its own database, 100,000 tickets
    python -m bench.search --tickets 20000 --database sqlite
    python -m bench.search --postgres postgresql+psycopg://postgres@127.0.0.1:5432/lanedesk_search_bench \\
        --tickets 100000 --messages 4 --runs 9 --explain
    python -m bench.search --reuse               # measure again what the last PostgreSQL run loaded

What is measured, on a database of its own (rebuilt from the migrations; never the test suite's):

1. Load: ``--tickets`` tickets (status, priority, group, assignee, SLA due time spread like a
   real desk's) with 1 to 2 x ``--messages`` - 1 conversation entries each (customer mail,
   agent replies, notes; ~40 words drawn from a Zipf-distributed vocabulary of 30,000 words),
   bulk-inserted at migration 0005, so that
2. ``upgrade 0006`` builds the search index over all of it (the backfill an existing desk runs).
3. Searches through :func:`workflows.search.search_tickets`, the function the page calls (the
   count, the page of 50 with requester/group/assignee, the SLA clocks): words planted at known
   rates (in 0.01 %, 1 % and 10 % of tickets), a word in most tickets, two words, a phrase, an
   exclusion, for an admin (all tickets) and for an agent of one group (the visibility rule),
   with and without filters; and the lists without a search (each sort). Median and p90 of
   ``--runs`` runs (after one warm-up run) in ms.
4. The cost the index adds to a write: one reply (a unit of work inserting one entry) with
   the triggers, on a ticket with a few messages.

Prints a table; exits 0 (or 1 when the database is unreachable). The PostgreSQL database is
left in place (for ``--reuse``); drop it with ``dropdb lanedesk_search_bench``.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, select, text
from sqlalchemy.orm import Session

from workflows import migrate
from workflows.db import make_engine
from workflows.models import Base, ConversationEntry, Group, User
from workflows.search import search_tickets
from workflows.settings import Settings, load_settings
from workflows.users import add_user, ensure_default_groups

from .__main__ import ensure_database

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/lanedesk_search_bench"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
#: Planted words: (word, share of tickets with it in one of their messages).
PLANTED = (("zebrafish", 0.0001), ("printer", 0.01), ("invoice", 0.10))
REPLY = "Thanks, the printer works again after the toner was replaced."
TICKET_COLUMNS = (
    "id",
    "subject",
    "status",
    "priority",
    "requester_id",
    "group_id",
    "assignee_id",
    "created_at",
    "updated_at",
    "sla_due_at",
)
STATUSES = ("new", "open", "open", "open", "waiting_on_customer", "escalated", "resolved", "closed", "closed")
PRIORITIES = ("P1", "P2", "P3", "P3", "P3", "P4")


def vocabulary(size: int, rng: random.Random) -> tuple[list[str], list[float]]:
    """``size`` distinct made-up words and Zipf cumulative weights (word k has weight 1/k)."""
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
    words: set[str] = set()
    while len(words) < size:
        syllables = rng.randint(1, 4)
        words.add("".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(syllables)))
    ordered = sorted(words)
    rng.shuffle(ordered)
    cumulative = list(itertools.accumulate(1 / (k + 1) for k in range(size)))
    return ordered, cumulative


class Writer:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.words, self.weights = vocabulary(30_000, rng)
        self.total = self.weights[-1]

    def text(self, words: int) -> str:
        picks = [bisect.bisect_left(self.weights, self.rng.random() * self.total) for _ in range(words)]
        return " ".join(self.words[min(i, len(self.words) - 1)] for i in picks)


def fresh_engine(settings: Settings) -> Engine:
    """The desk's engine on an empty database (PostgreSQL: the public schema is dropped and recreated)."""
    ensure_database(settings.database_url)
    engine = make_engine(settings)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    else:
        Base.metadata.drop_all(engine)
    return engine


def load(engine: Engine, tickets: int, messages: int, seed: int) -> tuple[int, float]:
    """Bulk-insert the desk at revision 0005; returns (entries written, seconds)."""
    rng = random.Random(seed)
    writer = Writer(rng)
    started = time.perf_counter()
    with Session(engine) as session:
        ensure_default_groups(session)
        add_user(session, email="admin@bench.example", role="admin", groups=[], now=NOW)
        agents = [
            add_user(session, email=f"agent{i}@bench.example", role="agent", groups=[g], now=NOW)
            for i, g in enumerate(["tier-1", "tier-1", "tier-2", "tier-2", "tier-3", "engineering"])
        ]
        session.commit()
        groups = list(session.scalars(select(Group.id).order_by(Group.id)))
        agent_ids = [a.id for a in agents]
    customers = max(1, tickets // 20)
    planted = {
        word: set(rng.sample(range(tickets), max(1, round(tickets * share)))) for word, share in PLANTED
    }
    ticket_rows: list[tuple[Any, ...]] = []
    entry_rows: list[tuple[Any, ...]] = []
    for n in range(tickets):
        created = NOW - timedelta(minutes=(tickets - n) * 5)
        status = rng.choice(STATUSES)
        subject = writer.text(rng.randint(3, 8)).capitalize()
        if n % 500 == 0:
            subject += " paper jam"
        group = rng.choice([*groups, None]) if rng.random() < 0.9 else None
        assignee = rng.choice(agent_ids) if rng.random() < 0.5 else None
        due = None if status in ("resolved", "closed") else NOW + timedelta(minutes=rng.randint(-600, 3000))
        updated = created + timedelta(minutes=rng.randint(0, 600))
        ticket_rows.append(
            (
                n + 1,
                subject,
                status,
                rng.choice(PRIORITIES),
                1 + n % customers,
                group,
                assignee,
                created,
                updated,
                due,
            )
        )
        count = rng.randint(1, 2 * messages - 1)
        for m in range(count):
            body = writer.text(rng.randint(15, 70))
            if m == 0:
                for word, chosen in planted.items():
                    if n in chosen:
                        body += f" {word}"
            kind = "inbound" if m % 2 == 0 else rng.choice(["outbound", "outbound", "note"])
            entry_rows.append((n + 1, kind, body, created + timedelta(minutes=m)))
    customer_rows = [(c + 1, f"customer{c}@bench.example", f"Customer {c}", NOW) for c in range(customers)]
    _insert(engine, "customer", ("id", "email", "name", "created_at"), customer_rows)
    _insert(
        engine,
        "ticket",
        TICKET_COLUMNS,
        ticket_rows,
    )
    _insert(engine, "conversation_entry", ("ticket_id", "kind", "body", "created_at"), entry_rows)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for table in ("customer", "ticket"):
                conn.execute(text(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))"))
    return len(entry_rows), time.perf_counter() - started


def _insert(engine: Engine, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            cursor = raw.driver_connection.cursor()  # type: ignore[union-attr]
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            raw.commit()
        finally:
            raw.close()
        return
    placeholders = ", ".join("?" for _ in columns)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})",
            [tuple(_sqlite_value(v) for v in row) for row in rows],
        )


def _sqlite_value(value: Any) -> Any:
    """Datetimes as SQLAlchemy stores them on SQLite (UTC, no offset)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float, Any]:
    """(median ms, p90 ms, last result) over ``runs`` runs after one warm-up."""
    result = fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.9))], result


URGENT_P3 = {"q": "printer", "status": "unresolved", "priority": "P3", "sort": "urgent"}
CASES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("rare word (0.01 %)", {"q": "zebrafish"}),
    ("word in 1 % of tickets", {"q": "printer"}),
    ("word in 10 % of tickets", {"q": "invoice"}),
    ("most frequent word", {"q": "{top}"}),
    ("two words (1 % and 10 %)", {"q": "printer invoice"}),
    ("phrase in subjects", {"q": '"paper jam"'}),
    ("10 % word minus 1 % word", {"q": "invoice -printer"}),
    ("1 % word, unresolved, P3, by urgency", URGENT_P3),
    ("10 % word, page 20", {"q": "invoice", "page": 20}),
    ("list: unresolved, newest", {}),
    ("list: unresolved, most urgent", {"sort": "urgent"}),
    ("list: unresolved, recently updated", {"sort": "updated"}),
    ("list: breached", {"breached": True}),
    ("list: all statuses, oldest, page 100", {"status": "all", "sort": "oldest", "page": 100}),
)


def measure(engine: Engine, settings: Settings, runs: int, explain: bool, writer: Writer) -> None:
    top = writer.words[0]
    with Session(engine) as session:
        admin = session.scalar(select(User).where(User.email == "admin@bench.example"))
        agent = session.scalar(select(User).where(User.email == "agent0@bench.example"))
        assert admin is not None and agent is not None
        print(f"\n{'query':<46} {'who':<6} {'hits':>7} {'order':<10} {'median ms':>10} {'p90 ms':>8}")
        for label, case in CASES:
            params = dict(case)
            if "q" in params:
                params["q"] = params["q"].format(top=top)
            for who, user in (("admin", admin), ("agent", agent)):

                def run(user: User = user, params: dict[str, Any] = params) -> Any:
                    page = search_tickets(session, settings, user, now=NOW, **params)
                    session.rollback()  # a fresh transaction per page, as a request has
                    return page

                median, p90, page = timed(run, runs)
                print(f"{label:<46} {who:<6} {page.total:>7,} {page.sort:<10} {median:>10.1f} {p90:>8.1f}")
        if explain and engine.dialect.name == "postgresql":
            _explain(session, settings, agent, "printer")
            _explain(session, settings, admin, "invoice")


def _explain(session: Session, settings: Settings, user: User, q: str) -> None:
    """EXPLAIN ANALYZE the statements of one search page (as the page runs them)."""
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")) and "set_config" not in statement:
            statements.append((statement, parameters))

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        search_tickets(session, settings, user, now=NOW, q=q)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    connection = session.connection()
    connection.exec_driver_sql("SET LOCAL random_page_cost = 1.1")  # as search_tickets plans them
    for statement, parameters in statements:
        if "ticket" not in statement:
            continue
        plan = connection.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).scalars()
        print(f"\n-- search {q!r} as {user.email}\n" + "\n".join(plan))
    session.rollback()


def measure_writes(engine: Engine, count: int) -> None:
    with Session(engine) as session:
        ticket_ids = list(session.scalars(text("SELECT id FROM ticket ORDER BY id LIMIT :n"), {"n": count}))
    samples = []
    for ticket_id in ticket_ids:
        started = time.perf_counter()
        with Session(engine) as session, session.begin():
            session.add(ConversationEntry(ticket_id=ticket_id, kind="outbound", body=REPLY, created_at=NOW))
        samples.append((time.perf_counter() - started) * 1000)
    median = statistics.median(samples)
    print(
        f"\none reply (insert + commit, index kept by triggers): median {median:.2f} ms over {len(samples)}"
    )


def load_and_index(engine: Engine, args: argparse.Namespace) -> None:
    print(f"{engine.dialect.name}: {args.tickets:,} tickets, ~{args.messages} messages each")
    migrate.upgrade(engine, "0005")
    entries, seconds = load(engine, args.tickets, args.messages, args.seed)
    print(f"loaded {args.tickets:,} tickets and {entries:,} entries at 0005 in {seconds:.1f} s")
    started = time.perf_counter()
    migrate.upgrade(engine, "head")
    took = time.perf_counter() - started
    print(f"upgrade to head (builds and backfills the search index): {took:.1f} s")
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
            size = conn.scalar(text("SELECT pg_size_pretty(pg_total_relation_size('ticket_search'))"))
            print(f"ticket_search with its GIN index: {size}")
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--postgres", default=DEFAULT_PG, help="PostgreSQL URL (a database of its own)")
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=4, help="average conversation entries per ticket")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE a search (PostgreSQL)")
    parser.add_argument(
        "--reuse", action="store_true", help="measure the PostgreSQL database a previous run loaded"
    )
    args = parser.parse_args(argv)
    if args.reuse and args.database != "postgresql":
        parser.error("--reuse needs --database postgresql (the SQLite database is temporary)")
    with tempfile.TemporaryDirectory() as tmp:
        url = args.postgres if args.database == "postgresql" else f"sqlite:///{Path(tmp) / 'search.db'}"
        settings = load_settings({"LANEDESK_DATABASE_URL": url, "LANEDESK_DATA_DIR": tmp})
        try:
            engine = make_engine(settings) if args.reuse else fresh_engine(settings)
        except Exception as exc:
            print(f"{args.database} unreachable: {exc.__class__.__name__}: {exc}", file=sys.stderr)
            return 1
        if not args.reuse:
            load_and_index(engine, args)
        writer = Writer(random.Random(args.seed))  # the same vocabulary as the load
        measure(engine, settings, args.runs, args.explain, writer)
        measure_writes(engine, 200)
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
