"""SLA timers at scale (issue 4): escalation delay with real workers, and the scan's cost.

    python -m bench.timers                      # 100,000 open, 1,000 due, 2 workers, scans at 10k/100k/1M
    python -m bench.timers --quick              # smoke run: 2,000 open, 100 due, scans at 1k/10k
    python -m bench.timers --postgres postgresql+psycopg://postgres@127.0.0.1:5432/lanedesk_bench \\
        --broker amqp://guest:guest@127.0.0.1:5672// --open 100000 --due 1000 --workers 2

Targets: with 100,000 open tickets whose SLA timers are pending, 1,000 of them due at the same
moment D and two workers, the escalation is recorded at most 5 s after D (p99); the scan costs
the same however many timers are not yet due.

Everything is real: PostgreSQL (its own database, rebuilt from the migrations), RabbitMQ, and
`python -m tasks worker` / `python -m tasks beat` processes, which find the due rows with the
desk's scan and escalate each ticket through the bundled diagram. Only the 100,000 tickets are
made in bulk: one template ticket is opened, triaged and aged through the real services, then
copied in SQL, every copy consistent in itself (its stored timer, ``next_wake_at``, SLA clock
and open task all agree). Prints a table and says "target met / missed"; exits non-zero only
when something fails (the database or broker is away, a check finds a wrong escalation, ...).

Phases:

1. Setup: fresh schema, default groups, a Tier 1 agent and a Tier 2 lead, the bundled diagram.
   Template ticket opened at T0 (the past), triaged, and advanced in-process through every
   timer that does not escalate (the 75 % warning), so its next timer is the escalation.
2. Copy it into ``--open`` tickets (ticket, conversation, workflow_instance, open human_task,
   SLA clocks), due times spread over the next 1-71 h. The template itself is parked.
3. Start ``--workers`` Celery workers (concurrency ``--concurrency`` each) and one beat
   (scan every ``--scan-seconds``) on a freshly deleted ``lanedesk`` queue; once they are up,
   move exactly ``--due`` tickets' timers to one moment D a few seconds ahead; wait until all
   are escalated. Per ticket: "wake started" = its ``timer_fired`` audit row's ``created_at``
   (the ``now`` the worker's wake ran with, read from the real clock) - D; "escalation written"
   = when its ``escalated`` audit row was inserted - D (a ``clock_timestamp()`` column the
   bench adds to ``audit_event`` in its own database; the COMMIT follows within milliseconds).
   CPU per process group from /proc over the drain, and the machine's load just before D: the
   machine may be shared, and other work there slows the run down.
4. Checks: each due ticket has exactly one ``timer_fired`` (for the timer due at D) and one
   ``escalated`` row; no other copy was touched; no instance failed.
5. One wake in-process (no broker, no pool): wall and CPU time (this process and its PostgreSQL
   backend), SQL statements, and a cProfile (on CPU time) by layer and by function.
6. Scan cost: ``claim_due`` (rolled back, so the rows stay due) over 10k, 100k, 1M pending rows
   plus 1,000 due ones, and with none due (the idle scan every few seconds); EXPLAIN ANALYZE.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import IO, Any

from kombu import Connection
from sqlalchemy import Connection as SAConnection
from sqlalchemy import DateTime, event, inspect, select, text
from sqlalchemy.engine import make_url

from engine.clock import system_clock
from tasks.celery_app import QUEUES
from tasks.jobs import SCAN_LIMIT
from workflows import audit, migrate
from workflows.app import Desk, build_desk
from workflows.bootstrap import deploy_bundled
from workflows.models import TICKET_NUMBER_OFFSET, AuditEvent, HumanTask, User, WorkflowInstance
from workflows.settings import load_settings
from workflows.tickets import open_ticket
from workflows.users import add_user, ensure_default_groups
from workflows.wakeups import claim_due, wake_instance, wake_or_record_failure
from workflows.worklist import complete_task

from .__main__ import DEFAULT_PG, ensure_database

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
#: The triage the template ticket gets (P3: 72 h resolution target under the default policy).
TRIAGE = {"category": "incident", "priority": "P3", "summary": "SLA timer benchmark"}
P99_TARGET_S = 5.0
#: "Flat": no size's scan may cost more than this times the cheapest (server time), and no plan
#: may read the whole table. Below FLAT_SLACK_MS differences are noise, not a trend.
FLAT_RATIO, FLAT_SLACK_MS = 1.5, 0.1
#: EXPLAIN ANALYZE runs per size and case; the median execution time is reported.
EXPLAINS = 5
#: Not-yet-due copies fall due between 1 h and 71 h from now: never during the run, and their
#: translated creation time (due - 72 h) stays in the past.
FAR_FROM, FAR_SPAN = timedelta(hours=1), timedelta(hours=70)
#: Seconds between the due rows being armed and D (the rows must be committed before D).
LEAD_SECONDS = 3
#: Copies kept aside for the in-process wake measurement (phase 5): timed, then profiled.
IN_PROCESS_TIMED, IN_PROCESS_PROFILED = 40, 20


def log(message: str) -> None:
    print(message, flush=True)


@contextmanager
def stage(what: str) -> Iterator[None]:
    """Print what is being done and how long it took (setup steps take seconds to a minute)."""
    started = time.perf_counter()
    print(f"  {what} ...", end="", flush=True)
    yield
    print(f" {time.perf_counter() - started:.1f} s", flush=True)


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank: the value at or below which p % of samples fall)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def iso_sql(column: str) -> str:
    """SQL for ``column`` (timestamptz, whole seconds) as Python writes it: 2026-03-02T09:00:00+00:00.

    Timer due times are stored in the serialized state as ``datetime.isoformat()`` strings.
    """
    return f"(to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || '+00:00')"


# -- phase 1: the desk and the template ticket -----------------------------------------------
def fresh_desk(url: str, data_dir: Path) -> Desk:
    """A desk on an empty bench database (migrations, groups, two users, the bundled diagram)."""
    ensure_database(url)
    settings = load_settings({"LANEDESK_DATABASE_URL": url, "LANEDESK_DATA_DIR": str(data_dir)})
    desk = build_desk(settings)  # the real clock: workers run on it too
    if desk.engine.dialect.name != "postgresql":
        raise SystemExit("bench.timers measures PostgreSQL (FOR UPDATE SKIP LOCKED); give --postgres")
    with desk.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    migrate.upgrade(desk.engine)
    now = desk.clock()
    with desk.unit_of_work() as session:
        ensure_default_groups(session)
        add_user(session, email="agent@bench.example", role="agent", groups=["tier-1"], now=now)
        add_user(session, email="lead@bench.example", role="agent", groups=[], lead_of=["tier-2"], now=now)
    deploy_bundled(desk)
    with desk.engine.begin() as conn:
        # When each audit row was really written (the row's created_at is the `now` the wake
        # started with). Bench database only; the desk's code never names this column.
        conn.execute(
            text(
                "ALTER TABLE audit_event ADD COLUMN bench_inserted_at timestamptz "
                "NOT NULL DEFAULT clock_timestamp()"
            )
        )
    return desk


@dataclass
class Template:
    ticket_id: int
    instance_id: int
    task_id: str  # the open human task: its id is also in the state (the Spiff task uuid)
    revision: int
    due: datetime  # when the escalation timer is due (stored in the state as due.isoformat())
    ticket_number_json: str  # '"ticket_number":1001' in the state, or '' if absent


def _escalates(desk: Desk, instance_id: int, at: datetime) -> bool:
    """Would waking the instance at ``at`` escalate its ticket? (Tried and rolled back.)"""
    with desk.sessions() as session:
        try:
            wake_instance(session, desk.settings, instance_id, now=at)
            audit.write_journal(session)
            found = session.scalar(
                select(AuditEvent.id).where(AuditEvent.action == "escalated", AuditEvent.created_at == at)
            )
            return found is not None
        finally:
            session.rollback()


def make_template(desk: Desk) -> Template:
    """Open, triage and age one ticket until the next thing its timers do is escalate it."""
    settings = desk.settings
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)
    with desk.unit_of_work() as session:
        ticket = open_ticket(
            session,
            settings,
            requester="customer@bench.example",
            subject="Template ticket",
            body="Nothing works.",
            now=t0,
            priority="P3",
        )
        ticket_id = ticket.id
    with desk.unit_of_work() as session:
        agent = session.scalars(select(User).where(User.email == "agent@bench.example")).one()
        task = session.scalars(
            select(HumanTask).where(HumanTask.ticket_id == ticket_id, HumanTask.state == "open")
        ).one()
        complete_task(
            session, settings, task_id=task.id, user=agent, data=TRIAGE, now=t0 + timedelta(minutes=1)
        )
    # Fire the timers that come before the escalation (the 75 % warning) for real, in-process.
    for _ in range(10):
        with desk.unit_of_work(readonly=True) as session:
            row = session.scalars(
                select(WorkflowInstance).where(WorkflowInstance.ticket_id == ticket_id)
            ).one()
            instance_id, due = row.id, row.next_wake_at
        if due is None:
            raise RuntimeError("the triaged template ticket has no pending timer: did the diagram change?")
        if _escalates(desk, instance_id, due + timedelta(seconds=1)):
            break
        with desk.unit_of_work() as session:
            wake_instance(session, settings, instance_id, now=due + timedelta(seconds=1))
    else:
        raise RuntimeError("no timer of the template ticket escalates it within 10 timers")
    with desk.unit_of_work(readonly=True) as session:
        row = session.get_one(WorkflowInstance, instance_id)
        open_tasks = list(
            session.scalars(
                select(HumanTask).where(HumanTask.ticket_id == ticket_id, HumanTask.state == "open")
            )
        )
        state, revision = row.state, row.revision
    with desk.engine.begin() as conn:
        # Parked: the template itself is never scanned (plain SQL: the ORM would bump `revision`).
        conn.execute(
            text("UPDATE workflow_instance SET next_wake_at = NULL WHERE id = :id"), {"id": instance_id}
        )
    if len(open_tasks) != 1:
        raise RuntimeError(f"the template should have one open task, has {len(open_tasks)}")
    if due.microsecond or state.count(due.isoformat()) != 1:
        raise RuntimeError(
            f"the escalation timer's due time {due.isoformat()} is not stored once in the state"
        )
    task_id = open_tasks[0].id
    if task_id not in state:
        raise RuntimeError("the open task's id is not in the state")
    number = f'"ticket_number":{ticket_id + TICKET_NUMBER_OFFSET}'
    return Template(
        ticket_id, instance_id, task_id, revision, due, number if state.count(number) == 1 else ""
    )


# -- phase 2: copies ----------------------------------------------------------------------------
def copy_rows(
    conn: SAConnection,
    table: str,
    *,
    source: str,
    overrides: dict[str, str | None],
    params: dict[str, Any],
    shift: str = "(c.due - CAST(:tpl_due AS timestamptz))",
) -> int:
    """INSERT ... SELECT a copy of the template's rows of ``table`` for every clone in ``source``.

    Every column is copied (so columns added by later migrations come along), except those in
    ``overrides`` (an SQL expression, or None to let the column default apply), and timestamp
    columns, which are moved by ``shift``: each copy is the template translated in time, so
    that its escalation falls due at the copy's due time ``c.due``.
    """
    columns = inspect(conn).get_columns(table)
    names, values = [], []
    for column in columns:
        name = column["name"]
        if name in overrides:
            if overrides[name] is None:
                continue
            names.append(name)
            values.append(str(overrides[name]))
        else:
            names.append(name)
            values.append(f"src.{name} + {shift}" if isinstance(column["type"], DateTime) else f"src.{name}")
    sql = f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(values)} FROM {source}"
    return int(conn.execute(text(sql), params).rowcount or 0)


def shift_rows(conn: SAConnection, table: str, *, key: str, join: str, params: dict[str, Any]) -> None:
    """Move every timestamp column of the ``:kind`` clones' rows of ``table`` by ``(:d - c.due)``."""
    stamps = [c["name"] for c in inspect(conn).get_columns(table) if isinstance(c["type"], DateTime)]
    sets = ", ".join(f"{name} = t.{name} + (CAST(:d AS timestamptz) - c.due)" for name in stamps)
    sql = f"UPDATE {table} t SET {sets} FROM bench_clone c WHERE t.{key} = c.{join} AND c.kind = :kind"
    conn.execute(text(sql), params)


