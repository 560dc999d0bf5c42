"""The agent workspace under load (issue "web performance"): inbox and ticket page on 100,000 tickets.

    python -m bench.web                  # 100,000 tickets, 10,000 open tasks; 5 wrk runs x 15 s per page
    python -m bench.web --quick          # smoke run: 10,000 tickets, 1,000 open; 2 runs x 5 s
    python -m bench.web --reuse --runs 3 --duration 10 --only rendered poll   # some pages only
    python -m bench.web --reuse --only tickets --rates 100 250 --mixed-rate 0  # the ticket page
    python -m bench.web --postgres postgresql+psycopg://postgres@127.0.0.1:5432/lanedesk_bench_web \\
        --tickets 100000 --open 10000 --workers 2 --threads 4 --runs 5 --duration 15 [--reuse]

Target: with 100,000 tickets and 10,000 open tasks on PostgreSQL, under gunicorn with 2 workers
and a load generator on loopback, the inbox and the ticket page answer with p95 <= 50 ms, and
the inbox serves >= 500 requests/s. (A Flask hello-world under gunicorn does about 7,000 req/s
on this 2-core machine: shared/notes/performance.md section 2e.)

1. Data (its own database, schema dropped and rebuilt from the migrations; ``--reuse`` keeps
   a database this bench built earlier with the same sizes). Default groups, agents of tier 1-3
   with two group leads, an admin, the bundled diagram. Then *templates*: a few hundred tickets
   opened and worked through the real services (open_ticket, complete_task, reply_as_agent,
   add_customer_reply, timers woken in-process), in seven shapes: waiting at triage, worked by
   Tier 1, escalated to Tier 2, escalated to Tier 3 (those four have an open task), waiting on
   the customer, resolved, closed after the 7-day quiet timer. Each template is copied in SQL
   (INSERT ... SELECT) into as many tickets as its shape needs: ticket, conversation, audit
   trail, SLA clocks, workflow instance (its state names the copy's open task and number),
   human tasks (new ids; open ones held by a member of their group for 15 % of triage tasks
   and 60 % of work tasks, else in the group's queue), outbox and workflow-message rows. Every
   copy is the template moved in time: open tickets were opened in the last 6 days (more of
   them recently), waiting and resolved ones in the last 7, closed ones in the last 180, so the
   SLA clocks' due times (and ``ticket.sla_due_at``, checked against the clocks) are staggered:
   about 40 % of open tickets breached, the rest due within hours or days. Requesters: 40,000
   customers (some with several tickets). ANALYZE.
   (A copy's serialized state still names its template's timer due times and completed task
   ids: no timer runs during this bench, and nothing reads those.)
2. Serve: ``python -m web web --workers 2 --threads N`` (gunicorn gthread, the production
   command) on a free loopback port, with LANEDESK_DATABASE_URL pointing at this database.
3. Load: each user logs in once (GET /login for the CSRF token, POST), then ``wrk -t1 -c16``
   with that session cookie, ``--runs`` runs of ``--duration`` s per page after a warm-up:
   /healthz (the framework's ceiling on this machine, no database), /inbox?view=all as a
   Tier 1 agent (about a third of the open tasks) and as the admin (all of them), and
   /tickets/LD-n for an open Tier 1 ticket with the median conversation length; also /inbox
   without parameters as that agent, who holds tasks: the default view is then "mine". p95 comes from
   a wrk Lua ``done`` hook; every response status is counted from gunicorn's access log.
   Then one run with a single connection: the time one request takes without queueing (with 16
   connections on 2 cores, p95 is mostly time spent waiting: about 16 / throughput).
   The inbox and the ticket page keep rendered pages per process until something they show
   changes (web.inbox, web.tickets, web.inbox_cache), so a repeated GET is mostly the kept page;
   each response says which in ``X-Inbox-Cache`` / ``X-Page-Cache`` (counted by the Lua
   ``response`` hook). Three pages defeat it with a new query parameter per request ("every
   request rendered": the full-render cost, e.g. of a ticket page nobody opened this minute),
   and one polls /inbox/rows as the page's htmx does, revalidating with the ETag of its last
   200 (304s).
   Paced runs (``--rates``, default 100 250 500 requests/s): p95 at a fixed offered rate, besides
   the closed-loop c16 figures (where 16 connections always wait on each other). wrk has no
   rate option, so each connection waits an exponential think time (Lua ``delay``) before each
   request; with at least 16 connections and a mean think time of 100 ms or more, requests
   arrive independently of the answers (Poisson), as from many browsers, and wrk times each
   from when it is sent. The think time is the connections / rate minus the single-connection
   p50, so the rate got is close to the one offered (both are printed). Rates above 80 % of what
   the page served at c16 are not tried (the queue would only grow).
   Mixed runs (``--mixed-rate``, default 5 changes/s): the Tier 1 agent's /inbox?view=all, then
   the ticket page, under wrk (c16) while a background thread claims, gives back and
   re-prioritises Tier 1 tasks through the real services, so the share of kept pages is what a
   busy desk would see. (The changes stay in the database; claims and give-backs alternate,
   priorities move between P2 and P3.)
   CPU per process group over the runs (/proc): gunicorn, PostgreSQL, wrk, and what other
   processes used (the machine may be shared: read req/s with that in mind; CPU per request is
   the steadier figure, and 2 cores / CPU per request the ceiling it implies).
4. Where the time goes, in-process (Flask test client on the same database, no HTTP): wall
   time, SQL statements and time inside the driver per request, a cProfile (CPU time) by layer
   and by function, and EXPLAIN (ANALYZE, BUFFERS) of each statement of an inbox request.

Prints a table with medians of runs and the ratio to each target, the paced table, and the
ticket page's p95 against 50 ms measured each way (c16, one connection, each offered rate) on
one line; exits non-zero only when
something fails (server does not start, a login fails, a page answers anything but 200).
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import math
import os
import pstats
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import IO, Any

from sqlalchemy import event, insert, select, text
from sqlalchemy.engine import make_url

from web import create_app
from web import inbox as inbox_pages
from web import tickets as ticket_pages
from web.inbox_cache import PageCache
from workflows import migrate
from workflows.app import Desk, build_desk
from workflows.bootstrap import deploy_bundled
from workflows.models import TICKET_NUMBER_OFFSET, Group, HumanTask, InboxRevision, User, WorkflowInstance
from workflows.page_revision import PAGE_ROW
from workflows.settings import load_settings
from workflows.tickets import add_customer_reply, change_priority, open_ticket, reply_as_agent
from workflows.users import add_user, ensure_default_groups, set_password
from workflows.wakeups import wake_instance
from workflows.worklist import claim_task, complete_task, release_task

from .__main__ import ensure_database
from .timers import ELSE, PG_OTHER, PG_OURS, copy_rows, cpu_sample, cpu_window, layers_of, pct, stage

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/lanedesk_bench_web"
SECRET = "bench-web-" + "0123456789abcdef" * 3
PASSWORD = "bench web password"
USER_AGENT = "lanedesk-bench-web"  # sent by the login and by wrk: Flask-Login's "strong" protection
P95_TARGET_MS = 50.0
INBOX_RATE_TARGET = 500.0
HELLO_WORLD_RATE = 7_028  # shared/notes/performance.md 2e (median of 5 wrk runs)
#: Template ticket shapes: (kind, group of its open task or None, share of open / of the rest).
OPEN_KINDS = {
    "triage": ("tier-1", 0.15),
    "tier1": ("tier-1", 0.18334),
    "tier2": ("tier-2", 0.33333),
    "tier3": ("tier-3", 0.33333),
}
DONE_KINDS = {"waiting": 0.03, "resolved": 0.04, "closed": 0.93}
#: Share of open tasks held by someone (the rest wait in their group's queue).
HELD_TRIAGE, HELD_WORK = 0.15, 0.60
#: Agents per group (tier-1 agent 1 is the one who logs in), leads, one admin.
AGENTS = {"tier-1": 10, "tier-2": 6, "tier-3": 4}
CUSTOMER_SHARE = 0.4  # distinct requesters per ticket
OPEN_SPAN, DONE_SPAN = timedelta(days=6), timedelta(days=180)
#: In-process measurement: requests timed, then profiled, per page.
TIMED, PROFILED = 60, 30

SUBJECTS = [
    "Cannot log in since this morning",
    "Invoice {n} shows the wrong VAT number",
    "Export to CSV times out",
    "Password reset mail never arrives",
    "Please add a second admin to our account",
    "API returns 502 now and then",
    "Wrong currency on the last invoice",
    "How do I change the billing address?",
    "Dashboard is empty after upgrade",
    "Two-factor codes are rejected",
    "Cancel order {n}",
    "Attachment upload fails over 10 MB",
    "Mobile app crashes on start",
    "Data missing from the monthly report",
    "Request: SSO with our Azure AD",
    "Slow search results since Monday",
    "Duplicate charge on my card",
    "Webhook deliveries stopped",
    "Need a copy of contract {n}",
    "User cannot see shared folders",
]
BODIES = [
    "Hello,\n\nsince this morning {what}. We tried again from two browsers and the result is the same. "
    "Could you please look into it? It blocks {who} of our team.\n\nThanks,\n{name}",
    "Hi support,\n\n{what}. This worked fine last week. Is anything known on your side? We need it "
    "for a customer meeting on Thursday.\n\nBest regards\n{name}",
    "Dear team,\n\nwe noticed that {what}. Attached are the details from our side (order {n}). "
    "Please advise how to proceed.\n\nKind regards,\n{name}\nOperations",
]
WHATS = [
    "the page shows an error 500",
    "the numbers do not add up",
    "nothing happens when we click Save",
    "the mail bounces",
    "the import stops at 80 %",
    "the login loops back to the start page",
]
FIRST = [
    "Jana",
    "Petr",
    "Eva",
    "Tomas",
    "Lucie",
    "Martin",
    "Anna",
    "Jakub",
    "Klara",
    "Ondrej",
    "Marie",
    "Pavel",
    "Tereza",
    "David",
    "Katerina",
    "Jan",
    "Veronika",
    "Lukas",
    "Barbora",
    "Michal",
]
LAST = [
    "Novak",
    "Svoboda",
    "Dvorak",
    "Cerny",
    "Prochazka",
    "Kucera",
    "Vesely",
    "Horak",
    "Nemec",
    "Marek",
    "Pospisil",
    "Hajek",
    "Jelinek",
    "Kral",
    "Ruzicka",
    "Benes",
    "Fiala",
    "Sedlacek",
    "Dolezal",
    "Zeman",
    "Kolar",
    "Navratil",
    "Cermak",
    "Urban",
    "Blaha",
]


def log(message: str = "") -> None:
    print(message, flush=True)


# -- phase 1: data ----------------------------------------------------------------------------
@dataclass
class Users:
    agent: str  # the Tier 1 agent who logs in
    admin: str
    members: dict[str, list[int]]  # group slug: ids of its agents (leads included)
    group_ids: dict[str, int]


def fresh_schema(url: str, data_dir: Path) -> Desk:
    ensure_database(url)
    desk = build_desk(settings_for(url, data_dir))
    if desk.engine.dialect.name != "postgresql":
        raise SystemExit("bench.web measures PostgreSQL; give --postgres postgresql+psycopg://...")
    with desk.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    migrate.upgrade(desk.engine)
    return desk


def settings_for(url: str, data_dir: Path) -> Any:
    return load_settings(
        {"LANEDESK_DATABASE_URL": url, "LANEDESK_DATA_DIR": str(data_dir), "LANEDESK_SECRET_KEY": SECRET}
    )


def make_users(desk: Desk) -> Users:
    now = desk.clock() - timedelta(days=400)
    with desk.unit_of_work() as session:
        ensure_default_groups(session)
        for slug, count in AGENTS.items():
            for i in range(1, count + 1):
                name = f"{FIRST[(i * 7) % len(FIRST)]} {LAST[(i * 3 + len(slug)) % len(LAST)]} ({slug})"
                add_user(
                    session,
                    email=f"{slug}-agent{i}@bench.example",
                    role="agent",
                    groups=[slug],
                    name=name,
                    now=now,
                )
        add_user(
            session,
            email="lead-a@bench.example",
            role="agent",
            groups=[],
            lead_of=["tier-1", "tier-2"],
            name="Lukas Lead",
            now=now,
        )
        add_user(
            session,
            email="lead-b@bench.example",
            role="agent",
            groups=[],
            lead_of=["tier-3", "engineering"],
            name="Eva Expert",
            now=now,
        )
        admin = add_user(
            session, email="admin@bench.example", role="admin", groups=[], name="Ada Admin", now=now
        )
        agent = session.scalars(select(User).where(User.email == "tier-1-agent1@bench.example")).one()
        set_password(session, agent, PASSWORD, now=now)
        set_password(session, admin, PASSWORD, now=now)
    deploy_bundled(desk)
    return load_users(desk)


def load_users(desk: Desk) -> Users:
    with desk.unit_of_work(readonly=True) as session:
        groups = {g.slug: g.id for g in session.scalars(select(Group))}
        members: dict[str, list[int]] = {slug: [] for slug in groups}
        for user in session.scalars(select(User).order_by(User.id)):
            for group in user.groups:
                members[group.slug].append(user.id)
    return Users("tier-1-agent1@bench.example", "admin@bench.example", members, groups)


@dataclass
class Template:
    ticket_id: int
    kind: str
    created_at: datetime


def make_templates(desk: Desk, per_kind: int, seed: int = 7) -> list[Template]:
    """Open and work ``per_kind`` tickets of each shape through the real services."""
    rng = random.Random(seed)
    settings = desk.settings
    now = datetime.now(UTC).replace(microsecond=0)
    made: list[Template] = []
    kinds = [*OPEN_KINDS, *DONE_KINDS]
    for j in range(per_kind * len(kinds)):
        kind = kinds[j % len(kinds)]
        # Open shapes were opened a few hours ago (their clocks mostly still run); the others a
        # month ago, so the closed ones passed their 7-day quiet timer in the past.
        t = (
            now
            - (timedelta(hours=5) if kind in OPEN_KINDS else timedelta(days=30))
            - timedelta(seconds=30 * j)
        )
        made.append(Template(work_template(desk, settings, rng, kind, j, t), kind, t))
    return made


def work_template(desk: Desk, settings: Any, rng: random.Random, kind: str, j: int, t: datetime) -> int:
    requester = f"template{j}@customers.example"
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    n = 1000 + j
    agent1 = f"tier-1-agent{1 + rng.randrange(AGENTS['tier-1'])}@bench.example"
    agent2 = f"tier-2-agent{1 + rng.randrange(AGENTS['tier-2'])}@bench.example"
    minutes = iter(range(10, 10_000, 7))

    def at() -> datetime:
        return t + timedelta(minutes=next(minutes))

    def body() -> str:
        return rng.choice(BODIES).format(
            what=rng.choice(WHATS), who=rng.choice(["two", "most", "all"]), name=name, n=n
        )

    with desk.unit_of_work() as session:
        ticket = open_ticket(
            session,
            settings,
            requester=requester,
            requester_name=name,
            subject=rng.choice(SUBJECTS).format(n=n),
            body=body(),
            now=t,
        )
        ticket_id = ticket.id
    ref = ticket_id + TICKET_NUMBER_OFFSET

    def customer_says(text_: str) -> None:
        with desk.unit_of_work() as session:
            add_customer_reply(session, settings, ticket_ref=ref, sender=requester, body=text_, now=at())

    def agent_says(email: str, text_: str) -> None:
        with desk.unit_of_work() as session:
            reply_as_agent(session, settings, ticket_ref=ref, agent_email=email, body=text_, now=at())

    def complete(email: str, data: dict[str, str]) -> None:
        with desk.unit_of_work() as session:
            user = session.scalars(select(User).where(User.email == email)).one()
            task = session.scalars(
                select(HumanTask).where(HumanTask.ticket_id == ticket_id, HumanTask.state == "open")
            ).one()
            complete_task(session, settings, task_id=task.id, user=user, data=data, now=at())

    if rng.random() < 0.3:
        customer_says("One more detail: it also happens on the second account.\n\n" + name)
    if kind == "triage":
        return ticket_id
    priority = rng.choices(["P1", "P2", "P3", "P4"], weights=[5, 20, 55, 20])[0]
    category = rng.choice(["question", "incident", "request"])
    complete(agent1, {"category": category, "priority": priority, "summary": f"{category} from {name}"})
    if rng.random() < 0.75:
        agent_says(
            agent1,
            f"Hello {name.split()[0]},\n\nthank you for the report. We are looking into it "
            "and will come back to you today.\n\nBest regards, the support team",
        )
    if rng.random() < 0.5:
        customer_says(f"Thank you. Any news? We still see it.\n\n{name}")
    if kind == "tier1":
        return ticket_id
    if kind in ("tier2", "tier3"):
        complete(agent1, {"outcome": "escalate", "note": "Needs Tier 2: reproduced, looks like a bug."})
        if rng.random() < 0.5:
            agent_says(agent2, "We forwarded this to our specialists and will keep you posted.")
        if kind == "tier3":
            complete(agent2, {"outcome": "escalate", "note": "Engineering must look at the logs."})
        return ticket_id
    agent_says(
        agent1,
        "Could you please send us a screenshot of the error?"
        if kind == "waiting"
        else "We fixed the configuration on our side; it should work again now.",
    )
    complete(agent1, {"outcome": "wait_customer" if kind == "waiting" else "resolve", "note": ""})
    if kind == "closed":
        for _ in range(5):
            with desk.unit_of_work(readonly=True) as session:
                row = session.scalars(
                    select(WorkflowInstance).where(WorkflowInstance.ticket_id == ticket_id)
                ).one()
                status, due, instance_id = row.status, row.next_wake_at, row.id
            if status != "running" or due is None:
                break
            with desk.unit_of_work() as session:
                wake_instance(session, settings, instance_id, now=due + timedelta(seconds=1))
    return ticket_id


def copy_templates(
    desk: Desk, templates: list[Template], users: Users, total: int, open_: int
) -> dict[str, int]:
    """Copy the templates in SQL until there are ``total`` tickets, ``open_`` of them with an open task."""
    by_kind: dict[str, list[Template]] = {}
    for tpl in templates:
        by_kind.setdefault(tpl.kind, []).append(tpl)
    wanted = {kind: round(open_ * share) for kind, (_, share) in OPEN_KINDS.items()}
    wanted["tier1"] += open_ - sum(wanted.values())
    rest = total - open_
    wanted.update({kind: round(rest * share) for kind, share in DONE_KINDS.items()})
    wanted["closed"] += total - sum(wanted.values())
    copies = {kind: wanted[kind] - len(by_kind.get(kind, [])) for kind in wanted}
    if min(copies.values()) < 0:
        raise SystemExit(f"more templates than tickets wanted ({copies}); raise --tickets/--open")
    now = datetime.now(UTC).replace(microsecond=0)
    with desk.engine.begin() as conn:
        conn.execute(text("SELECT setseed(0.42)"))
        conn.execute(
            text(
                "CREATE TABLE bench_template (tpl int PRIMARY KEY, kind text NOT NULL, idx int NOT NULL, "
                "created timestamptz NOT NULL, open_task text, email text NOT NULL, "
                "number_json text NOT NULL)"
            )
        )
        for kind, found in by_kind.items():
            for idx, tpl in enumerate(found):
                conn.execute(
                    text(
                        "INSERT INTO bench_template SELECT :tpl, :kind, :idx, :created, "
                        "(SELECT id FROM human_task WHERE ticket_id = :tpl AND state = 'open'), "
                        "(SELECT c.email FROM ticket t JOIN customer c ON c.id = t.requester_id "
                        "WHERE t.id = :tpl), "
                        "'\"ticket_number\":' || (:tpl + :offset)"
                    ),
                    {
                        "tpl": tpl.ticket_id,
                        "kind": kind,
                        "idx": idx,
                        "created": tpl.created_at,
                        "offset": TICKET_NUMBER_OFFSET,
                    },
                )
        # One row per copy: its shape, when it was opened, hence its id (ids follow opening order).
        conn.execute(text("CREATE TEMP TABLE bench_raw (kind text, seq int, created timestamptz)"))
        for kind, count in copies.items():
            span, power, low = (
                (OPEN_SPAN, 2.0, timedelta(0))
                if kind in OPEN_KINDS
                else (DONE_SPAN, 1.0, timedelta(days=8))
                if kind == "closed"
                else (timedelta(days=7), 1.0, timedelta(0))
            )
            conn.execute(
                text(
                    "INSERT INTO bench_raw SELECT :kind, g, date_trunc('second', CAST(:now AS timestamptz) "
                    "- CAST(:low AS interval) - CAST(:span AS interval) * power(random(), :power)) "
                    "FROM generate_series(1, :n) g"
                ),
                {"kind": kind, "n": count, "now": now, "low": low, "span": span - low, "power": power},
            )
        tbase = int(conn.scalar(text("SELECT max(id) FROM ticket")) or 0)
        ibase = int(conn.scalar(text("SELECT max(id) FROM workflow_instance")) or 0)
        cbase = int(conn.scalar(text("SELECT max(id) FROM customer")) or 0)
        customers = max(1, int(total * CUSTOMER_SHARE))
        conn.execute(
            text(
                "INSERT INTO customer (id, email, name, created_at) SELECT :cbase + g, "
                "'customer' || g || '@customers.example', "
                "(CAST(:first AS text[]))[1 + g % :nf] || ' ' || "
                "(CAST(:last AS text[]))[1 + (g / :nf) % :nl], "
                "CAST(:now AS timestamptz) - interval '400 days' FROM generate_series(1, :n) g"
            ),
            {
                "cbase": cbase,
                "n": customers,
                "first": FIRST,
                "last": LAST,
                "nf": len(FIRST),
                "nl": len(LAST),
                "now": now,
            },
        )
        conn.execute(
            text(
                "CREATE TABLE bench_copy (k int PRIMARY KEY, kind text NOT NULL, tpl int NOT NULL, "
                "ticket_id int NOT NULL, instance_id int NOT NULL, customer_id int NOT NULL, "
                "email text NOT NULL, shift interval NOT NULL, held float NOT NULL)"
            )
        )
        conn.execute(
            text(
                """
                INSERT INTO bench_copy
                SELECT r.k, r.kind, t.tpl, :tbase + r.k, :ibase + r.k, c.id, c.email, r.created - t.created,
                       random()
                FROM (SELECT row_number() OVER (ORDER BY created, kind, seq)::int AS k, kind, seq, created,
                             (SELECT count(*) FROM bench_template x WHERE x.kind = b.kind) AS n
                      FROM bench_raw b) r
                JOIN bench_template t ON t.kind = r.kind AND t.idx = r.seq % r.n
                JOIN customer c ON c.id = :cbase + 1 + ((r.k::bigint * 7919) % :customers)
                """
            ),
            {"tbase": tbase, "ibase": ibase, "cbase": cbase, "customers": customers},
        )
        params: dict[str, Any] = {}
        shift = "c.shift"
        source = "bench_copy c JOIN bench_template t ON t.tpl = c.tpl JOIN {table} src ON src.{key} = c.tpl"
        copy_rows(
            conn,
            "ticket",
            source=source.format(table="ticket", key="id"),
            overrides={"id": "c.ticket_id", "requester_id": "c.customer_id"},
            params=params,
            shift=shift,
        )
        copy_rows(
            conn,
            "conversation_entry",
            source=source.format(table="conversation_entry", key="ticket_id"),
            overrides={
                "id": None,
                "ticket_id": "c.ticket_id",
                "customer_id": "CASE WHEN src.customer_id IS NULL THEN NULL ELSE c.customer_id END",
            },
            params=params,
            shift=shift,
        )
        new_task = "md5('bench-task-' || c.k || '-' || src.{col})::uuid::text"
        copy_rows(
            conn,
            "audit_event",
            source=source.format(table="audit_event", key="ticket_id"),
            overrides={
                "id": None,
                "ticket_id": "c.ticket_id",
                "actor": "replace(src.actor, t.email, c.email)",
                "task_id": f"CASE WHEN src.task_id IS NULL THEN NULL "
                f"ELSE {new_task.format(col='task_id')} END",
            },
            params=params,
            shift=shift,
        )
        copy_rows(
            conn,
            "sla_clock",
            source=source.format(table="sla_clock", key="ticket_id"),
            overrides={"id": None, "ticket_id": "c.ticket_id"},
            params=params,
            shift=shift,
        )
        open_id = "md5('bench-task-' || c.k || '-' || t.open_task)::uuid::text"
        state = (
            f"replace(replace(src.state, coalesce(t.open_task, ''), coalesce({open_id}, '')), "
            f"t.number_json, '\"ticket_number\":' || (c.ticket_id + {TICKET_NUMBER_OFFSET}))"
        )
        copy_rows(
            conn,
            "workflow_instance",
            source=source.format(table="workflow_instance", key="ticket_id"),
            overrides={
                "id": "c.instance_id",
                "ticket_id": "c.ticket_id",
                "state": state,
                "wake_claimed_until": "NULL",
            },
            params=params,
            shift=shift,
        )
        held = " ".join(
            f"WHEN {users.group_ids[slug]} THEN (ARRAY{ids})[1 + (c.k % {len(ids)})]"
            for slug, ids in users.members.items()
            if ids
        )
        assignee = (
            f"CASE WHEN src.state <> 'open' THEN src.assignee_id "
            f"WHEN c.held < (CASE WHEN src.element_id = 'triage' THEN {HELD_TRIAGE} ELSE {HELD_WORK} END) "
            f"THEN (CASE src.group_id {held} END) END"
        )
        copy_rows(
            conn,
            "human_task",
            source=source.format(table="human_task", key="ticket_id"),
            overrides={
                "id": new_task.format(col="id"),
                "instance_id": "c.instance_id",
                "ticket_id": "c.ticket_id",
                "assignee_id": assignee,
                "claimed_at": f"CASE WHEN ({assignee}) IS NULL THEN NULL "
                "ELSE src.created_at + c.shift + interval '20 minutes' END",
            },
            params=params,
            shift=shift,
        )
        copy_rows(
            conn,
            "outbox_message",
            source=source.format(table="outbox_message", key="ticket_id"),
            overrides={
                "id": None,
                "ticket_id": "c.ticket_id",
                "message_id": "md5('bench-mail-' || c.k || '-' || src.id) || '@bench.example'",
                "recipient": "replace(src.recipient, t.email, c.email)",
                "state": "CASE WHEN src.state IN ('queued', 'sending') THEN 'sent' ELSE src.state END",
                "lease_until": "NULL",
                "next_attempt_at": "NULL",
                "sent_at": "coalesce(src.sent_at, src.created_at) + c.shift",
            },
            params=params,
            shift=shift,
        )
        copy_rows(
            conn,
            "pending_message",
            source="bench_copy c JOIN workflow_instance w ON w.ticket_id = c.tpl "
            "JOIN pending_message src ON src.instance_id = w.id",
            overrides={"id": None, "instance_id": "c.instance_id"},
            params=params,
            shift=shift,
        )
        # Template outbox rows too: nothing delivers mail during this bench.
        conn.execute(
            text(
                "UPDATE outbox_message SET state = 'sent', sent_at = created_at, lease_until = NULL, "
                "next_attempt_at = NULL WHERE state IN ('queued', 'sending')"
            )
        )
        for table in (
            "ticket",
            "workflow_instance",
            "customer",
            "conversation_entry",
            "audit_event",
            "sla_clock",
            "outbox_message",
            "pending_message",
        ):
            conn.execute(
                text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
            )
        # An open task carries its ticket's SLA due time (the inbox sorts by it without a join).
        conn.execute(
            text(
                "UPDATE human_task h SET sla_due_at = t.sla_due_at FROM ticket t "
                "WHERE t.id = h.ticket_id AND h.state = 'open'"
            )
        )
    with desk.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    return wanted


def check_data(desk: Desk, users: Users, tickets: int, open_: int) -> dict[str, Any]:
    """What the database holds; raises when it is not what was asked for (or inconsistent)."""
    with desk.engine.connect() as conn:

        def one(sql: str, **params: Any) -> Any:
            return conn.execute(text(sql), params).one()

        facts: dict[str, Any] = {
            "tickets": one("SELECT count(*) FROM ticket")[0],
            "open": one("SELECT count(*) FROM human_task WHERE state = 'open'")[0],
            "tasks": one("SELECT count(*) FROM human_task")[0],
            "customers": one("SELECT count(*) FROM customer")[0],
            "entries": one("SELECT count(*) FROM conversation_entry")[0],
            "audit": one("SELECT count(*) FROM audit_event")[0],
            "clocks": one("SELECT count(*) FROM sla_clock")[0],
            "size": one("SELECT pg_size_pretty(pg_database_size(current_database()))")[0],
            # ticket.sla_due_at must be the earliest due time of its running or breached clocks.
            "sla_mismatch": one(
                "SELECT count(*) FROM ticket t WHERE t.sla_due_at IS DISTINCT FROM (SELECT min(s.due_at) "
                "FROM sla_clock s WHERE s.ticket_id = t.id AND s.state IN ('running', 'breached'))"
            )[0],
            "by_group": {
                slug: (n, held)
                for slug, n, held in conn.execute(
                    text(
                        "SELECT g.slug, count(*), count(h.assignee_id) FROM human_task h "
                        "JOIN agent_group g ON g.id = h.group_id WHERE h.state = 'open' "
                        "GROUP BY g.slug ORDER BY g.slug"
                    )
                )
            },
            "sla": one(
                "SELECT count(*) FILTER (WHERE t.sla_due_at < now()), "
                "count(*) FILTER (WHERE t.sla_due_at >= now() "
                "AND t.sla_due_at < now() + interval '8 hours'), "
                "count(*) FILTER (WHERE t.sla_due_at >= now() + interval '8 hours'), "
                "count(*) FILTER (WHERE t.sla_due_at IS NULL) "
                "FROM human_task h JOIN ticket t ON t.id = h.ticket_id WHERE h.state = 'open'"
            ),
            "per_ticket": one(
                "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY n) FROM "
                "(SELECT count(*) AS n FROM conversation_entry GROUP BY ticket_id) x"
            )[0],
        }
        agent_id = one("SELECT id FROM user_account WHERE email = :e", e=users.agent)[0]
        facts["agent_sees"] = one(
            "SELECT count(*) FROM human_task h WHERE h.state = 'open' "
            "AND (h.assignee_id = :me OR h.group_id IN "
            "(SELECT group_id FROM membership WHERE user_id = :me))",
            me=agent_id,
        )[0]
        facts["agent_holds"] = one(
            "SELECT count(*) FROM human_task WHERE state = 'open' AND assignee_id = :me", me=agent_id
        )[0]
        # The ticket page: the newest open Tier 1 ticket being worked with the median conversation length.
        facts["ticket_number"] = one(
            "SELECT t.id + :offset FROM ticket t "
            "JOIN human_task h ON h.ticket_id = t.id AND h.state = 'open' "
            "AND h.element_id = 'work_tier_1' WHERE (SELECT count(*) FROM conversation_entry e "
            "WHERE e.ticket_id = t.id) = :n ORDER BY t.id DESC LIMIT 1",
            offset=TICKET_NUMBER_OFFSET,
            n=facts["per_ticket"],
        )[0]
        number = facts["ticket_number"]
        facts["ticket_shape"] = one(
            "SELECT (SELECT count(*) FROM conversation_entry WHERE ticket_id = :t), "
            "(SELECT count(*) FROM audit_event WHERE ticket_id = :t), (SELECT count(*) FROM sla_clock WHERE "
            "ticket_id = :t), (SELECT count(*) FROM human_task WHERE ticket_id = :t), "
            "(SELECT length(state) FROM workflow_instance WHERE ticket_id = :t)",
            t=number - TICKET_NUMBER_OFFSET,
        )
    if facts["tickets"] != tickets or facts["open"] != open_:
        raise RuntimeError(
            f"the database has {facts['tickets']} tickets / {facts['open']} open tasks, "
            f"not {tickets} / {open_}"
        )
    if facts["sla_mismatch"]:
        raise RuntimeError(f"{facts['sla_mismatch']} tickets' sla_due_at disagree with their SLA clocks")
    return facts


def build(url: str, data_dir: Path, args: argparse.Namespace) -> tuple[Desk, Users]:
    """A database with ``args.tickets`` tickets, or the one an earlier run built (``--reuse``)."""
    if args.reuse:
        ensure_database(url)
        desk = build_desk(settings_for(url, data_dir))
        built: tuple[Any, ...] = ()
        with suppress(Exception), desk.engine.connect() as conn:
            built = tuple(conn.execute(text("SELECT tickets, open, templates FROM bench_web_meta")).one())
        if built == (args.tickets, args.open, args.templates):
            migrate.upgrade(desk.engine)  # migrations added since it was built (schema only)
            ensure_page_revision(desk)
            log(f"  reusing the database built earlier ({args.tickets:,} tickets, {args.open:,} open tasks)")
            return desk, load_users(desk)
        log("  nothing to reuse with these sizes: building")
    with stage("fresh schema (migrations), groups, 22 agents + admin, bundled diagram"):
        desk = fresh_schema(url, data_dir)
        users = make_users(desk)
    n_kinds = len(OPEN_KINDS) + len(DONE_KINDS)
    with stage(f"{args.templates * n_kinds} template tickets through the real services"):
        templates = make_templates(desk, args.templates)
    with stage(f"copy them in SQL into {args.tickets:,} tickets, VACUUM ANALYZE"):
        copy_templates(desk, templates, users, args.tickets, args.open)
    with desk.engine.begin() as conn:
        conn.execute(
            text("CREATE TABLE bench_web_meta (tickets int, open int, templates int, built_at timestamptz)")
        )
        conn.execute(
            text("INSERT INTO bench_web_meta VALUES (:t, :o, :p, now())"),
            {"t": args.tickets, "o": args.open, "p": args.templates},
        )
    return desk, users


def ensure_page_revision(desk: Desk) -> None:
    """The ticket page revision's row (workflows.page_revision): a database built before it
    existed has none until its first change, and without it no ticket page is kept."""
    with desk.engine.begin() as conn:
        if conn.scalar(select(InboxRevision.value).where(InboxRevision.id == PAGE_ROW)) is None:
            conn.execute(insert(InboxRevision).values(id=PAGE_ROW, value=1))
            log("  added the ticket page revision's row (the database predates it)")


# -- phase 2: the server ------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    data_dir: Path
    workers: int
    threads: int
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = Path()
    out: IO[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        self.port = free_port()
        self.log_path = self.data_dir / "gunicorn.log"
        self.out = self.log_path.open("ab")
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("LANEDESK_")}
        env = {
            **inherited,
            "LANEDESK_DATABASE_URL": self.url,
            "LANEDESK_DATA_DIR": str(self.data_dir),
            "LANEDESK_SECRET_KEY": SECRET,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        command = [
            sys.executable,
            "-m",
            "web",
            "web",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--threads",
            str(self.threads),
        ]
        self.process = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.tail()}")
            with suppress(OSError):
                status, _, _ = request(self.port, "GET", "/healthz")
                if status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"/healthz did not answer within {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_offset(self) -> int:
        return self.log_path.stat().st_size

    def statuses_since(self, offset: int) -> Counter[str]:
        """Response statuses in gunicorn's access log written after ``offset``."""
        with self.log_path.open("rb") as f:
            f.seek(offset)
            chunk = f.read().decode(errors="replace")
        return Counter(re.findall(r'" (\d{3}) ', chunk))

    def stop(self, grace: float = 25.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self.out:
            self.out.close()


def request(
    port: int, method: str, path: str, *, cookie: str | None = None, body: dict[str, str] | None = None
) -> tuple[int, dict[str, list[str]], str]:
    """One HTTP request (http.client: no User-Agent of its own, so wrk and we send the same one)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"User-Agent": USER_AGENT}
    if cookie:
        headers["Cookie"] = f"lanedesk_session={cookie}"
    data = None
    if body is not None:
        data = urllib.parse.urlencode(body)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        text_ = response.read().decode(errors="replace")
        found: dict[str, list[str]] = {}
        for key, value in response.getheaders():
            found.setdefault(key.lower(), []).append(value)
        return response.status, found, text_
    finally:
        conn.close()


def session_cookie(headers: dict[str, list[str]]) -> str | None:
    for value in headers.get("set-cookie", []):
        match = re.match(r"lanedesk_session=([^;]*)", value)
        if match:
            return match.group(1)
    return None


def log_in(port: int, email: str) -> str:
    """The session cookie of ``email`` after a real login (CSRF token from the login page)."""
    status, headers, html = request(port, "GET", "/login")
    token = re.search(r'name="csrf-token" content="([^"]+)"', html) or re.search(
        r'name="csrf_token"[^>]*value="([^"]+)"', html
    )
    cookie = session_cookie(headers)
    if status != 200 or not token or not cookie:
        raise RuntimeError(f"GET /login answered {status} without a CSRF token or session cookie")
    form = {"email": email, "password": PASSWORD, "csrf_token": token.group(1), "next": ""}
    status, headers, html = request(port, "POST", "/login", cookie=cookie, body=form)
    cookie = session_cookie(headers)
    if status != 302 or not cookie:
        raise RuntimeError(f"logging in as {email} answered {status}:\n{html[:500]}")
    return cookie


# -- phase 3: load --------------------------------------------------------------------------------
LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d %d %d", summary.requests, summary.duration,
                         e.connect, e.read, e.write, e.status, e.timeout))
  for _, p in ipairs({50, 75, 90, 95, 99}) do io.write(string.format(" %d", latency:percentile(p))) end
  io.write(string.format(" %d\\n", latency.max))
  for _, t in ipairs(threads) do
    io.write(string.format("CACHE %d %d %d %d\\n", t:get("hit"), t:get("miss"), t:get("off"), t:get("none")))
  end
end
"""
#: Each response's X-Inbox-Cache or X-Page-Cache (web.inbox, web.tickets: hit, miss, off; none on
#: other pages), per wrk thread;
#: a conditional page revalidates with the ETag of the last 200 it got, as a browser does.
LUA_COUNT = """
threads = {}
setup = function(thread) table.insert(threads, thread) end
hit, miss, off, none = 0, 0, 0, 0
etag = nil
response = function(status, headers, body)
  local seen = headers["X-Inbox-Cache"] or headers["X-Page-Cache"]
  if seen == "hit" then hit = hit + 1 elseif seen == "miss" then miss = miss + 1
  elseif seen == "off" then off = off + 1 else none = none + 1 end
  if status == 200 and headers["ETag"] then etag = headers["ETag"] end
end
"""
#: A query parameter no view reads, new on every request: the kept page never serves it.
LUA_UNIQUE = """
n = 0
start = os.time()  -- not the URLs of an earlier run in the same minute
sep = string.find(wrk.path, "?", 1, true) and "&" or "?"
request = function()
  n = n + 1
  return wrk.format(nil, string.format("%s%sbench_miss=%d-%d", wrk.path, sep, start, n))
end
"""
#: Paced load (``--rates``): each connection waits an exponential think time (mean THINK_MS)
#: before each request, so the connections together offer about connections / mean requests a
#: second, arriving independently (Poisson), whatever the server does. wrk times each request
#: from when it is sent, so waiting in the server's queue counts and thinking does not.
LUA_PACED = """
math.randomseed(os.time())
delay = function()
  return -math.log(1 - math.random()) * THINK_MS
end
"""
LUA_CONDITIONAL = """
request = function()
  if etag then wrk.headers["If-None-Match"] = etag end
  return wrk.format()
end
"""


def lua_for(page: Page, think_ms: float | None = None) -> str:
    extra = LUA_UNIQUE if page.unique else LUA_CONDITIONAL if page.conditional else ""
    paced = LUA_PACED.replace("THINK_MS", f"{think_ms:.3f}") if think_ms is not None else ""
    return LUA_COUNT + extra + paced + LUA


@dataclass
class Page:
    label: str
    path: str
    user: str | None  # who is logged in (None: nobody)
    expect: str  # a string the page must contain
    target_rate: float | None = None
    target_p95: float | None = P95_TARGET_MS
    cookie: str | None = None
    unique: bool = False  # a new URL per request: every one renders (the kept page never serves it)
    conditional: bool = False  # sends If-None-Match with the ETag of its last 200 (expects 304s)

    @property
    def ok_statuses(self) -> tuple[str, ...]:
        return ("2", "304") if self.conditional else ("2",)


@dataclass
class Run:
    rate: float
    p50: float  # ms
    p75: float
    p90: float
    p95: float
    p99: float
    max: float
    socket_errors: int
    bad_status: int  # non-2xx: wrk's count (>= 400) and the access log's (anything but 2xx)
    statuses: Counter[str]
    cpu_ms: dict[str, float]  # CPU per request by process group
    busy: float  # % of both cores
    others: float  # % of one core used by processes not in this bench (the machine is shared)
    cache: Counter[str] = field(default_factory=Counter)  # X-Inbox-Cache of the responses

    def share(self, outcome: str) -> float:
        counted = sum(self.cache[k] for k in ("hit", "miss", "off"))
        return self.cache[outcome] / counted if counted else 0.0


def run_wrk(
    server: Server, page: Page, duration: int, connections: int, script: Path, pg_pids: set[int]
) -> Run:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(script),
        "-H",
        f"User-Agent: {USER_AGENT}",
    ]
    if page.cookie:
        command += ["-H", f"Cookie: lanedesk_session={page.cookie}"]
    command.append(f"http://127.0.0.1:{server.port}{page.path}")
    offset = server.log_offset()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is gone from /proc once reaped
    before = cpu_sample()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    out, _ = process.communicate(timeout=duration + 60)
    after = cpu_sample()
    output = out.decode(errors="replace")
    line = next((x for x in output.splitlines() if x.startswith("BENCH ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{output}")
    v = [int(x) for x in line.split()[1:]]
    requests_, micros, connect, read, write, status, timeout, p50, p75, p90, p95, p99, top = v
    cache: Counter[str] = Counter()
    for counted in (x.split()[1:] for x in output.splitlines() if x.startswith("CACHE ")):
        cache.update(dict(zip(("hit", "miss", "off", "none"), map(int, counted), strict=True)))
    time.sleep(0.3)  # the access log is written after the response
    statuses = server.statuses_since(offset)
    assert server.process is not None
    window = cpu_window(before, after, {server.process.pid: "gunicorn", process.pid: "wrk"}, pg_pids)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = dict(window.seconds)
    seconds["wrk"] = reaped.ru_utime + reaped.ru_stime - children.ru_utime - children.ru_stime
    seconds[ELSE] = max(0.0, seconds.get(ELSE, 0.0) - seconds["wrk"])  # /proc did not see it
    per = {k: 1000 * s / max(1, requests_) for k, s in seconds.items()}
    bad = max(status, sum(n for code, n in statuses.items() if not code.startswith(page.ok_statuses)))
    return Run(
        requests_ / (micros / 1e6),
        p50 / 1000,
        p75 / 1000,
        p90 / 1000,
        p95 / 1000,
        p99 / 1000,
        top / 1000,
        connect + read + write + timeout,
        bad,
        statuses,
        per,
        window.busy,
        100 * (seconds[ELSE] + seconds.get(PG_OTHER, 0.0)) / max(window.wall, 1e-9),
        cache,
    )


def pg_backends(url: str) -> set[int]:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                int(pid)
                for pid in conn.scalars(
                    text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid()"
                    )
                )
            }
    finally:
        engine.dispose()


