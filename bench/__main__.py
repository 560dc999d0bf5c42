"""Core benchmarks (issue 3): tickets opened per second, and the cost of one step as a ticket ages.

    python -m bench                       # SQLite, and PostgreSQL if reachable
    python -m bench --rounds 5000 --tickets 500 --postgres postgresql+psycopg://postgres@127.0.0.1/test

Each measurement goes through the real services and a real database, one unit of work per
event, as `lanedesk` does in production. Prints medians and ratios; exits 0.

SLA timers at scale (issue 4: escalation delay with real Celery workers on RabbitMQ, and the
timer scan's cost at 10k-1M pending timers) are measured by `python -m bench.timers`, inbound
mail throughput (issue 5: raw bytes to ticket or follow-up, inline and through Celery, against
django-helpdesk 2.6) by `python -m bench.mail`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from workflows import migrate
from workflows.app import Desk, build_desk
from workflows.bootstrap import deploy_bundled
from workflows.models import Base, HumanTask, User, WorkflowInstance
from workflows.settings import load_settings
from workflows.tickets import add_customer_reply, open_ticket
from workflows.users import add_user, ensure_default_groups
from workflows.worklist import complete_task

from .clock import StepClock

#: Its own database: the benchmark drops and rebuilds the schema, which must never hit the
#: test suite's database while a suite runs. Created on first use.
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/lanedesk_bench"
CHECKPOINTS = (1, 100, 1000, 5000)
WINDOW = 10  # steps measured around each checkpoint (median)


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database named in ``url`` if it does not exist yet."""
    target = make_url(url)
    if target.get_backend_name() != "postgresql" or not target.database:
        return
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": target.database})
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()


def fresh_desk(url: str, data_dir: Path, clock: StepClock) -> Desk:
    settings = load_settings({"LANEDESK_DATABASE_URL": url, "LANEDESK_DATA_DIR": str(data_dir)})
    ensure_database(url)
    engine = create_engine(url)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    else:
        Base.metadata.drop_all(engine)
    engine.dispose()
    desk = build_desk(settings, clock=clock)
    migrate.upgrade(desk.engine)
    with desk.unit_of_work() as session:
        ensure_default_groups(session)
        add_user(session, email="agent@bench.example", role="admin", groups=["tier-1"], now=clock())
    deploy_bundled(desk)
    return desk


def bench_open(desk: Desk, count: int, runs: int) -> tuple[float, list[float]]:
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        for i in range(count):
            with desk.unit_of_work() as session:
                open_ticket(
                    session,
                    desk.settings,
                    requester=f"c{i}@bench.example",
                    subject=f"Bench {i}",
                    body="b",
                    now=desk.clock(),
                )
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates), rates


def _open_in_process(args: tuple[str, str, int, int]) -> float:
    url, data_dir, count, offset = args
    settings = load_settings({"LANEDESK_DATABASE_URL": url, "LANEDESK_DATA_DIR": data_dir})
    desk = build_desk(settings, clock=StepClock())
    started = time.perf_counter()
    for i in range(count):
        with desk.unit_of_work() as session:
            open_ticket(session, desk.settings, requester=f"p{offset + i}@bench.example", subject="Bench",
                        body="b", now=desk.clock())  # fmt: skip
    desk.engine.dispose()
    return time.perf_counter() - started


def bench_open_parallel(desk: Desk, count: int, workers: int) -> float:
    """Aggregate tickets/s with ``workers`` processes opening ``count`` tickets each."""
    url = desk.engine.url.render_as_string(hide_password=False)
    jobs = [(url, str(desk.settings.data_dir), count, 100_000 * (w + 1)) for w in range(workers)]
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(_open_in_process, jobs)
    return count * workers / (time.perf_counter() - started)


def _work_task(desk: Desk, ticket_id: int) -> str:
    with desk.unit_of_work() as session:
        task_id = session.scalar(
            select(HumanTask.id).where(HumanTask.ticket_id == ticket_id, HumanTask.state == "open")
        )
        assert task_id is not None, "the ticket has no open task"
        return task_id