@dataclass
class Clones:
    total: int
    due: int
    profile: int


def make_clones(desk: Desk, tpl: Template, count: int, due: int, profile: int) -> Clones:
    """Copy the template into ``count`` tickets; mark ``due`` of them (spread over the table) to
    fall due at D later, and ``profile`` for the in-process measurement."""
    stride = count // due
    with desk.engine.begin() as conn:
        tbase = conn.scalar(text("SELECT max(id) FROM ticket"))
        ibase = conn.scalar(text("SELECT max(id) FROM workflow_instance"))
        conn.execute(
            text(
                "CREATE TABLE bench_clone (k int PRIMARY KEY, kind text NOT NULL, ticket_id int NOT NULL, "
                "instance_id int NOT NULL, task_id text NOT NULL, due timestamptz NOT NULL)"
            )
        )
        # Every clone gets its own (far) due time now; the due ones move to D once workers run.
        conn.execute(
            text(
                """
                INSERT INTO bench_clone
                SELECT g,
                       CASE WHEN g % :stride = 0 AND g / :stride <= :due THEN 'due'
                            WHEN :stride > 1 AND g % :stride = 1 AND g / :stride < :profile THEN 'profile'
                            ELSE 'far' END,
                       :tbase + g, :ibase + g, md5('bench-task-' || g)::uuid::text,
                       date_trunc('second', CAST(:now AS timestamptz)) + make_interval(
                           secs => :far_from + floor(((g::bigint * 7919) % :n) * :far_span / :n))
                FROM generate_series(1, :n) AS g
                """
            ),
            {
                "stride": stride,
                "due": due,
                "profile": profile,
                "tbase": tbase,
                "ibase": ibase,
                "now": datetime.now(UTC),
                "far_from": FAR_FROM.total_seconds(),
                "far_span": FAR_SPAN.total_seconds(),
                "n": count,
            },
        )
        params = {"tpl_ticket": tpl.ticket_id, "tpl_instance": tpl.instance_id, "tpl_due": tpl.due}
        copy_rows(
            conn,
            "ticket",
            source="bench_clone c JOIN ticket src ON src.id = :tpl_ticket",
            overrides={"id": "c.ticket_id", "subject": "'Bench ticket ' || c.k"},
            params=params,
        )
        copy_rows(
            conn,
            "conversation_entry",
            source="bench_clone c JOIN conversation_entry src ON src.ticket_id = :tpl_ticket",
            overrides={"id": None, "ticket_id": "c.ticket_id"},
            params=params,
        )
        state = f"replace(replace(src.state, :tpl_due_iso, {iso_sql('c.due')}), :tpl_task, c.task_id)"
        if tpl.ticket_number_json:
            number = f"'\"ticket_number\":' || (c.ticket_id + {TICKET_NUMBER_OFFSET})"
            state = f"replace({state}, :tpl_number, {number})"
        copy_rows(
            conn,
            "workflow_instance",
            source="bench_clone c JOIN workflow_instance src ON src.id = :tpl_instance",
            overrides={
                "id": "c.instance_id",
                "ticket_id": "c.ticket_id",
                "state": state,
                "next_wake_at": "c.due",
                "wake_claimed_until": "NULL",
            },
            params={
                **params,
                "tpl_due_iso": tpl.due.isoformat(),
                "tpl_task": tpl.task_id,
                "tpl_number": tpl.ticket_number_json,
            },
        )
        copy_rows(
            conn,
            "human_task",
            source="bench_clone c JOIN human_task src ON src.id = :tpl_task",
            overrides={"id": "c.task_id", "instance_id": "c.instance_id", "ticket_id": "c.ticket_id"},
            params={**params, "tpl_task": tpl.task_id},
        )
        copy_rows(
            conn,
            "sla_clock",
            source="bench_clone c JOIN sla_clock src ON src.ticket_id = :tpl_ticket",
            overrides={"id": None, "ticket_id": "c.ticket_id"},
            params=params,
        )
        for table in ("ticket", "workflow_instance"):
            conn.execute(
                text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
            )
        kinds: dict[str, int] = {
            str(kind): int(n)
            for kind, n in conn.execute(text("SELECT kind, count(*) FROM bench_clone GROUP BY kind"))
        }
    vacuum(desk, analyze=True)
    return Clones(count, kinds.get("due", 0), kinds.get("profile", 0))