# -- phase 4: where the time goes (in-process) -----------------------------------------------------
#: Cumulative shares (callees included, so rows overlap) of one request's CPU time.
PARTS = [
    ("Flask-Login: load the user and its groups", "web/auth.py", "_load"),
    ("workflows.inbox.inbox_lines (its queries, rows, urgency)", "workflows/inbox.py", "inbox_lines"),
    ("  _clock_rows: the page's SLA clocks", "workflows/inbox.py", "_clock_rows"),
    ("  urgency: business time used, per row", "workflows/inbox.py", "urgency"),
    ("workflows.tickets.get_ticket", "workflows/tickets.py", "get_ticket"),
    ("workflows.ticket_page.ticket_page (its queries, rows)", "workflows/ticket_page.py", "ticket_page"),
    ("flask.render_template (Jinja)", "flask/templating.py", "render_template"),
    ("  flask.url_for", "flask/helpers.py", "url_for"),
    ("SQLAlchemy ORM: objects from rows", "sqlalchemy/orm/loading.py", "instances"),
    ("SQLAlchemy: compile statements", "sqlalchemy/sql/compiler.py", "__init__"),
    ("psycopg: cursor.execute (send, wait, receive)", "psycopg/cursor.py", "execute"),
    ("pool checkout (incl. pre-ping)", "sqlalchemy/pool/base.py", "_checkout"),
    ("web.db after_request: COMMIT + close", "web/db.py", "_commit"),
]