def bench_rounds(desk: Desk, rounds: int) -> list[tuple[int, float, float, int]]:
    """Rows: (round, agent step ms, customer step ms, stored state bytes)."""
    clock = desk.clock
    with desk.unit_of_work() as session:
        ticket = open_ticket(
            session,
            desk.settings,
            requester="long@bench.example",
            subject="Long-lived",
            body="b",
            now=clock(),
        )
        agent = session.scalar(select(User).where(User.email == "agent@bench.example"))
        ticket_id = ticket.id
    with desk.unit_of_work() as session:
        complete_task(
            session,
            desk.settings,
            task_id=_work_task(desk, ticket_id),
            user=agent,
            data={"category": "incident", "priority": "P3", "summary": "bench"},
            now=clock(),
        )
    wanted = {c for c in CHECKPOINTS if c <= rounds}
    samples: dict[int, tuple[list[float], list[float]]] = {c: ([], []) for c in wanted}
    rows = []
    for rnd in range(1, rounds + 1):
        task_id = _work_task(desk, ticket_id)
        t0 = time.perf_counter()
        with desk.unit_of_work() as session:
            complete_task(
                session,
                desk.settings,
                task_id=task_id,
                user=agent,
                data={"outcome": "wait_customer"},
                now=clock(),
            )
        t1 = time.perf_counter()
        with desk.unit_of_work() as session:
            add_customer_reply(
                session,
                desk.settings,
                ticket_ref=ticket_id + 1000,
                sender="long@bench.example",
                body=f"reply {rnd}",
                now=clock(),
            )
        t2 = time.perf_counter()
        for c in wanted:
            if c <= rnd < c + WINDOW:
                samples[c][0].append((t1 - t0) * 1000)
                samples[c][1].append((t2 - t1) * 1000)
        if rnd in wanted:
            with desk.unit_of_work() as session:
                state = session.scalar(
                    select(WorkflowInstance.state).where(WorkflowInstance.ticket_id == ticket_id)
                )
            rows.append((rnd, 0.0, 0.0, len(state or "")))
    return [
        (r, statistics.median(samples[r][0]), statistics.median(samples[r][1]), size)
        for r, _, _, size in rows
    ]


def report(label: str, desk: Desk, args: argparse.Namespace) -> None:
    median, rates = bench_open(desk, args.tickets, args.runs)
    print(f"\n== {label}")
    print(
        f"tickets opened/s (open → persisted → waiting at triage), {args.tickets} per run, {args.runs} runs:"
    )
    print(f"  median {median:,.0f}/s   runs {', '.join(f'{r:,.0f}' for r in rates)}")
    if args.workers > 1:
        aggregate = bench_open_parallel(desk, args.tickets, args.workers)
        ratio = aggregate / median
        print(f"  {args.workers} processes at once: {aggregate:,.0f}/s in all ({ratio:.2f}x one process)")
    rows = bench_rounds(desk, args.rounds)
    print(f"one step on a long-lived ticket (median of {WINDOW} steps from each round):")
    print(
        f"  {'round':>6} {'agent step ms':>14} {'reply step ms':>14} {'state bytes':>12} {'vs round 1':>11}"
    )
    base = (rows[0][1] + rows[0][2]) / 2
    for rnd, agent_ms, reply_ms, size in rows:
        ratio = ((agent_ms + reply_ms) / 2) / base
        print(f"  {rnd:>6} {agent_ms:>14.2f} {reply_ms:>14.2f} {size:>12,} {ratio:>10.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tickets", type=int, default=300, help="tickets per throughput run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5000, help="customer/agent rounds on one ticket")
    parser.add_argument("--postgres", default=DEFAULT_PG, help="PostgreSQL URL ('' to skip)")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--workers", type=int, default=2, help="processes for the concurrent open run")
    args = parser.parse_args()
    clock = StepClock(step=timedelta(seconds=1))
    with tempfile.TemporaryDirectory() as tmp:
        report(
            "SQLite (WAL, synchronous=NORMAL)",
            fresh_desk(f"sqlite:///{tmp}/bench.db", Path(tmp), clock),
            args,
        )
    if args.postgres and not args.sqlite_only:
        try:
            desk = fresh_desk(args.postgres, Path(tempfile.gettempdir()), clock)
        except Exception as exc:  # a bench must say why it skipped, not crash
            print(f"\n== PostgreSQL skipped: {exc.__class__.__name__}: {exc}")
            return
        report("PostgreSQL (fsync on, TCP 127.0.0.1)", desk, args)


if __name__ == "__main__":
    main()