def arm(desk: Desk, kind: str, at: datetime) -> int:
    """Move the timers of the ``kind`` clones to ``at``: state, next_wake_at, SLA clocks, ticket."""
    params = {"d": at, "d_iso": at.isoformat(), "kind": kind}
    with desk.engine.begin() as conn:
        conn.execute(
            text(
                f"UPDATE workflow_instance w SET state = replace(w.state, {iso_sql('c.due')}, :d_iso), "
                "next_wake_at = :d FROM bench_clone c WHERE w.id = c.instance_id AND c.kind = :kind"
            ),
            params,
        )
        shift_rows(conn, "sla_clock", key="ticket_id", join="ticket_id", params=params)
        shift_rows(conn, "ticket", key="id", join="ticket_id", params=params)
        shift_rows(conn, "human_task", key="id", join="task_id", params=params)
        conn.execute(text("UPDATE bench_clone SET due = :d WHERE kind = :kind"), params)
        armed = conn.scalar(
            text(
                "SELECT count(*) FROM workflow_instance w JOIN bench_clone c ON w.id = c.instance_id "
                "WHERE c.kind = :kind AND w.next_wake_at = :d AND position(:d_iso IN w.state) > 0"
            ),
            params,
        )
    return int(armed or 0)


def vacuum(desk: Desk, *tables: str, analyze: bool = False) -> None:
    with desk.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"VACUUM {'ANALYZE' if analyze else ''} {', '.join(tables)}"))