@dataclass
class InProcess:
    label: str
    wall_ms: list[float]
    cpu_ms: float  # CPU of this process per request
    statements: float
    sql_ms: float  # wall time inside cursor.execute per request
    statement_log: list[tuple[str, float]] = field(default_factory=list)  # one request: (SQL, ms)
    layers: list[tuple[str, float]] = field(default_factory=list)
    parts: list[tuple[str, float]] = field(default_factory=list)
    top: list[tuple[str, float, float]] = field(default_factory=list)
    explains: list[tuple[str, float, float, list[str]]] = field(default_factory=list)


@contextmanager
def sql_spy(desk: Desk) -> Iterator[list[tuple[str, Any, float]]]:
    """Every statement sent while inside: (SQL, parameters, seconds inside cursor.execute)."""
    found: list[tuple[str, Any, float]] = []
    started: list[float] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        started.append(time.perf_counter())

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        found.append((statement, parameters, time.perf_counter() - started.pop()))

    event.listen(desk.engine, "before_cursor_execute", before)
    event.listen(desk.engine, "after_cursor_execute", after)
    try:
        yield found
    finally:
        event.remove(desk.engine, "before_cursor_execute", before)
        event.remove(desk.engine, "after_cursor_execute", after)


def test_client_for(desk: Desk, email: str) -> Any:
    app = create_app(desk=desk)
    client = app.test_client()
    html = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', html) or re.search(
        r'name="csrf_token"[^>]*value="([^"]+)"', html
    )
    assert token, "no CSRF token on the login page"
    answer = client.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": token.group(1)})
    if answer.status_code != 302:
        raise RuntimeError(f"in-process login as {email} answered {answer.status_code}")
    return client


def in_process(desk: Desk, page: Page, timed: int, profiled: int, *, keep: bool = False) -> InProcess:
    """``page`` requested in-process; inbox and ticket pages rendered every time unless ``keep``."""
    assert page.user
    client = test_client_for(desk, page.user)
    if not keep:
        client.application.extensions[inbox_pages.PAGES] = PageCache(size=0)
        client.application.extensions[ticket_pages.PAGES] = PageCache(size=0)

    def get() -> None:
        answer = client.get(page.path)
        if answer.status_code != 200:
            raise RuntimeError(f"in-process GET {page.path} answered {answer.status_code}")

    for _ in range(3):
        get()
    with sql_spy(desk) as first:
        get()
    statement_log = [(" ".join(s.split()), 1000 * t) for s, _, t in first]
    walls = []
    cpu0 = time.process_time()
    with sql_spy(desk) as statements:
        for _ in range(timed):
            started = time.perf_counter()
            get()
            walls.append(1000 * (time.perf_counter() - started))
    cpu = 1000 * (time.process_time() - cpu0) / timed
    profiler = cProfile.Profile(time.process_time)
    for _ in range(profiled):
        profiler.enable()
        get()
        profiler.disable()
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    whole = sum(v[2] for v in stats.values())
    parts = []
    for label, file_end, func in PARTS:
        matches = [v[3] for (file, _, name), v in stats.items() if name == func and file.endswith(file_end)]
        if matches:
            parts.append((label, 100 * max(matches) / whole))
    layers = sorted(((k, 100 * v / whole) for k, v in layers_of(stats).items()), key=lambda kv: -kv[1])
    by_own = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:12]
    top = [
        (f"{Path(file).parent.name}/{Path(file).name}:{line} {func}", 100 * v[2] / whole, 100 * v[3] / whole)
        for (file, line, func), v in by_own
    ]
    return InProcess(
        page.label,
        walls,
        cpu,
        len(statements) / timed,
        1000 * sum(t for *_, t in statements) / timed,
        statement_log,
        layers,
        parts,
        top,
        explain_request(desk, first),
    )