# -- phase 3: worker processes ------------------------------------------------------------------
@dataclass
class Processes:
    """The Celery processes we started, each in its own session (so its pool goes with it)."""

    log_dir: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    beat: subprocess.Popen[bytes] | None = None
    logs: list[IO[bytes]] = field(default_factory=list)

    def all(self) -> list[subprocess.Popen[bytes]]:
        return [*self.workers, *([self.beat] if self.beat else [])]

    def name(self, process: subprocess.Popen[bytes]) -> str:
        return "beat" if process is self.beat else f"worker {self.workers.index(process) + 1}"

    def start(self, args: argparse.Namespace, url: str, data_dir: Path) -> None:
        # The bench's own desk reads no LANEDESK_* variable: neither may the workers (an SLA
        # config from the shell, say, would give them other due times than the copies have).
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("LANEDESK_")}
        env = {
            **inherited,
            "LANEDESK_DATABASE_URL": url,
            "LANEDESK_BROKER_URL": args.broker,
            "LANEDESK_DATA_DIR": str(data_dir),
            "LANEDESK_TIMER_SCAN_SECONDS": str(args.scan_seconds),
            "LANEDESK_WORKER_CONCURRENCY": str(args.concurrency),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        python = sys.executable
        for i in range(args.workers):
            command = [
                python,
                "-m",
                "tasks",
                "worker",
                "--hostname",
                f"bench{i + 1}@%h",
                "--loglevel",
                "INFO",
            ]
            self.workers.append(self._spawn(command, env, f"worker{i + 1}.log"))
        self.beat = self._spawn([python, "-m", "tasks", "beat"], env, "beat.log")

    def _spawn(self, command: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        out = (self.log_dir / name).open("wb")
        self.logs.append(out)
        return subprocess.Popen(
            command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, timeout: float) -> None:
        """Until every worker logged "ready." (Celery's own line), or raise with the logs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self.all():
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{self.name(process)} exited with {process.returncode}\n{self.tails()}"
                    )
            logs = [
                (self.log_dir / f"worker{i + 1}.log").read_text(errors="replace")
                for i in range(len(self.workers))
            ]
            if all(" ready." in text_ for text_ in logs):
                return
            time.sleep(0.2)
        raise RuntimeError(f"workers not ready after {timeout:.0f} s\n{self.tails()}")

    def tails(self, lines: int = 15) -> str:
        out = []
        for path in sorted(self.log_dir.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path}\n" + "\n".join(tail))
        return "\n".join(out)

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM each process group we started (warm shutdown), SIGKILL what is left."""
        for process in self.all():
            if process.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.all():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            with suppress(ProcessLookupError):  # pool children that outlived their parent
                os.killpg(process.pid, signal.SIGKILL)
        for out in self.logs:
            out.close()


def delete_queue(broker: str) -> None:
    """Start from empty queues: no wake, scan or mail task left over from an earlier run."""
    with Connection(broker, connect_timeout=5) as conn:
        channel: Any = conn.channel()
        try:
            for name in QUEUES:
                channel.queue_delete(name)
        finally:
            channel.close()


# -- CPU accounting from /proc (who used the cores while the escalations drained) -------------
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class CpuSample:
    busy: float  # CPU seconds used on the whole machine (all cores) since boot
    total: float  # CPU seconds elapsed on all cores since boot
    procs: dict[int, tuple[str, int, float]]  # pid: (command, session id, CPU seconds)


def cpu_sample() -> CpuSample:
    """Machine-wide CPU time, and that of every process (from /proc)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    procs = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2 :].split()  # state ppid pgrp session ... utime(11) stime(12)
        procs[int(entry.name)] = (comm, int(rest[3]), (int(rest[11]) + int(rest[12])) / TICK)
    return CpuSample((total - fields[3] - fields[4]) / TICK, total / TICK, procs)


PG_OURS = "postgres: bench database backends"
PG_OTHER = "postgres: other (WAL writer, checkpointer, other databases)"
ELSE = "everything else (other processes, kernel)"


@dataclass
class CpuWindow:
    wall: float  # seconds
    seconds: dict[str, float]  # CPU seconds per group, ELSE included
    busy: float  # % of all cores

    def share(self, group: str) -> float:
        """% of one core."""
        return 100 * self.seconds.get(group, 0.0) / self.wall if self.wall > 0 else 0.0


def cpu_window(before: CpuSample, after: CpuSample, sessions: dict[int, str], pg_pids: set[int]) -> CpuWindow:
    """CPU per group between two samples: our Celery processes (by session: a worker's pool
    shares it), this process, PostgreSQL (the bench database's backends apart) and RabbitMQ.

    Other processes are not named: on a shared machine they come and go (one that exits takes
    its counters with it), so "everything else" is the machine's busy time minus the groups.
    """
    cores = os.cpu_count() or 1
    wall = (after.total - before.total) / cores
    seconds: dict[str, float] = defaultdict(float)
    for pid, (comm, session, used) in after.procs.items():
        previous = before.procs.get(pid)
        used -= previous[2] if previous and previous[:2] == (comm, session) else 0.0
        if session in sessions:
            seconds[sessions[session]] += used
        elif pid == os.getpid():
            seconds["bench (this process)"] += used
        elif pid in pg_pids:
            seconds[PG_OURS] += used
        elif comm == "postgres":
            seconds[PG_OTHER] += used
        elif comm in ("beam.smp", "erl_child_setup", "epmd", "inet_gethost"):
            seconds["rabbitmq"] += used
    busy = after.busy - before.busy
    seconds[ELSE] = max(0.0, busy - sum(seconds.values()))
    return CpuWindow(wall, dict(seconds), 100 * busy / (wall * cores) if wall > 0 else 0.0)


def backend_pids(desk: Desk) -> set[int]:
    """PostgreSQL backends connected to the bench database (our workers, this process)."""
    with desk.engine.connect() as conn:
        sql = "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        return {int(pid) for pid in conn.scalars(text(sql))}


# -- phase 3/4: the escalation run ----------------------------------------------------------------
@dataclass
class RunResult:
    at: datetime  # D
    started: list[float]  # per ticket: wake start (audit created_at) - D, seconds
    written: list[float]  # per ticket: escalation row inserted - D, seconds
    service: list[float]  # per ticket: written - started (one wake in a worker)
    cpu: CpuWindow  # from D to the last escalation
    background: float  # % of all cores busy in the seconds before D, our processes idle
    checks: list[tuple[str, bool]]


def run_escalations(
    desk: Desk, args: argparse.Namespace, tpl: Template, clones: Clones, procs: Processes
) -> RunResult:
    with desk.engine.connect() as conn:
        mark = int(conn.scalar(text("SELECT coalesce(max(id), 0) FROM audit_event")) or 0)
    # D: a whole second a little ahead, so the due rows are committed (and the scan idle) before.
    at = datetime.fromtimestamp(math.ceil(time.time()) + LEAD_SECONDS, UTC)
    armed = arm(desk, "due", at)
    if armed != clones.due:
        raise RuntimeError(f"armed {armed} of {clones.due} due copies")
    if datetime.now(UTC) >= at - timedelta(seconds=0.5):
        raise RuntimeError("arming the due rows took longer than the lead time; raise LEAD_SECONDS")
    log(f"  {armed:,} tickets due at D = {at:%H:%M:%S} UTC; waiting for the escalations ...")
    sessions = {p.pid: "workers" for p in procs.workers}
    if procs.beat:
        sessions[procs.beat.pid] = "beat"
    # How busy the (shared) machine is while our processes only run idle scans: noise.
    quiet = cpu_sample()
    time.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))
    before = cpu_sample()
    background = cpu_window(quiet, before, sessions, set()).busy
    deadline = time.monotonic() + max(120.0, clones.due * 0.5)
    count_sql = text("SELECT count(*) FROM audit_event WHERE id > :mark AND action = :action")
    last_report, done = time.monotonic(), 0
    with desk.engine.connect() as conn:
        while True:
            done = int(conn.scalar(count_sql, {"mark": mark, "action": "escalated"}) or 0)
            conn.commit()
            if done >= clones.due:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {done:,} of {clones.due:,} escalated before the deadline\n{procs.tails()}"
                )
            for process in procs.all():
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{procs.name(process)} exited with {process.returncode}\n{procs.tails()}"
                    )
            if time.monotonic() - last_report > 5:
                log(f"    {done:,} escalated after {(datetime.now(UTC) - at).total_seconds():.0f} s")
                last_report = time.monotonic()
            time.sleep(0.1)
    cpu = cpu_window(before, cpu_sample(), sessions, backend_pids(desk))
    procs.stop()
    return collect(desk, tpl, clones, at, mark, cpu, background)


def collect(
    desk: Desk,
    tpl: Template,
    clones: Clones,
    at: datetime,
    mark: int,
    cpu: CpuWindow,
    background: float,
) -> RunResult:
    """Delays per due ticket, and the checks that the run did exactly what it should."""
    with desk.engine.connect() as conn:
        rows = conn.execute(
            text(
                """
            SELECT a.ticket_id, a.action, a.created_at, a.bench_inserted_at, a.data::jsonb ->> 'due', c.kind
            FROM audit_event a JOIN bench_clone c ON c.ticket_id = a.ticket_id
            WHERE a.id > :mark AND a.action IN ('timer_fired', 'escalated', 'instance_failed')
            """
            ),
            {"mark": mark},
        ).all()
    fired: dict[int, list[tuple[datetime, str | None]]] = {}
    escalated: dict[int, list[datetime]] = {}
    wrong_kind, failed = 0, 0
    for ticket_id, action, created, inserted, due_iso, kind in rows:
        if kind != "due":
            wrong_kind += 1
        if action == "timer_fired":
            fired.setdefault(ticket_id, []).append((created, due_iso))
        elif action == "escalated":
            escalated.setdefault(ticket_id, []).append(inserted)
        else:
            failed += 1
    started, written, service = [], [], []
    for ticket_id, fires in fired.items():
        if len(fires) == 1 and len(escalated.get(ticket_id, [])) == 1:
            start = (fires[0][0] - at).total_seconds()
            end = (escalated[ticket_id][0] - at).total_seconds()
            started.append(start)
            written.append(end)
            service.append(end - start)
    with desk.engine.connect() as conn:
        touched = conn.scalar(
            text(
                "SELECT count(*) FROM workflow_instance w JOIN bench_clone c ON w.id = c.instance_id "
                "WHERE c.kind <> 'due' AND (w.revision <> :rev OR w.wake_claimed_until IS NOT NULL "
                "OR w.next_wake_at IS DISTINCT FROM c.due OR w.wake_failures <> 0)"
            ),
            {"rev": tpl.revision},
        )
        due_left = conn.scalar(
            text(
                "SELECT count(*) FROM workflow_instance w JOIN bench_clone c ON w.id = c.instance_id "
                "WHERE c.kind = 'due' "
                "AND (w.status <> 'running' OR w.next_wake_at <= :d OR w.revision = :rev)"
            ),
            {"d": at, "rev": tpl.revision},
        )
        # A second delivery of a wake is harmless (it finds nothing due and saves the row again).
        twice = conn.scalar(
            text(
                "SELECT count(*) FROM workflow_instance w JOIN bench_clone c ON w.id = c.instance_id "
                "WHERE c.kind = 'due' AND w.revision > :rev + 1"
            ),
            {"rev": tpl.revision},
        )
    right_timer = sum(1 for fires in fired.values() if len(fires) == 1 and fires[0][1] == at.isoformat())
    n = clones.due
    checks = [
        (
            f"{len(started):,}/{n:,} due tickets have exactly one timer_fired and one escalated row",
            len(started) == n,
        ),
        (f"{right_timer:,}/{n:,} fired timers were the one due at D", right_timer == n),
        (
            f"{n - int(due_left or 0):,}/{n:,} due instances saved, running, next wake after D "
            f"({int(twice or 0)} woken more than once)",
            not due_left,
        ),
        (f"{failed} instance_failed rows", failed == 0),
        (
            f"{int(touched or 0) + wrong_kind:,} of {clones.total - n:,} not-due copies touched",
            not touched and not wrong_kind,
        ),
    ]
    return RunResult(at, started, written, service, cpu, background, checks)


# -- phase 5: one wake in-process ----------------------------------------------------------------
@dataclass
class InProcess:
    times_ms: list[float]  # wall clock per wake
    cpu_ms: float  # CPU of this process per wake
    pg_cpu_ms: float  # CPU of its PostgreSQL backend per wake
    statements: float  # SQL statements sent per wake (COMMIT not counted)
    sql_ms: float  # wall time inside cursor.execute per wake (driver + round trip + server)
    # From a profile on CPU time (the machine is shared: wall time would include waiting for
    # a core). Shares of the profiled wake, in %:
    layers: list[tuple[str, float]]  # own CPU time by layer: a partition of the wake
    breakdown: list[tuple[str, float]]  # cumulative (callees included): rows overlap
    top: list[tuple[str, float, float]]  # (function, own %, cumulative %)


#: Where a wake spends its time (cProfile cumulative, so the rows overlap: callees included).
PARTS = [
    ("Instance.load: deserialize the state", "engine/runtime.py", "load"),
    ("Instance.fire_due_timers: engine + scripts + their SQL", "engine/runtime.py", "fire_due_timers"),
    ("Instance.dump: compact + serialize", "engine/runtime.py", "dump"),
    ("Instance.next_wake", "engine/runtime.py", "next_wake"),
    ("_offer_pending (its query flushes the audit rows)", "workflows/instances.py", "_offer_pending"),
    ("_sync_tasks: human-task projection", "workflows/instances.py", "_sync_tasks"),
    ("Session.commit (flush + COMMIT)", "sqlalchemy/orm/session.py", "commit"),
]


def _layer(file: str) -> str | None:
    """The layer a profiled function belongs to; None for the standard library and builtins."""
    path = file.replace("\\", "/")
    if "site-packages/" in path:
        package = path.split("site-packages/", 1)[1].split("/", 1)[0]
        return {"SpiffWorkflow": "SpiffWorkflow (engine library)"}.get(package, package)
    if path.startswith(str(REPO)):
        top = Path(path).relative_to(REPO).parts[0]
        return {"engine": "lanedesk engine/", "workflows": "lanedesk workflows/"}.get(top, f"lanedesk {top}/")
    return None


def layers_of(stats: dict[Any, Any]) -> dict[str, float]:
    """Own time per layer, a partition of the profile: the standard library's and builtins' own
    time goes to the layer that called them (split by the time spent per caller, recursively)."""
    owners: dict[Any, dict[str, float]] = {}

    def owner(key: Any, seen: frozenset[Any]) -> dict[str, float]:
        if key in owners:
            return owners[key]
        layer = _layer(key[0])
        if layer is not None:
            result = {layer: 1.0}
        else:
            callers = stats[key][4]
            weights = {c: v[3] for c, v in callers.items() if c not in seen and c in stats}
            total = sum(weights.values())
            result = {}
            if total <= 0:
                result = {"standard library (no caller)": 1.0}
            for caller, weight in weights.items():
                for name, share in owner(caller, seen | {key}).items():
                    result[name] = result.get(name, 0.0) + share * weight / total
        owners[key] = result
        return result

    out: dict[str, float] = defaultdict(float)
    for key, (_, _, own, _, _) in stats.items():
        for name, share in owner(key, frozenset({key})).items():
            out[name] += own * share
    return out


def wake_in_process(desk: Desk, clones: Clones) -> InProcess | None:
    """Wake the profile copies here, one by one: the cost of one wake without broker or pool."""
    if clones.profile < 4:
        return None
    at = datetime.fromtimestamp(math.floor(time.time()) - 1, UTC)
    arm(desk, "profile", at)
    with desk.engine.connect() as conn:
        ids = list(
            conn.scalars(text("SELECT instance_id FROM bench_clone WHERE kind = 'profile' ORDER BY k"))
        )
    split = min(IN_PROCESS_TIMED, len(ids) // 2)
    timed, profiled = ids[:split], ids[split : split + IN_PROCESS_PROFILED]
    sql: list[float] = []
    started_at: list[float] = []

    def before(*_: Any) -> None:
        started_at.append(time.perf_counter())

    def after(*_: Any) -> None:
        sql.append(time.perf_counter() - started_at.pop())

    def wake(instance_id: int) -> None:
        if not wake_or_record_failure(desk.sessions, desk.settings, instance_id, now=system_clock):
            raise RuntimeError(f"in-process wake of instance {instance_id} did nothing")

    wake(timed[0])  # the first wake in a process parses the diagram: not counted
    times = []
    pg_pids = backend_pids(desk)  # the pool's connection, opened by the first wake
    event.listen(desk.engine, "before_cursor_execute", before)
    event.listen(desk.engine, "after_cursor_execute", after)
    first = cpu_sample()
    try:
        for instance_id in timed[1:]:
            started = time.perf_counter()
            wake(instance_id)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        event.remove(desk.engine, "before_cursor_execute", before)
        event.remove(desk.engine, "after_cursor_execute", after)
    cpu = cpu_window(first, cpu_sample(), {}, pg_pids)
    profiler = cProfile.Profile(time.process_time)
    for instance_id in profiled:
        profiler.enable()
        wake(instance_id)
        profiler.disable()
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    whole = sum(v[3] for (_, _, func), v in stats.items() if func == "wake_or_record_failure")
    breakdown = []
    for label, file_end, func in PARTS:
        # max, not sum: Session.commit calls SessionTransaction.commit (same file, same name).
        matches = [v[3] for (file, _, name), v in stats.items() if name == func and file.endswith(file_end)]
        breakdown.append((label, 100 * max(matches, default=0.0) / whole))
    layers = sorted(((k, 100 * v / whole) for k, v in layers_of(stats).items()), key=lambda kv: -kv[1])
    by_own = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:10]
    top = [
        (f"{Path(file).parent.name}/{Path(file).name}:{line} {func}", 100 * v[2] / whole, 100 * v[3] / whole)
        for (file, line, func), v in by_own
    ]
    n = len(times)
    return InProcess(
        times,
        1000 * cpu.seconds.get("bench (this process)", 0.0) / n,
        1000 * cpu.seconds.get(PG_OURS, 0.0) / n,
        len(sql) / n,
        1000 * sum(sql) / n,
        layers,
        breakdown,
        top,
    )


# -- phase 6: the scan's cost ---------------------------------------------------------------------
@dataclass
class ScanRow:
    pending: int
    idle_ms: float
    due_ms: float
    idle_exec_ms: float
    due_exec_ms: float
    idle_buffers: int
    due_buffers: int
    idle_shape: str
    due_shape: str


def claim_sql(desk: Desk, now: datetime) -> list[tuple[str, dict[str, Any]]]:
    """The exact statements and parameters ``claim_due`` sends (captured from the driver, rolled back)."""
    captured: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        captured.append((statement, parameters))

    event.listen(desk.engine, "before_cursor_execute", grab)
    try:
        with desk.sessions() as session:
            claim_due(session, now, limit=SCAN_LIMIT)
            session.rollback()
    finally:
        event.remove(desk.engine, "before_cursor_execute", grab)
    claims = [
        (st, dict(params)) for st, params in captured if st.lstrip().upper().startswith(("SELECT", "UPDATE"))
    ]
    if not claims:
        raise RuntimeError("claim_due sent no SELECT/UPDATE")
    return claims


def explain(desk: Desk, now: datetime, *, as_text: bool = False) -> Any:
    """EXPLAIN (ANALYZE, BUFFERS) of the scan's statements at ``now``, run in order and rolled back.

    The scan is a SELECT ... FOR UPDATE SKIP LOCKED and (when something is due) an UPDATE by
    primary key: their times and buffers are added up, their plans kept side by side.
    """
    statements = claim_sql(desk, now)
    fmt = "TEXT" if as_text else "JSON"
    plans: list[Any] = []
    with desk.engine.connect() as conn:
        try:
            for statement, parameters in statements:
                result = conn.exec_driver_sql(
                    f"EXPLAIN (ANALYZE, BUFFERS, FORMAT {fmt}) {statement}", parameters
                )
                plans.append([r[0] for r in result])
        finally:
            conn.rollback()
    if as_text:
        return [line for rows in plans for line in rows]
    parsed = [(rows[0] if isinstance(rows[0], list) else json.loads(rows[0]))[0] for rows in plans]
    nodes = [p["Plan"] for p in parsed]
    return {
        "Execution Time": sum(p["Execution Time"] for p in parsed),
        "Plan": {
            "Node Type": "Claim",
            "Plans": nodes,
            "Shared Hit Blocks": sum(_buffers(n) for n in nodes),
        },
    }


def time_claims(desk: Desk, reps: int, expect: int, *, vacuum_between: bool) -> list[float]:
    """Milliseconds per ``claim_due`` (the worker's call), each in a transaction rolled back."""
    times = []
    for rep in range(reps + 1):  # the first warms SQLAlchemy's statement cache: not counted
        with desk.sessions() as session:
            now = datetime.now(UTC)
            started = time.perf_counter()
            ids = claim_due(session, now, limit=SCAN_LIMIT)
            elapsed = time.perf_counter() - started
            session.rollback()
        if len(ids) != expect:
            raise RuntimeError(f"the scan claimed {len(ids)} rows, expected {expect}")
        if rep:
            times.append(elapsed * 1000)
        if vacuum_between:
            # The rolled-back UPDATE leaves a dead version of each due row (and index entries):
            # clean them so every repetition measures the same table, as autovacuum would.
            vacuum(desk, "workflow_instance")
    return times


def scan_costs(desk: Desk, sizes: list[int], due: int, reps: int) -> tuple[list[ScanRow], list[str]]:
    """Fill workflow_instance with ``size`` pending rows (+ ``due`` due ones) and time the scan."""
    with desk.engine.begin() as conn:
        conn.execute(text("TRUNCATE workflow_instance CASCADE"))  # phase 1's rows; tasks go with them
    rows, plan_text, have = [], [], 0
    for size in sorted(sizes):
        total = size + due
        with stage(f"{size:,} pending + {due:,} due rows: insert {total - have:,}, VACUUM ANALYZE"):
            with desk.engine.begin() as conn:
                # Small state: the scan never reads it. Due times random over the next 30 days.
                copy_rows(
                    conn,
                    "workflow_instance",
                    source="generate_series(CAST(:first AS int), :last) AS g "
                    "JOIN (SELECT * FROM workflow_instance_template) src ON true",
                    overrides={
                        "id": None,
                        "state": '\'{"bench": "scan row, never loaded"}\'',
                        "next_wake_at": "CAST(:now AS timestamptz) + interval '1 hour' "
                        "+ ((g::bigint * 7919) % 1000003) * interval '30 days' / 1000003",
                        "wake_claimed_until": "NULL",
                        "wake_failures": "0",
                        "revision": "1",
                        "status": "'running'",
                        "created_at": "CAST(:now AS timestamptz)",
                        "updated_at": "CAST(:now AS timestamptz)",
                    },
                    params={"first": have + 1, "last": total, "now": datetime.now(UTC)},
                    shift="interval '0 seconds'",
                )
            have = total
            vacuum(desk, "workflow_instance", analyze=True)
        idle = time_claims(desk, reps, 0, vacuum_between=False)
        idle_plans = [explain(desk, datetime.now(UTC)) for _ in range(EXPLAINS)]
        # 1,000 rows due, scattered over the whole table (as real due times are), then measure.
        with desk.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE workflow_instance "
                    "SET next_wake_at = CAST(:now AS timestamptz) - (id % 60) * interval '1 second' "
                    "WHERE id IN (SELECT id FROM workflow_instance "
                    "             ORDER BY (id::bigint * 7919) % 1000003 LIMIT :due)"
                ),
                {"now": datetime.now(UTC), "due": due},
            )
        vacuum(desk, "workflow_instance", analyze=True)
        busy = time_claims(desk, reps, due, vacuum_between=True)
        due_plans = []
        for _ in range(EXPLAINS):
            due_plans.append(explain(desk, datetime.now(UTC)))
            vacuum(desk, "workflow_instance")
        if size == max(sizes):
            plan_text = explain(desk, datetime.now(UTC), as_text=True)
        with desk.engine.begin() as conn:  # back to pending for the next size
            conn.execute(
                text(
                    "UPDATE workflow_instance "
                    "SET next_wake_at = CAST(:now AS timestamptz) + interval '1 hour' "
                    "                 + (id % 1000) * interval '1 hour' "
                    "WHERE next_wake_at <= CAST(:now AS timestamptz)"
                ),
                {"now": datetime.now(UTC)},
            )
        vacuum(desk, "workflow_instance")
        rows.append(
            ScanRow(
                size,
                statistics.median(idle),
                statistics.median(busy),
                statistics.median(p["Execution Time"] for p in idle_plans),
                statistics.median(p["Execution Time"] for p in due_plans),
                _buffers(idle_plans[-1]["Plan"]),
                _buffers(due_plans[-1]["Plan"]),
                " / ".join(sorted({_shape(p["Plan"]) for p in idle_plans})),
                " / ".join(sorted({_shape(p["Plan"]) for p in due_plans})),
            )
        )
    return rows, plan_text


def _shape(plan: dict[str, Any]) -> str:
    """How the rows are found: the join (if any) and whether some table is read in full."""
    nodes, todo = [], [plan]
    while todo:
        node = todo.pop()
        join_type = node.get("Join Type", "")
        nodes.append(
            f"{node['Node Type']} ({join_type})" if join_type not in ("", "Inner") else node["Node Type"]
        )
        todo.extend(node.get("Plans", []))
    join = next((n.lower() for n in nodes if "Join" in n or n == "Nested Loop"), "")
    scan = "SEQ SCAN of the table" if "Seq Scan" in nodes else "index lookups"
    return f"{join} + {scan}" if join else scan


def _buffers(plan: dict[str, Any]) -> int:
    return int(plan.get("Shared Hit Blocks", 0)) + int(plan.get("Shared Read Blocks", 0))


def template_for_scan(desk: Desk, tpl: Template) -> None:
    """Keep one copy of the template's instance row aside: the scan rows are copies of it."""
    with desk.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS workflow_instance_template"))
        conn.execute(
            text("CREATE TABLE workflow_instance_template AS SELECT * FROM workflow_instance WHERE id = :id"),
            {"id": tpl.instance_id},
        )


# -- report -----------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "target met" if ok else "target MISSED"


def print_run(result: RunResult, args: argparse.Namespace, clones: Clones) -> bool:
    """Print the escalation run; True when every check passed (the target may still be missed)."""
    log(
        f"\n== 1. {clones.due:,} escalations due at one moment D; "
        f"{clones.total:,} open tickets with SLA timers"
    )
    log(
        f"   {args.workers} worker process(es) x concurrency {args.concurrency} (prefork), "
        f"1 beat scanning every {args.scan_seconds} s, RabbitMQ, PostgreSQL"
    )
    log(f"   {'delay after D, seconds':<46} {'p50':>6} {'p90':>6} {'p99':>6} {'max':>6} {'min':>6}")
    series = [
        ("wake started (audit created_at: the wake's now)", result.started),
        ("escalation written (row inserted, pre-COMMIT)", result.written),
    ]
    for label, values in series:
        if values:
            cells = " ".join(
                f"{v:>6.2f}" for v in (*(pct(values, p) for p in (50, 90, 99)), max(values), min(values))
            )
            log(f"   {label:<46} {cells}")
    p99 = pct(result.written, 99) if result.written else math.inf
    if result.written:
        done, first, last = len(result.written), min(result.started), max(result.written)
        log(
            f"   throughput: {done:,} escalations in {last - first:.1f} s from the first wake = "
            f"{done / max(last - first, 1e-9):,.0f}/s; first wake {first:.2f} s after D"
        )
        log(
            f"   one wake inside a worker (written - started): median "
            f"{1000 * statistics.median(result.service):.1f} ms, p99 {1000 * pct(result.service, 99):.1f} ms"
        )
    cores = os.cpu_count() or 1
    done = max(len(result.written), 1)
    log(
        f"   CPU from D to the last escalation ({result.cpu.wall:.1f} s): % of one core "
        f"({cores} cores = {100 * cores}%), and CPU ms per escalation:"
    )
    for group, used in sorted(result.cpu.seconds.items(), key=lambda kv: -kv[1]):
        if used / result.cpu.wall >= 0.005:
            log(f"     {group:<62} {result.cpu.share(group):>5.0f}%  {1000 * used / done:>6.1f} ms")
    ours = sum(v for k, v in result.cpu.seconds.items() if k not in (ELSE, PG_OTHER)) / done
    log(
        f"   CPU per escalation of our processes (workers, beat, bench-db backends, RabbitMQ): "
        f"{1000 * ours:.1f} ms -> {cores} cores can do at most {cores / ours:,.0f}/s; "
        f"{done:,} due need >= {done * ours / cores:.1f} s of {cores} whole cores"
    )
    log(
        f"   machine busy: {result.cpu.busy:.0f}% of all cores "
        f"(just before D, with our processes idle: {result.background:.0f}%: other work on this machine)"
    )
    for label, passed in result.checks:
        log(f"   check: {label}: {'ok' if passed else 'FAILED'}")
    log(f"   p99 <= {P99_TARGET_S:.0f} s after due: {verdict(p99 <= P99_TARGET_S)} (p99 {p99:.2f} s)")
    return all(passed for _, passed in result.checks)


def print_in_process(result: InProcess | None, run: RunResult | None, processes: int) -> None:
    if result is None:
        return
    median = statistics.median(result.times_ms)
    cpu = result.cpu_ms + result.pg_cpu_ms
    cores = os.cpu_count() or 1
    log(
        f"\n== 2. One escalation wake in-process (no broker, no pool; waits on nothing but PostgreSQL): "
        f"{len(result.times_ms)} timed"
    )
    log(f"   wall: median {median:.1f} ms (min {min(result.times_ms):.1f}, max {max(result.times_ms):.1f})")
    log(
        f"   CPU per wake: {result.cpu_ms:.1f} ms in this process + {result.pg_cpu_ms:.1f} ms in its "
        f"PostgreSQL backend = {cpu:.1f} ms -> at most {1000 * cores / cpu:,.0f} wakes/s on {cores} cores, "
        f"if nothing else ran"
    )
    log(
        f"   SQL: {result.statements:.0f} statements + COMMIT per wake; {result.sql_ms:.1f} ms (wall) "
        f"inside cursor.execute"
    )
    if run and run.service:
        log(
            f"   the same wake inside the workers during the run: "
            f"median {1000 * statistics.median(run.service):.1f} ms (wall)"
        )
    log(f"   cProfile on CPU time, {IN_PROCESS_PROFILED} wakes; own CPU by layer (sums to 100%):")
    log("     " + ", ".join(f"{label} {share:.0f}%" for label, share in result.layers if share >= 0.5))
    log("   cumulative, % of the wake (callees included, so rows overlap):")
    for label, share in result.breakdown:
        log(f"     {label:<58} {share:>4.0f}%")
    log("   functions with the most own CPU (own / cumulative, % of the wake):")
    for name, own, cumulative in result.top:
        log(f"     {own:>4.1f}% / {cumulative:>5.1f}%  {name}")


def print_scan(rows: list[ScanRow], plan: list[str], due: int, reps: int, scan_seconds: int) -> bool:
    """Print the scan costs; True when the cost is flat over the sizes and the plan is a range scan."""
    log(
        f"\n== 3. Scan cost: claim_due(limit={SCAN_LIMIT}) as beat's scan runs it; "
        f"median of {reps}, rolled back"
    )
    log(
        f"   {'pending rows':>12} | {'0 due: ms':>9} {'exec ms':>8} {'buffers':>8} | "
        f"{f'{due:,} due: ms':>13} {'exec ms':>8} {'buffers':>8}  plan with {due:,} due"
    )
    for r in rows:
        log(
            f"   {r.pending:>12,} | {r.idle_ms:>9.2f} {r.idle_exec_ms:>8.2f} {r.idle_buffers:>8,} | "
            f"{r.due_ms:>13.2f} {r.due_exec_ms:>8.2f} {r.due_buffers:>8,}  {r.due_shape}"
        )
    log(
        f"   ms: median of the call from Python (round trip included); exec ms: median of {EXPLAINS} "
        "EXPLAIN ANALYZE (server); buffers: one of them"
    )
    small, large = rows[0], rows[-1]

    def flat(values: list[float]) -> tuple[float, bool]:  # dearest size / cheapest; flat enough?
        ratio = max(values) / max(min(values), 1e-9)
        return ratio, ratio <= FLAT_RATIO or max(values) - min(values) <= FLAT_SLACK_MS

    due_ratio, due_flat = flat([r.due_exec_ms for r in rows])
    idle_ratio, idle_flat = flat([r.idle_exec_ms for r in rows])
    log(
        f"   {small.pending:,} to {large.pending:,} pending ({large.pending // small.pending:,}x the rows), "
        f"server time (median of {EXPLAINS} EXPLAIN ANALYZE), dearest size / cheapest:"
    )
    log(f"     idle scan {idle_ratio:.2f}x, {due:,}-due scan {due_ratio:.2f}x")
    log(
        f"   buffers at {large.pending:,} / at {small.pending:,}: "
        f"idle {large.idle_buffers} / {small.idle_buffers}, due {large.due_buffers:,} / {small.due_buffers:,}"
    )
    log(
        f"   idle: one scan every {scan_seconds} s costs {large.idle_ms:.2f} ms "
        f"({large.idle_ms / scan_seconds / 10:.2f}% of one core) at {large.pending:,} pending"
    )
    log(f"   EXPLAIN (ANALYZE, BUFFERS), {large.pending:,} pending + {due:,} due:")
    for line in plan:  # the UPDATE's id list runs to thousands of characters
        log(f"     {line if len(line) <= 160 else line[:157] + '...'}")
    uses_index = any("ix_workflow_instance_due" in line for line in plan)
    seq = [line.strip().split("  (")[0].lstrip("-> ") for line in plan if "Seq Scan" in line]
    log(
        "   plan: "
        + ("range scan of ix_workflow_instance_due" if uses_index else "NO scan of ix_workflow_instance_due")
        + (f"; but also: {'; '.join(seq)}" if seq else "; no sequential scan")
    )
    seq_sizes = [f"{r.pending:,}" for r in rows if "SEQ" in r.due_shape + r.idle_shape]
    if seq_sizes:
        # The planner's own choice on a small table (cheaper than index lookups there); what the
        # target is about is the cost as the table grows, judged on server time below.
        log(f"   the planner reads the whole (small) table at: {', '.join(seq_sizes)} pending")
    ok = due_flat and idle_flat and uses_index and not seq
    log(
        f"   scan cost flat in the timers not yet due (server time within {FLAT_RATIO}x, "
        f"range scan at {large.pending:,}): {verdict(ok)}"
    )
    return ok


# -- main -------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.timers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--postgres", default=DEFAULT_PG, help="PostgreSQL URL (its schema is dropped and rebuilt)"
    )
    parser.add_argument(
        "--broker", default=DEFAULT_BROKER, help="RabbitMQ URL (the 'lanedesk' queue is deleted)"
    )
    parser.add_argument("--open", type=int, default=100_000, help="open tickets with pending SLA timers")
    parser.add_argument("--due", type=int, default=1_000, help="of which fall due at the same moment")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--concurrency", type=int, default=1, help="pool processes per worker")
    parser.add_argument("--scan-seconds", type=int, default=1, help="beat's scan interval (desk default 2)")
    parser.add_argument("--scan-sizes", default="10000,100000,1000000", help="pending rows for the scan cost")
    parser.add_argument("--scan-due", type=int, default=1_000, help="due rows during the scan-cost runs")
    parser.add_argument("--reps", type=int, default=20, help="repetitions per scan measurement")
    parser.add_argument("--skip-run", action="store_true", help="only the scan cost (no workers)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 open / 100 due / scans 1k,10k")
    args = parser.parse_args(argv)
    if args.quick:
        args.open, args.due, args.scan_sizes, args.scan_due, args.reps = 2_000, 100, "1000,10000", 100, 5
    args.sizes = [int(s) for s in str(args.scan_sizes).split(",") if s.strip()]
    if args.due < 1 or args.open < 2 * args.due:
        parser.error("need --due ≥ 1 and --open ≥ 2 x --due (due copies are spread over the table)")
    if min(args.workers, args.concurrency, args.scan_seconds, args.reps) < 1:
        parser.error("--workers, --concurrency, --scan-seconds and --reps must be at least 1")
    if not args.sizes or min(args.sizes) < 1:
        parser.error("--scan-sizes: comma-separated positive row counts")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM: clean up as on Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    data_dir = Path(tempfile.mkdtemp(prefix="lanedesk-bench-timers-"))
    procs = Processes(data_dir)
    url = args.postgres
    ok = True
    try:
        log(
            f"bench.timers: {make_url(url).render_as_string(hide_password=True)}, broker "
            f"{args.broker.rsplit('@', 1)[-1]}, {os.cpu_count()} cores, logs in {data_dir}"
        )
        log("setup")
        with stage("fresh schema, groups, agent + Tier 2 lead, bundled diagram"):
            desk = fresh_desk(url, data_dir)
        with stage("template ticket: opened, triaged, 75 % warning fired (in-process)"):
            tpl = make_template(desk)
        run: RunResult | None = None
        in_process: InProcess | None = None
        if not args.skip_run:
            profile = IN_PROCESS_TIMED + IN_PROCESS_PROFILED
            with stage(f"copy it into {args.open:,} open tickets (SQL), VACUUM ANALYZE"):
                clones = make_clones(desk, tpl, args.open, args.due, profile)
            with stage(f"start {args.workers} worker(s) + beat, wait for 'ready'"):
                delete_queue(args.broker)
                procs.start(args, url, data_dir)
                procs.wait_ready(timeout=60)
                # Let beat's first idle scans run (each builds the desk in the pool process that
                # takes it); a pool process's first wake still parses the diagram, as in production.
                time.sleep(2 * args.scan_seconds + 1)
            run = run_escalations(desk, args, tpl, clones, procs)
            ok &= print_run(run, args, clones)
            in_process = wake_in_process(desk, clones)
            print_in_process(in_process, run, args.workers * args.concurrency)
        log(f"\nscan cost setup (workflow_instance emptied, then filled to each size; {args.reps} reps each)")
        template_for_scan(desk, tpl)
        scan_rows, plan = scan_costs(desk, args.sizes, args.scan_due, args.reps)
        print_scan(scan_rows, plan, args.scan_due, args.reps, args.scan_seconds)
    except KeyboardInterrupt:
        log("\ninterrupted; stopping the processes")
        return 130
    except Exception:
        traceback.print_exc()
        log(f"\nerror; worker and beat logs kept in {data_dir}")
        return 1
    finally:
        procs.stop()
    if not ok:
        log(f"\na check failed (see above); logs kept in {data_dir}")
        return 1
    shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