def explain_request(
    desk: Desk, statements: list[tuple[str, Any, float]]
) -> list[tuple[str, float, float, list[str]]]:
    """EXPLAIN (ANALYZE, BUFFERS) of each SELECT a request sent: (SQL, planning ms, execution ms, plan)."""
    out = []
    raw = desk.engine.raw_connection()
    try:
        cursor = raw.cursor()
        for statement, parameters, _ in statements:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            runs = []
            for _ in range(5):  # the median of 5 (the first may read from disk)
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters)
                found = cursor.fetchone()
                assert found is not None
                plan = found[0][0]
                runs.append((plan["Execution Time"], plan["Planning Time"]))
            execution = statistics.median(r[0] for r in runs)
            planning = statistics.median(r[1] for r in runs)
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, parameters)
            lines = [row[0] for row in cursor.fetchall()]
            out.append((" ".join(statement.split()), planning, execution, lines))
        raw.rollback()
    finally:
        raw.close()
    return out


# -- phase 3b: reads while tasks and tickets change ----------------------------------------------
@dataclass
class Writer:
    """Changes Tier 1's open tasks and tickets at ``rate`` per second through the real services.

    Two in three changes claim an open task for a Tier 1 agent or give a held one back, one in
    three moves a ticket's priority between P2 and P3 (its SLA clocks and the inbox's due
    times follow). Each change bumps the inbox revision, so every kept page goes stale.
    """

    desk: Desk
    users: Users
    rate: float
    done: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        rng = random.Random(11)
        agents = self.users.members["tier-1"]
        with self.desk.unit_of_work(readonly=True) as session:
            query = select(HumanTask.id, HumanTask.ticket_id).where(
                HumanTask.state == "open", HumanTask.group_id == self.users.group_ids["tier-1"]
            )
            tasks = [(task_id, ticket_id) for task_id, ticket_id in session.execute(query)]
        due = time.monotonic()
        while not self.stop.is_set():
            due += 1 / self.rate
            self.stop.wait(max(0.0, due - time.monotonic()))
            task_id, ticket_id = rng.choice(tasks)
            try:
                self.done[self.change(task_id, ticket_id, rng.choice(agents), rng.random())] += 1
            except Exception as exc:  # a conflict with nobody: count it, go on
                self.done[f"failed: {type(exc).__name__}"] += 1

    def change(self, task_id: str, ticket_id: int, agent_id: int, dice: float) -> str:
        now = self.desk.clock()
        with self.desk.unit_of_work() as session:
            task = session.get(HumanTask, task_id)
            agent = session.get(User, agent_id)
            assert task is not None and agent is not None
            if dice < 1 / 3:
                ticket = task.ticket
                admin = session.scalars(select(User).where(User.email == self.users.admin)).one()
                priority = "P2" if ticket.priority != "P2" else "P3"
                change_priority(session, self.desk.settings, ticket, priority, user=admin, now=now)
                return "priority changed"
            if task.assignee_id is None:
                claim_task(session, task_id=task_id, user=agent, now=now)
                return "claimed"
            holder = session.get(User, task.assignee_id)
            assert holder is not None
            release_task(session, self.desk.settings, task_id=task_id, user=holder, to=None, now=now)
            return "given back"


def mixed_runs(
    server: Server, desk: Desk, users: Users, page: Page, args: argparse.Namespace, data_dir: Path
) -> list[Run]:
    """``page`` under wrk while a :class:`Writer` changes what it shows ``args.mixed_rate`` times a second."""
    script = data_dir / "mixed.lua"
    script.write_text(lua_for(page))
    writer = Writer(desk, users, args.mixed_rate)
    thread = threading.Thread(target=writer.run, name="bench-writer", daemon=True)
    log(f"mixed: {page.label} while {args.mixed_rate:g} changes/s go through the services")
    thread.start()
    try:
        pg_pids = pg_backends(server.url)
        runs = [
            run_wrk(server, page, args.duration, args.connections, script, pg_pids) for _ in range(args.runs)
        ]
    finally:
        writer.stop.set()
        thread.join(30)
    for r in runs:
        log(
            f"  {r.rate:,.0f}/s p95 {r.p95:.1f} ms, kept {100 * r.share('hit'):.0f} % "
            f"(hit {r.cache['hit']:,}, miss {r.cache['miss']:,})"
        )
    log(f"  writer: {dict(writer.done)}")
    return runs


# -- phase 3c: a fixed offered rate ----------------------------------------------------------------
#: A paced run uses enough connections that each thinks PACED_MIN_THINK_MS or more on average
#: between requests: a connection is then seldom still waiting for its last answer when its next
#: request is due (which would lower the offered rate: wrk is closed-loop per connection).
PACED_MIN_CONNECTIONS = 16
PACED_MIN_THINK_MS = 100.0
#: Offered rates above this share of what the page served closed-loop at c16 are not tried.
PACED_MAX_LOAD = 0.8


def paced_runs(
    server: Server,
    pages: list[Page],
    results: dict[str, list[Run]],
    alone: dict[str, Run],
    args: argparse.Namespace,
    data_dir: Path,
) -> dict[str, dict[float, Run | None]]:
    """Each page at each of ``args.rates`` requests/s offered (None: above what it can serve)."""
    log(
        f"paced: {', '.join(f'{r:g}' for r in args.rates)} requests/s offered, "
        f"one run of {args.duration} s each"
    )
    pg_pids = pg_backends(server.url)
    found: dict[str, dict[float, Run | None]] = {}
    for number, page in enumerate(pages):
        if page.target_p95 is None:
            continue
        capacity = statistics.median(r.rate for r in results[page.label])
        found[page.label] = {}
        for rate in args.rates:
            if rate > PACED_MAX_LOAD * capacity:
                found[page.label][rate] = None
                continue
            connections = max(PACED_MIN_CONNECTIONS, math.ceil(rate * PACED_MIN_THINK_MS / 1000))
            # Think time so that think + the unqueued time of a request = connections / rate.
            think_ms = max(1.0, 1000 * connections / rate - alone[page.label].p50)
            script = data_dir / f"page{number}-paced-{rate:g}.lua"
            script.write_text(lua_for(page, think_ms))
            run = run_wrk(server, page, args.duration, connections, script, pg_pids)
            found[page.label][rate] = run
            log(
                f"  {page.label:<52} offered {rate:g}/s: got {run.rate:,.0f}/s, p50 {run.p50:.1f} ms, "
                f"p95 {run.p95:.1f} ms ({connections} connections, mean think {think_ms:.0f} ms)"
            )
    return found


# -- report -------------------------------------------------------------------------------------
def fmt_ratio(value: float, target: float, *, at_most: bool) -> str:
    met = value <= target if at_most else value >= target
    return f"{value / target:.2f}x {'met' if met else 'MISSED'}"


def print_table(
    pages: list[Page], results: dict[str, list[Run]], alone: dict[str, Run], args: argparse.Namespace
) -> None:
    log(
        f"\nResults: wrk -t1 -c{args.connections} -d{args.duration}s, {args.runs} runs per page "
        "(median of runs); "
        f"gunicorn {args.workers} workers x {args.threads} threads; {os.cpu_count()} cores shared by wrk, "
        "gunicorn and PostgreSQL"
    )
    head = (
        f"  {'page':<52} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'non-2xx':>8} "
        f"{'p95 vs 50 ms':>14} {'req/s vs 500':>14} {'vs hello':>9}"
    )
    log(head)
    log("  " + "-" * (len(head) - 2))
    for page in pages:
        runs = results[page.label]
        rate = statistics.median(r.rate for r in runs)
        p50 = statistics.median(r.p50 for r in runs)
        p95 = statistics.median(r.p95 for r in runs)
        p99 = statistics.median(r.p99 for r in runs)
        bad = sum(r.bad_status for r in runs)
        p95_ratio = fmt_ratio(p95, page.target_p95, at_most=True) if page.target_p95 else "—"
        rate_ratio = fmt_ratio(rate, page.target_rate, at_most=False) if page.target_rate else "—"
        log(
            f"  {page.label:<52} {rate:>7,.0f} {p50:>7.1f} {p95:>7.1f} {p99:>7.1f} {bad:>8} {p95_ratio:>14} "
            f"{rate_ratio:>14} {rate / HELLO_WORLD_RATE:>8.3f}x"
        )
    log(f"\n  one connection (no queueing: the time a request takes), one run of {args.duration} s:")
    for page in pages:
        single = alone[page.label]
        p95_ratio = fmt_ratio(single.p95, page.target_p95, at_most=True) if page.target_p95 else "—"
        log(
            f"  {page.label:<52} {single.rate:>7,.0f} {single.p50:>7.1f} {single.p95:>7.1f} "
            f"{single.p99:>7.1f} "
            f"{single.bad_status:>8} {p95_ratio:>14}"
        )
    log(
        "\n  runs (req/s | p95 ms) and CPU per request (median of runs; both cores: 2 x 1,000 ms per second):"
    )
    for page in pages:
        runs = results[page.label]
        rates = " ".join(f"{r.rate:,.0f}" for r in runs)
        p95s = " ".join(f"{r.p95:.1f}" for r in runs)
        groups = ("gunicorn", PG_OURS, "wrk")
        cpu = {g: statistics.median(r.cpu_ms.get(g, 0.0) for r in runs) for g in groups}
        busy = statistics.median(r.busy for r in runs)
        others = statistics.median(r.others for r in runs)
        errors = sum(r.socket_errors for r in runs)
        ceiling = 1000 * (os.cpu_count() or 1) / max(0.001, sum(cpu.values()))
        log(f"  {page.label:<52} req/s {rates} | p95 {p95s}")
        log(
            f"  {'':<52} CPU ms/request: gunicorn {cpu['gunicorn']:.2f}, PostgreSQL {cpu[PG_OURS]:.2f}, "
            f"wrk {cpu['wrk']:.2f} -> at most {ceiling:,.0f} req/s on {os.cpu_count()} idle cores"
        )
        log(
            f"  {'':<52} machine {busy:.0f} % busy, other processes used {others:.0f} % of one core; "
            f"socket errors {errors}"
        )
        cache = sum((r.cache for r in runs), Counter())
        if cache["hit"] + cache["miss"] + cache["off"]:
            statuses = sum((r.statuses for r in runs), Counter())
            log(
                f"  {'':<52} kept pages (X-Inbox-Cache, X-Page-Cache): hit {cache['hit']:,}, "
                f"miss {cache['miss']:,}, "
                f"off {cache['off']:,}; status 304: {statuses['304']:,} of {sum(statuses.values()):,}"
            )


def print_paced(
    pages: list[Page],
    paced: dict[str, dict[float, Run | None]],
    results: dict[str, list[Run]],
    args: argparse.Namespace,
) -> None:
    log(
        "\n  p95 at a fixed offered rate (open-loop approximation: "
        f">= {PACED_MIN_CONNECTIONS} wrk connections, each waiting an exponential think time between "
        f"requests, so arrivals do not wait for answers; one run of {args.duration} s per rate; rates above "
        f"{PACED_MAX_LOAD:.0%} of the page's c{args.connections} throughput not tried):"
    )
    head = (
        f"  {'page':<52} {'offered':>8} {'got/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
        f"{'p95 vs 50 ms':>14}"
    )
    log(head)
    log("  " + "-" * (len(head) - 2))
    for page in pages:
        for rate, run in paced.get(page.label, {}).items():
            if run is None:
                capacity = statistics.median(r.rate for r in results[page.label])
                log(f"  {page.label:<52} {rate:>8g} {'—':>7}  not tried: it served {capacity:,.0f}/s at c16")
                continue
            ratio = fmt_ratio(run.p95, P95_TARGET_MS, at_most=True)
            log(
                f"  {page.label:<52} {rate:>8g} {run.rate:>7,.0f} {run.p50:>7.1f} {run.p95:>7.1f} "
                f"{run.p99:>7.1f} {ratio:>14}"
            )


def print_ticket_summary(
    pages: list[Page],
    results: dict[str, list[Run]],
    alone: dict[str, Run],
    paced: dict[str, dict[float, Run | None]],
) -> None:
    """The ticket page's p95 against 50 ms, every way it was measured, on one line each."""
    for page in pages:
        if not page.path.startswith("/tickets/"):
            continue
        c16 = statistics.median(r.p95 for r in results[page.label])
        parts = [
            f"c16 closed-loop {c16:.1f} ms ({fmt_ratio(c16, P95_TARGET_MS, at_most=True)})",
            f"1 connection {alone[page.label].p95:.1f} ms "
            f"({fmt_ratio(alone[page.label].p95, P95_TARGET_MS, at_most=True)})",
        ]
        for rate, run in paced.get(page.label, {}).items():
            if run is not None:
                parts.append(
                    f"{rate:g}/s offered {run.p95:.1f} ms ({fmt_ratio(run.p95, P95_TARGET_MS, at_most=True)})"
                )
        log(f"\n  TICKET PAGE p95 vs 50 ms, {page.label}: " + "; ".join(parts))


def print_mixed(label: str, runs: list[Run], args: argparse.Namespace) -> None:
    rate = statistics.median(r.rate for r in runs)
    p95 = statistics.median(r.p95 for r in runs)
    kept = statistics.median(r.share("hit") for r in runs)
    gunicorn = statistics.median(r.cpu_ms.get("gunicorn", 0.0) for r in runs)
    others = statistics.median(r.others for r in runs)
    versus = f" ({fmt_ratio(rate, INBOX_RATE_TARGET, at_most=False)} vs 500)" if "/inbox" in label else ""
    log(
        f"\n  mixed, {label} ({args.mixed_rate:g} changes/s meanwhile, c{args.connections}), median of "
        f"{len(runs)} runs: {rate:,.0f} req/s{versus}, p95 {p95:.1f} ms "
        f"({fmt_ratio(p95, P95_TARGET_MS, at_most=True)} vs 50 ms), kept pages {100 * kept:.0f} %, "
        f"gunicorn CPU {gunicorn:.2f} ms/request; other processes used {others:.0f} % of one core"
    )


def print_in_process(result: InProcess) -> None:
    walls = result.wall_ms
    log(f"\n  {result.label}: {len(walls)} requests in-process (Flask test client, no HTTP, one thread)")
    log(
        f"    wall median {statistics.median(walls):.2f} ms (p95 {pct(walls, 95):.2f}); CPU of this process "
        f"{result.cpu_ms:.2f} ms; {result.statements:.1f} SQL statements, {result.sql_ms:.2f} ms inside "
        "cursor.execute (driver + round trip + server)"
    )
    log("    statements of one request (ms inside cursor.execute):")
    for sql, ms in result.statement_log:
        log(f"      {ms:7.2f}  {sql[:150]}{'...' if len(sql) > 150 else ''}")
    if result.explains:
        log("    EXPLAIN ANALYZE of its SELECTs (median of 5: planning + execution ms on the server):")
        for sql, planning, execution, _ in result.explains:
            log(f"      {planning:6.2f} + {execution:7.2f}  {sql[:120]}{'...' if len(sql) > 120 else ''}")
        heavy = sorted(result.explains, key=lambda e: -e[2])[:2]
        for sql, _, execution, lines in heavy:
            if execution < 1.0:
                continue
            log(f"    plan of the {execution:.1f} ms one ({sql[:70]}...):")
            for line in lines:
                log(f"      | {line}")
    log("    CPU profile (cProfile on CPU time), own time by layer:")
    for name, share in result.layers[:8]:
        log(f"      {share:5.1f} %  {name}")
    log("    cumulative share of a request (callees included: rows overlap):")
    for label, share in result.parts:
        log(f"      {share:5.1f} %  {label}")
    log("    top functions by own time (own % / cumulative %):")
    for name, own, cum in result.top[:10]:
        log(f"      {own:5.1f} / {cum:5.1f}  {name}")


# -- main ------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--postgres", default=DEFAULT_PG, help="its own database (schema dropped and rebuilt)"
    )
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--open", type=int, default=10_000, help="tickets with an open task")
    parser.add_argument("--templates", type=int, default=40, help="template tickets per shape (7 shapes)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument(
        "--threads", type=int, default=4, help="threads per worker (the `lanedesk web` default)"
    )
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=5, help="wrk runs per page")
    parser.add_argument(
        "--reuse", action="store_true", help="keep the data an earlier run built (same sizes)"
    )
    parser.add_argument("--skip-profile", action="store_true", help="no in-process analysis")
    parser.add_argument(
        "--mixed-rate",
        type=float,
        default=5.0,
        help="changes/s a background writer makes through the services during the mixed run (0: none)",
    )
    parser.add_argument(
        "--only", nargs="*", default=None, help="only the pages whose label contains one of these words"
    )
    parser.add_argument(
        "--rates",
        nargs="*",
        type=float,
        default=[100.0, 250.0, 500.0],
        help="requests/s offered in the paced (open-loop) runs; none: skip them",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 10,000 tickets, 1,000 open, 2 x 5 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.tickets, args.open, args.templates, args.duration, args.runs = 10_000, 1_000, 6, 5, 2
    if args.open < 100 or args.tickets < 2 * args.open:
        parser.error("need --open >= 100 and --tickets >= 2 x --open")
    if min(args.workers, args.threads, args.connections, args.duration, args.runs, args.templates) < 1:
        parser.error("--workers, --threads, --connections, --duration, --runs, --templates: at least 1")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    if shutil.which("wrk") is None:
        log("bench.web needs wrk (apt-get install wrk)")
        return 1
    data_dir = Path(tempfile.mkdtemp(prefix="lanedesk-bench-web-"))
    url = args.postgres
    server = Server(url, data_dir, args.workers, args.threads)
    ok = True
    try:
        log(
            f"bench.web: {make_url(url).render_as_string(hide_password=True)}, {os.cpu_count()} cores, "
            f"logs in {data_dir}"
        )
        log("data")
        started = time.perf_counter()
        desk, users = build(url, data_dir, args)
        facts = check_data(desk, users, args.tickets, args.open)
        breached, soon, later, none = facts["sla"]
        log(
            f"  {facts['tickets']:,} tickets ({facts['customers']:,} customers), "
            f"{facts['tasks']:,} human tasks of "
            f"which {facts['open']:,} open: "
            + ", ".join(f"{g} {n:,} ({h:,} held)" for g, (n, h) in facts["by_group"].items())
        )
        log(
            f"  open tasks' tickets by SLA: {breached:,} breached, {soon:,} due within 8 h, {later:,} later, "
            f"{none:,} without a running clock; sla_due_at agrees with the clocks on every ticket"
        )
        log(
            f"  {facts['entries']:,} conversation entries (median {facts['per_ticket']} per ticket), "
            f"{facts['audit']:,} audit events, {facts['clocks']:,} SLA clocks; database {facts['size']} "
            f"({time.perf_counter() - started:.0f} s)"
        )
        entries, audits, clocks, tasks, state = facts["ticket_shape"]
        number = facts["ticket_number"]
        ref = f"{desk.settings.ticket_prefix}-{number}"
        log(
            f"  ticket page: {ref} ({entries} conversation entries, {audits} audit events, "
            f"{clocks} SLA clocks, "
            f"{tasks} tasks, state {state:,} B); a Tier 1 agent sees {facts['agent_sees']:,} open tasks"
        )
        pages = [
            Page("/healthz (no session, no database)", "/healthz", None, '"status"', target_p95=None),
            Page(
                f"/inbox?view=all, Tier 1 agent ({facts['agent_sees']:,} tasks)",
                "/inbox?view=all",
                users.agent,
                f"{facts['agent_sees']} in all",
                target_rate=INBOX_RATE_TARGET,
            ),
            Page(
                f"/inbox (default = mine), Tier 1 ({facts['agent_holds']:,} tasks)",
                "/inbox",
                users.agent,
                f"{facts['agent_holds']} in all",
                target_rate=INBOX_RATE_TARGET,
            ),
            Page(
                f"/inbox?view=all, admin ({facts['open']:,} tasks)",
                "/inbox?view=all",
                users.admin,
                f"{facts['open']} in all",
                target_rate=INBOX_RATE_TARGET,
            ),
            Page(
                "/inbox?view=all, Tier 1, every request rendered",
                "/inbox?view=all",
                users.agent,
                f"{facts['agent_sees']} in all",
                target_rate=INBOX_RATE_TARGET,
                unique=True,
            ),
            Page(
                "/inbox?view=all, admin, every request rendered",
                "/inbox?view=all",
                users.admin,
                f"{facts['open']} in all",
                target_rate=INBOX_RATE_TARGET,
                unique=True,
            ),
            Page(
                "/inbox/rows?view=all poll, If-None-Match",
                "/inbox/rows?view=all",
                users.agent,
                "",
                target_rate=INBOX_RATE_TARGET,
                conditional=True,
            ),
            Page(f"/tickets/{ref}, Tier 1 agent", f"/tickets/{ref}", users.agent, ref),
            Page(
                f"/tickets/{ref}, Tier 1, every request rendered",
                f"/tickets/{ref}",
                users.agent,
                ref,
                unique=True,
            ),
        ]
        if args.only:
            pages = [page for page in pages if any(word in page.label for word in args.only)]
        log(f"serve: python -m web web --workers {args.workers} --threads {args.threads}")
        with stage("start gunicorn, wait for /healthz"):
            server.start()
        for page in pages:
            if page.user:
                page.cookie = log_in(server.port, page.user)
            status, headers, html = request(server.port, "GET", page.path, cookie=page.cookie)
            # As a browser: the session after this page (it showed the login's "Welcome" message).
            page.cookie = session_cookie(headers) or page.cookie
            if status != 200 or page.expect not in html:
                raise RuntimeError(
                    f"GET {page.path} as {page.user} answered {status}, without {page.expect!r}:\n"
                    f"{html[:800]}"
                )
        results: dict[str, list[Run]] = {}
        alone: dict[str, Run] = {}
        log(f"load: wrk -t1 -c{args.connections} -d{args.duration}s --latency, {args.runs} runs per page")
        for number, page in enumerate(pages):
            script = data_dir / f"page{number}.lua"
            script.write_text(lua_for(page))
            warm = run_wrk(server, page, 2, args.connections, script, set())
            pg_pids = pg_backends(url)
            runs = []
            for _ in range(args.runs):
                runs.append(run_wrk(server, page, args.duration, args.connections, script, pg_pids))
            results[page.label] = runs
            single = run_wrk(server, page, args.duration, 1, script, pg_pids)
            alone[page.label] = single
            bad = warm.bad_status + single.bad_status + sum(r.bad_status for r in runs)
            statuses = warm.statuses + single.statuses + sum((r.statuses for r in runs), Counter())
            line = " ".join(f"{r.rate:,.0f}/s p95 {r.p95:.1f} ms" for r in runs)
            line += f" | 1 connection: {single.rate:,.0f}/s p95 {single.p95:.1f} ms"
            log(f"  {page.label:<52} {line}" + (f"  NON-2xx: {bad} {dict(statuses)}" if bad else ""))
            ok &= bad == 0
        paced: dict[str, dict[float, Run | None]] = {}
        if args.rates:
            paced = paced_runs(server, pages, results, alone, args, data_dir)
            ok &= all(r.bad_status == 0 for by_rate in paced.values() for r in by_rate.values() if r)
        mixed: dict[str, list[Run]] = {}
        if args.mixed_rate > 0:
            watched = [
                (f"/inbox?view=all, Tier 1 agent ({facts['agent_sees']:,} tasks)", "/inbox?view=all"),
                (f"/tickets/{ref}, Tier 1 agent", f"/tickets/{ref}"),
            ]
            for label, path in watched:
                if args.only and not any(word in label for word in args.only):
                    continue
                polled = Page(label, path, users.agent, "", cookie=log_in(server.port, users.agent))
                _, headers, _ = request(server.port, "GET", "/inbox", cookie=polled.cookie)
                polled.cookie = session_cookie(headers) or polled.cookie  # the welcome message was shown
                mixed[label] = mixed_runs(server, desk, users, polled, args, data_dir)
                ok &= all(r.bad_status == 0 for r in mixed[label])
        server.stop()
        print_table(pages, results, alone, args)
        if paced:
            print_paced(pages, paced, results, args)
        for label, runs in mixed.items():
            print_mixed(label, runs, args)
        print_ticket_summary(pages, results, alone, paced)
        if not args.skip_profile:
            log("\nWhere the time goes (in-process, the same database; a request here has the whole core)")
            for page in pages:
                if page.user is None or page.unique or page.conditional:
                    continue
                if page.path.startswith(("/inbox", "/tickets")):  # the kept page first, then full renders
                    kept = in_process(desk, page, TIMED, 1, keep=True)
                    log(
                        f"\n  {page.label}, the kept page: wall median "
                        f"{statistics.median(kept.wall_ms):.2f} ms, CPU {kept.cpu_ms:.2f} ms, "
                        f"{kept.statements:.1f} SQL statements"
                    )
                    page = replace(page, label=page.label + ", every request rendered")
                print_in_process(in_process(desk, page, TIMED, PROFILED))
    except KeyboardInterrupt:
        log("\ninterrupted")
        return 130
    except Exception:
        traceback.print_exc()
        log(f"\nerror; server log kept in {data_dir}")
        return 1
    finally:
        server.stop()
    if not ok:
        log(f"\nsome responses were not 2xx (see above); server log kept in {data_dir}")
        return 1
    shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
