"""Inbound mail throughput (issue 5): raw bytes to ticket + started instance, or follow-up delivered.

    python -m bench.mail                       # 10,000 messages, PG + RabbitMQ and SQLite, and the peer
    python -m bench.mail --quick               # smoke run: 500 messages, median of 3 runs
    python -m bench.mail --postgres postgresql+psycopg://postgres@127.0.0.1:5432/lanedesk_bench_mail \\
        --broker amqp://guest:guest@127.0.0.1:5672// --messages 10000 --workers 2 [--skip-peer]

Target: at least 300 messages/s on PostgreSQL (about 500/s was measured as the ceiling of a
comparable transaction, shared/notes/performance.md §3), and at least 4x django-helpdesk 2.6
importing the same messages with its `get_email` (which starts no workflow and no SLA clock).

Lanedesk, on PostgreSQL (its own database, schema rebuilt from the migrations for every run,
default groups and the bundled diagram deployed) and on the SQLite default (a temporary file),
through two pipelines:

* inline: ``store_raw`` + commit, then ``process_or_quarantine``, one message after the other
  in this process -- what `lanedesk ingest` does;
* celery: ``--workers`` `python -m tasks worker` processes (concurrency 1 each) are started and
  ready first; then this process ingests every message (``tasks.jobs.ingest``: store + commit +
  publish ``lanedesk.process_mail``) and the clock runs until no ``mail_message`` row is
  ``stored`` any more. RabbitMQ on PostgreSQL (the ``lanedesk`` queue deleted first), the
  embedded broker (kombu's SQLAlchemy transport on SQLite) on SQLite.

Inputs (the same bytes for every run):

* plain: generated messages (460-630 bytes, text/plain), 70 % opening a ticket, each from its own sender
  and with its own Message-ID, and 30 % replies (positions 3, 6 and 9 of every ten) from the
  requester of a random opening message at least max(50, count / 20) messages earlier
  (committed by then, even with parallel workers), threading by In-Reply-To/References, with a
  quoted "On ... wrote:" part. The first of those messages are all openings: 7,150 + 2,850 at
  10,000. Expected: exactly that many new tickets and follow-ups.
* corpus: shared/corpus/mail/mikel-mail as `lanedesk ingest` reads it, replicated to the same
  count; every copy gets an ``X-Bench-Copy`` header and its Message-ID rewritten (where it has
  one), so neither the content hash nor the Message-ID makes it a duplicate. Outcome counts and
  every quarantine reason are printed (Lanedesk must never stop: every message ends somewhere).

The peer: django-helpdesk 2.6 in its own virtualenv (bench/.peer-venv, created on first use with
pip), a minimal Django project (bench/helpdesk_peer/), its migrations on a fresh PostgreSQL
database (``helpdesk_bench``) and on SQLite, one Queue importing from a local directory.
The plain messages are written as files and `get_email` is timed -- the opening messages first,
then the replies (the directory is read in os.listdir order, so a reply would otherwise often
come before the message it answers). Then the corpus: each time its queue stops on a message it
cannot handle, the file and the error are noted, the file moved aside, and `get_email` rerun.

Also: one plain message in-process (wall, CPU of this process and of its PostgreSQL backend, SQL
statements by kind, a cProfile by layer and function): what bounds the rate; and the floor without
any database (parsing, the engine's start to the first wait with a recording fake of the desk,
saving the state), so the share that persistence takes is plain.

Prints a table and "target met / MISSED"; exits non-zero only when something fails (a database
or broker away, a pipeline that stops, the peer not running) or a check finds a wrong outcome:
a message left unprocessed, plain messages not all turned into the expected tickets and
follow-ups, or a message quarantined by no fault of its own (an IntegrityError from a race
between workers, say: a valid message must not need an operator).
"""

from __future__ import annotations

import argparse
import bisect
import cProfile
import json
import os
import pstats
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

from celery import Celery
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import make_url

from tasks.celery_app import create_celery
from tasks.jobs import ingest
from workflows import migrate
from workflows.app import Desk, build_desk
from workflows.bootstrap import deploy_bundled
from workflows.inbound import Envelope, process_or_quarantine, store_raw
from workflows.mailfiles import read_messages
from workflows.models import MailMessage
from workflows.settings import load_settings
from workflows.users import ensure_default_groups

from .__main__ import ensure_database
from .timers import (
    DEFAULT_BROKER,
    PG_OURS,
    CpuWindow,
    backend_pids,
    cpu_sample,
    cpu_window,
    delete_queue,
    layers_of,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/lanedesk_bench_mail"
DEFAULT_PEER_PG = "postgresql://postgres@127.0.0.1:5432/helpdesk_bench"
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "mail" / "mikel-mail"
PEER_VENV = REPO / "bench" / ".peer-venv"
PEER_DIR = REPO / "bench" / "helpdesk_peer"
PEER_REQUIREMENTS = ("django-helpdesk==2.6.*", "psycopg[binary]")

TARGET_RATE = 300.0  # messages/s on PostgreSQL
PEER_FACTOR = 4.0  # Lanedesk at least this many times django-helpdesk's rate
MAILBOX = "support@bench.example"
ENVELOPE = Envelope("file", mailbox=MAILBOX)  # what `lanedesk ingest --mailbox support@...` passes
SECRET = "bench-mail-" + "0123456789abcdef" * 3  # workers and this process sign alike
#: Positions (of every ten) that are replies: 30 %.
REPLY_SLOTS = (3, 6, 9)
#: A reply answers an opening message at least max(REPLY_DISTANCE, count / REPLY_SPREAD)
#: messages earlier, so that it is committed when the reply is processed, even by parallel
#: workers. 50 was not enough at 10,000 on the embedded broker: one worker waited 1.5 s on a
#: message while the other processed the next 50, among them a reply to it (a new ticket).
REPLY_DISTANCE, REPLY_SPREAD = 50, 20
#: Quarantine reasons that are not the message's fault (a race or the database), never expected.
NOT_THE_MESSAGES_FAULT = re.compile(r"IntegrityError|OperationalError|deadlock|could not serialize|StaleData")
#: Messages processed in-process for the profile (after a warm-up), then profiled.
PROFILE_TIMED, PROFILE_PROFILED, PROFILE_WARM = 200, 200, 20
#: A Celery run fails when no message left `stored` for this long.
STALL_SECONDS = 90.0


def log(message: str = "") -> None:
    print(message, flush=True)


@contextmanager
def stage(what: str) -> Iterator[None]:
    started = time.perf_counter()
    print(f"  {what} ...", end="", flush=True)
    yield
    print(f" {time.perf_counter() - started:.1f} s", flush=True)


# -- inputs -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Inputs:
    name: str  # plain | corpus
    messages: list[bytes]
    labels: list[str]  # per message: where it came from (corpus file, or new/reply)
    expect: Counter[str] | None  # exact outcome counts, when known


def plain_messages(count: int, *, seed: int = 5) -> Inputs:
    """``count`` generated messages: 70 % opening a ticket, 30 % replies to earlier ones."""
    rng = random.Random(seed)
    distance = max(REPLY_DISTANCE, count // REPLY_SPREAD)
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    openings: list[tuple[str, str, str]] = []  # (sender, subject, message id)
    positions: list[int] = []  # where each opening is in the sequence
    messages, labels = [], []
    for i in range(count):
        date = format_datetime(start + timedelta(seconds=7 * i))
        answerable = bisect.bisect_right(positions, i - distance)  # openings[:answerable]
        if i % 10 in REPLY_SLOTS and answerable:
            sender, subject, parent = openings[rng.randrange(answerable)]
            message_id = f"<reply-{i}@customer{i}.example>"
            body = (
                f"Thanks, but it still happens (attempt {i}). I restarted twice.\n\n"
                f"On Mon, 2 Mar 2026 at 09:00, Support <{MAILBOX}> wrote:\n"
                "> Could you restart the device and tell us if it helps?\n"
                "> Kind regards, Support\n"
            )
            head = f"Subject: Re: {subject}\nIn-Reply-To: {parent}\nReferences: {parent}\n"
            labels.append("reply")
        else:
            sender = f"customer{i}@customer{i % 97}.example"
            subject = f"Printer {i} prints blank pages"
            message_id = f"<open-{i}@customer{i}.example>"
            openings.append((sender, subject, message_id))
            positions.append(i)
            body = (
                f"Hello,\n\nsince this morning printer {i} on floor {i % 7} prints only blank pages.\n"
                "We changed the toner already. Could you have a look?\n\nBest regards,\nCustomer\n"
            )
            head = f"Subject: {subject}\n"
            labels.append("new")
        raw = (
            f"From: Customer {i} <{sender}>\nTo: Support <{MAILBOX}>\n{head}"
            f"Date: {date}\nMessage-ID: {message_id}\nMIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n"
            f"{body}"
        )
        messages.append(raw.replace("\n", "\r\n").encode())
    expect = Counter({"new tickets": labels.count("new"), "follow-ups": labels.count("reply")})
    return Inputs("plain", messages, labels, expect)


_MESSAGE_ID = re.compile(rb"^message-id[ \t]*:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*", re.IGNORECASE | re.MULTILINE)


def unique_copy(raw: bytes, copy: int, index: int) -> bytes:
    """``raw`` with an ``X-Bench-Copy`` header first and its Message-ID (if any) rewritten."""
    eol = b"\r\n" if b"\r\n" in raw[:4096] else b"\n"
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    cut = min(ends) if ends else len(raw)
    header = _MESSAGE_ID.sub(
        f"Message-ID: <copy{copy}-{index}@copies.bench.example>".encode(), raw[:cut], count=1
    )
    return f"X-Bench-Copy: {copy}-{index}".encode() + eol + header + raw[cut:]


def corpus_files(corpus: Path) -> list[tuple[str, bytes]]:
    """(label, bytes) of every message under ``corpus``, exactly as `lanedesk ingest` reads them."""
    return [(str(Path(label).relative_to(corpus)), raw) for label, raw in read_messages([corpus])]


def corpus_messages(corpus: Path, count: int) -> Inputs:
    base = corpus_files(corpus)
    messages, labels = [], []
    for i in range(count):
        copy, index = divmod(i, len(base))
        messages.append(unique_copy(base[index][1], copy, index))
        labels.append(base[index][0])
    return Inputs("corpus", messages, labels, None)


# -- Lanedesk ------------------------------------------------------------------------------------
def desk_env(url: str, data_dir: Path, broker: str | None) -> dict[str, str]:
    env = {
        "LANEDESK_DATABASE_URL": url,
        "LANEDESK_DATA_DIR": str(data_dir),
        "LANEDESK_MAILBOXES": MAILBOX,
        "LANEDESK_SECRET_KEY": SECRET,
    }
    if broker:
        env["LANEDESK_BROKER_URL"] = broker
    return env


def fresh_desk(url: str, data_dir: Path, broker: str | None) -> Desk:
    """An empty desk: schema from the migrations, default groups, the bundled diagram."""
    ensure_database(url)
    desk = build_desk(load_settings(desk_env(url, data_dir, broker)))
    if desk.engine.dialect.name == "postgresql":
        with desk.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    migrate.upgrade(desk.engine)
    with desk.unit_of_work() as session:
        ensure_default_groups(session)
    deploy_bundled(desk)
    return desk


@dataclass
class Run:
    seconds: float
    count: int
    outcomes: Counter[str]
    quarantined: Counter[tuple[str, str]]  # (corpus file, reason)
    ingest_seconds: float | None = None  # celery: store + publish of every message
    cpu: CpuWindow | None = None  # CPU per process group over the run
    load: float = 0.0  # the machine's 1-min load average just before the run (it may be shared)

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def outcomes(desk: Desk, inputs: Inputs) -> tuple[Counter[str], Counter[tuple[str, str]]]:
    """What became of every stored message (from the table: the same for both pipelines)."""
    kind = select(MailMessage.state, func.substr(MailMessage.decision, 1, 10))  # new ticket | follow-up
    quarantine = select(MailMessage.reason, func.substr(MailMessage.raw, 1, 60)).where(
        MailMessage.state == "quarantined"
    )
    counts: Counter[str] = Counter()
    reasons: Counter[tuple[str, str]] = Counter()
    with desk.unit_of_work(readonly=True) as session:
        for state, decision in session.execute(kind):
            if state == "processed":
                counts["new tickets" if (decision or "").startswith("new ticket") else "follow-ups"] += 1
            else:
                counts[state] += 1
        for reason, head in session.execute(quarantine):
            found = re.match(rb"X-Bench-Copy: \d+-(\d+)", bytes(head))  # copy-index of the corpus file
            label = inputs.labels[int(found.group(1))] if found else "?"  # copy 0 is at its index
            reasons[(label, (reason or "").splitlines()[0][:160] if reason else "")] += 1
    return counts, reasons


def run_inline(desk: Desk, inputs: Inputs) -> Run:
    """`lanedesk ingest`: store + commit, then process (or quarantine), one message at a time."""
    duplicates = 0
    pg = backend_pids(desk) if desk.engine.dialect.name == "postgresql" else set()
    before = cpu_sample()
    started = time.perf_counter()
    for raw in inputs.messages:
        with desk.unit_of_work() as session:
            stored = store_raw(session, raw, ENVELOPE, now=desk.clock())
        if stored.duplicate:
            duplicates += 1
            continue
        process_or_quarantine(desk.sessions, desk.settings, stored.id, now=desk.clock())
    seconds = time.perf_counter() - started
    cpu = cpu_window(before, cpu_sample(), {}, pg)
    counts, reasons = outcomes(desk, inputs)
    if duplicates:
        counts["duplicate (same bytes)"] += duplicates
    return Run(seconds, len(inputs.messages), counts, reasons, cpu=cpu)


@dataclass
class Workers:
    """The `python -m tasks worker` processes we started, each in its own session."""

    log_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, count: int, env: dict[str, str]) -> None:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("LANEDESK_")}
        full = {
            **inherited,
            **env,
            "LANEDESK_WORKER_CONCURRENCY": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        for i in range(count):
            out = (self.log_dir / f"worker{i + 1}.log").open("wb")
            self.logs.append(out)
            command = [sys.executable, "-m", "tasks", "worker", "--hostname", f"mail{i + 1}@%h"]
            self.processes.append(
                subprocess.Popen(
                    command, env=full, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            paths = [self.log_dir / f"worker{i + 1}.log" for i in range(len(self.processes))]
            if all(" ready." in p.read_text(errors="replace") for p in paths):
                return
            time.sleep(0.2)
        raise RuntimeError(f"workers not ready after {timeout:.0f} s\n{self.tails()}")

    def check(self) -> None:
        for i, process in enumerate(self.processes):
            if process.poll() is not None:
                raise RuntimeError(f"worker {i + 1} exited with {process.returncode}\n{self.tails()}")

    def tails(self, lines: int = 20) -> str:
        out = []
        for path in sorted(self.log_dir.glob("worker*.log")):
            out.append(f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    def errors(self) -> list[str]:
        """Lines of the worker logs that report a failure or a retry."""
        found = []
        for path in sorted(self.log_dir.glob("worker*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if re.search(r"\b(ERROR|CRITICAL|Traceback|Retry in)\b", line):
                    found.append(f"{path.name}: {line[:200]}")
        return found

    def stop(self, grace: float = 20.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes:
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
        self.processes, self.logs = [], []


def waiting(desk: Desk) -> int:
    with desk.unit_of_work(readonly=True) as session:
        return int(
            session.scalar(select(func.count()).select_from(MailMessage).where(MailMessage.state == "stored"))
            or 0
        )


def run_celery(desk: Desk, inputs: Inputs, env: dict[str, str], workers: Workers, count: int) -> Run:
    """Workers ready; then ingest everything (store + publish) and wait until nothing is `stored`."""
    if not desk.settings.embedded_broker:
        delete_queue(desk.settings.broker_url)
    app: Celery = create_celery(desk.settings)
    try:
        # Declared here first: workers starting together on a fresh embedded broker race to
        # create its `lanedesk` row (kombu_queue.name is UNIQUE) and one of them exits.
        with app.connection_for_write() as conn:
            for queue in app.conf.task_queues:
                queue.bind(conn.default_channel).declare()
        workers.start(count, env)
        workers.wait_ready()
        sessions = {p.pid: "celery workers" for p in workers.processes}
        before = cpu_sample()
        started = time.perf_counter()
        for raw in inputs.messages:
            stored = ingest(app, desk, raw, ENVELOPE)
            if stored.duplicate:
                raise RuntimeError(f"message stored as a duplicate of mail {stored.id}: inputs not unique")
        ingested = time.perf_counter() - started
        left, changed = waiting(desk), time.monotonic()
        while left:
            time.sleep(0.1)
            workers.check()
            now_left = waiting(desk)
            if now_left != left:
                left, changed = now_left, time.monotonic()
            elif time.monotonic() - changed > STALL_SECONDS:
                raise RuntimeError(
                    f"{left} message(s) still stored after {STALL_SECONDS:.0f} s without progress\n"
                    f"{workers.tails()}"
                )
        seconds = time.perf_counter() - started
        after = cpu_sample()
        pg = backend_pids(desk) if desk.engine.dialect.name == "postgresql" else set()
        cpu = cpu_window(before, after, sessions, pg)
    finally:
        with suppress(Exception):
            app.close()
        workers.stop()
    counts, reasons = outcomes(desk, inputs)
    return Run(seconds, len(inputs.messages), counts, reasons, ingest_seconds=ingested, cpu=cpu)


@dataclass
class Case:
    database: str  # PostgreSQL | SQLite
    pipeline: str  # inline | celery
    inputs: str  # plain | corpus
    runs: list[Run] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(r.rate for r in self.runs)


def check(case: Case, inputs: Inputs) -> list[str]:
    """What is wrong with the outcomes of ``case`` (empty: nothing)."""
    problems = []
    for i, run in enumerate(case.runs, 1):
        total = sum(run.outcomes.values())
        where = f"{case.database} {case.pipeline} {case.inputs} run {i}"
        if run.outcomes.get("stored"):
            problems.append(f"{where}: {run.outcomes['stored']} message(s) never processed")
        if total != len(inputs.messages):
            problems.append(f"{where}: {total} outcomes for {len(inputs.messages)} messages")
        if inputs.expect is not None and +run.outcomes != +inputs.expect:
            problems.append(
                f"{where}: outcomes {dict(run.outcomes)}, expected {dict(inputs.expect)} (celery: a reply "
                "processed before the message it answers opens a new ticket; see REPLY_DISTANCE)"
            )
        for (label, reason), n in sorted(run.quarantined.items()):
            if NOT_THE_MESSAGES_FAULT.search(reason):
                problems.append(f"{where}: {n} x {label} quarantined by no fault of its own: {reason}")
    return problems


def measure(
    database: str,
    url: str,
    broker: str,
    pipeline: str,
    inputs: Inputs,
    runs: int,
    workers: Workers,
    worker_count: int,
    scratch: Path,
) -> Case:
    case = Case(database, pipeline, inputs.name)
    for i in range(runs):
        data_dir = Path(
            tempfile.mkdtemp(prefix=f"{database[:2].lower()}-{pipeline}-{inputs.name}-", dir=scratch)
        )
        db_url = url or f"sqlite:///{data_dir / 'lanedesk.db'}"
        desk = fresh_desk(db_url, data_dir, broker or None)
        load = os.getloadavg()[0]
        try:
            if pipeline == "inline":
                run = run_inline(desk, inputs)
            else:
                workers.log_dir = data_dir
                run = run_celery(
                    desk, inputs, desk_env(db_url, data_dir, broker or None), workers, worker_count
                )
        finally:
            desk.engine.dispose()
        run.load = load
        case.runs.append(run)
        extra = ""
        if run.ingest_seconds is not None:
            extra = f"; ingest (store + publish) {run.count / run.ingest_seconds:,.0f}/s"
        log(
            f"    run {i + 1}: {run.count:,} in {run.seconds:.1f} s = {run.rate:,.0f}/s{extra}; "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(run.outcomes.items()))
            + f" (load before {load:.1f})"
        )
    return case


# -- profile one message in-process ---------------------------------------------------------------
PARTS = [
    ("store_raw + its commit", "bench/mail.py", "_bench_store"),
    ("process_or_quarantine (all below + its commit)", "workflows/inbound.py", "process_or_quarantine"),
    ("parse (workflows/mailparse.py)", "workflows/mailparse.py", "parse"),
    ("_thread: reply token, In-Reply-To, subject tag", "workflows/inbound.py", "_thread"),
    ("open_ticket (ticket + workflow started + SLA)", "workflows/tickets.py", "open_ticket"),
    ("record_customer_message (follow-up delivered)", "workflows/tickets.py", "record_customer_message"),
    ("Session.commit (flush + COMMIT)", "sqlalchemy/orm/session.py", "commit"),
]


@dataclass
class Profile:
    database: str
    wall_ms: list[float]
    cpu_ms: float  # this process, per message
    pg_cpu_ms: float  # its PostgreSQL backend, per message (0 on SQLite)
    statements: float
    sql_ms: float
    by_kind: list[tuple[str, float]]  # statements per message by verb and table
    layers: list[tuple[str, float]]
    breakdown: list[tuple[str, float]]
    top: list[tuple[str, float, float]]


def statement_kind(statement: str) -> str:
    """``SELECT ticket``, ``INSERT audit_event``, ...: the verb and the first table named."""
    words = statement.split(None, 1)
    verb = words[0].upper() if words else "?"
    table = re.search(r"\b(?:FROM|INTO|UPDATE)\s+\"?(\w+)", statement, re.IGNORECASE)
    return f"{verb} {table.group(1) if table else ''}".strip()


def profile_in_process(url: str, scratch: Path) -> Profile:
    """The cost of one plain message in this process: wall, CPU (ours + PG backend), SQL, cProfile."""
    data_dir = Path(tempfile.mkdtemp(prefix="profile-", dir=scratch))
    db_url = url or f"sqlite:///{data_dir / 'lanedesk.db'}"
    desk = fresh_desk(db_url, data_dir, None)
    inputs = plain_messages(PROFILE_WARM + PROFILE_TIMED + PROFILE_PROFILED, seed=11)
    messages = inputs.messages

    def _bench_store(raw: bytes) -> int:  # named so the profile can find it (see PARTS)
        with desk.unit_of_work() as session:
            return store_raw(session, raw, ENVELOPE, now=desk.clock()).id

    def one(raw: bytes) -> None:
        process_or_quarantine(desk.sessions, desk.settings, _bench_store(raw), now=desk.clock())

    for raw in messages[:PROFILE_WARM]:
        one(raw)
    timed = messages[PROFILE_WARM : PROFILE_WARM + PROFILE_TIMED]
    pg = backend_pids(desk) if desk.engine.dialect.name == "postgresql" else set()
    sql: list[float] = []
    started_at: list[float] = []

    kinds: Counter[str] = Counter()

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        kinds[statement_kind(statement)] += 1
        started_at.append(time.perf_counter())

    def after(*_: Any) -> None:
        sql.append(time.perf_counter() - started_at.pop())

    event.listen(desk.engine, "before_cursor_execute", before)
    event.listen(desk.engine, "after_cursor_execute", after)
    first = cpu_sample()
    wall = []
    try:
        for raw in timed:
            t0 = time.perf_counter()
            one(raw)
            wall.append((time.perf_counter() - t0) * 1000)
    finally:
        event.remove(desk.engine, "before_cursor_execute", before)
        event.remove(desk.engine, "after_cursor_execute", after)
    cpu = cpu_window(first, cpu_sample(), {}, pg)
    profiler = cProfile.Profile(time.process_time)
    for raw in messages[PROFILE_WARM + PROFILE_TIMED :]:
        profiler.enable()
        one(raw)
        profiler.disable()
    desk.engine.dispose()
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    whole = sum(v[3] for (_, _, name), v in stats.items() if name == "one")
    breakdown = []
    for label, file_end, name in PARTS:
        matches = [v[3] for (file, _, fn), v in stats.items() if fn == name and file.endswith(file_end)]
        breakdown.append((label, 100 * max(matches, default=0.0) / whole))
    layers = sorted(((k, 100 * v / whole) for k, v in layers_of(stats).items()), key=lambda kv: -kv[1])
    by_own = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:12]
    top = [
        (f"{Path(file).parent.name}/{Path(file).name}:{line} {fn}", 100 * v[2] / whole, 100 * v[3] / whole)
        for (file, line, fn), v in by_own
    ]
    n = len(timed)
    return Profile(
        "PostgreSQL" if pg else "SQLite",
        wall,
        1000 * cpu.seconds.get("bench (this process)", 0.0) / n,
        1000 * cpu.seconds.get(PG_OURS, 0.0) / n,
        len(sql) / n,
        1000 * sum(sql) / n,
        [(kind, count / n) for kind, count in kinds.most_common()],
        layers,
        breakdown,
        top,
    )


# -- the peer: django-helpdesk 2.6 ------------------------------------------------------------------
def peer_python() -> Path:
    return PEER_VENV / "bin" / "python"


def ensure_peer_venv() -> str:
    """bench/.peer-venv with django-helpdesk 2.6 (created with pip on first use); its versions."""
    python = peer_python()
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *PEER_REQUIREMENTS],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    version = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m; print(m.version('django-helpdesk'), m.version('django'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return f"django-helpdesk {version[0]} on Django {version[1]}"


def _peer_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("LANEDESK_", "PYTHON", "VIRTUAL_ENV"))}


def peer(command: str, db: str, mail_dir: Path, log_file: Path, timeout: float = 3600) -> dict[str, Any]:
    """One run_peer.py command in the peer's virtualenv; its JSON answer."""
    out = subprocess.run(
        [
            str(peer_python()),
            str(PEER_DIR / "run_peer.py"),
            command,
            "--db",
            db,
            "--mail-dir",
            str(mail_dir),
            "--log",
            str(log_file),
        ],
        capture_output=True,
        text=True,
        cwd=PEER_DIR,
        env=_peer_env(),
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"run_peer.py {command} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@dataclass
class PeerRun:
    seconds: float
    cpu_seconds: float  # of its process, inside get_email
    count: int
    tickets: int
    follow_ups: int
    left: int
    failed: bool

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def write_files(directory: Path, messages: list[tuple[str, bytes]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, raw in messages:
        (directory / name).write_bytes(raw)


def peer_plain(db: str, inputs: Inputs, scratch: Path) -> PeerRun:
    """A fresh peer database; `get_email` over the opening messages, then over the replies."""
    work = Path(tempfile.mkdtemp(prefix="peer-", dir=scratch))
    mail_dir, log_file = work / "mail", work / "helpdesk.log"
    mail_dir.mkdir()
    peer("setup", db, mail_dir, log_file)
    seconds, cpu, tickets, follow_ups, left, failed = 0.0, 0.0, 0, 0, 0, False
    for kind in ("new", "reply"):
        write_files(
            mail_dir,
            [
                (f"{i:06d}.eml", raw)
                for i, (raw, label) in enumerate(zip(inputs.messages, inputs.labels, strict=True))
                if label == kind
            ],
        )
        result = peer("run", db, mail_dir, log_file)
        seconds += float(result["seconds"])
        cpu += float(result["cpu_seconds"])
        tickets += int(result["tickets"])
        follow_ups += int(result["follow_ups"])
        left += int(result["left"])
        failed |= bool(result["queue_failed"])
        for leftover in mail_dir.iterdir():  # not to be offered again with the replies
            leftover.unlink()
    return PeerRun(seconds, cpu, len(inputs.messages), tickets, follow_ups, left, failed)


def peer_corpus(db: str, corpus: Path, scratch: Path) -> dict[str, Any]:
    """The original corpus files, flat in one directory; `get_email` until it gets through."""
    work = Path(tempfile.mkdtemp(prefix="peer-corpus-", dir=scratch))
    mail_dir, log_file = work / "mail", work / "helpdesk.log"
    files = [p for p in sorted(corpus.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    write_files(mail_dir, [(str(p.relative_to(corpus)).replace("/", "__"), p.read_bytes()) for p in files])
    peer("setup", db, mail_dir, log_file)
    return peer("corpus", db, mail_dir, log_file)


# -- report ------------------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "target met" if ok else "target MISSED"


def print_case_details(case: Case, inputs: Inputs) -> None:
    run = case.runs[0]
    if run.quarantined:
        log(f"   quarantined in {case.database} {case.pipeline} (run 1), by corpus file and reason:")
        for (label, reason), n in sorted(run.quarantined.items()):
            log(f"     {n:>5} x {label}: {reason}")
    cpu = run.cpu
    if cpu is not None:
        groups = ", ".join(
            f"{name} {cpu.share(name):.0f}% ({1000 * cpu.seconds[name] / run.count:.2f} ms/msg)"
            for name in sorted(cpu.seconds, key=lambda g: -cpu.seconds[g])
            if cpu.share(name) >= 1
        )
        log(
            f"   CPU over run 1, % of one core and CPU ms per message ({os.cpu_count()} cores, "
            f"{cpu.busy:.0f}% busy): {groups}"
        )


def print_profile(p: Profile) -> None:
    median = statistics.median(p.wall_ms)
    cpu = p.cpu_ms + p.pg_cpu_ms
    cores = os.cpu_count() or 1
    log(
        f"\n== One plain message in-process on {p.database} (store + process, 70/30 new/reply): "
        f"{len(p.wall_ms)} timed"
    )
    log(
        f"   wall: median {median:.2f} ms (min {min(p.wall_ms):.2f}, max {max(p.wall_ms):.2f}) "
        f"-> {1000 / median:,.0f}/s in one process"
    )
    log(
        f"   CPU per message: {p.cpu_ms:.2f} ms here + {p.pg_cpu_ms:.2f} ms in its PostgreSQL backend = "
        f"{cpu:.2f} ms -> at most {1000 * cores / cpu:,.0f}/s on {cores} cores if nothing else ran"
    )
    log(f"   SQL: {p.statements:.1f} statements per message, {p.sql_ms:.2f} ms (wall) inside cursor.execute:")
    log("     " + ", ".join(f"{kind} {count:.1f}" for kind, count in p.by_kind if count >= 0.05))
    log(f"   cProfile on CPU time, {PROFILE_PROFILED} messages; own CPU by layer (sums to 100%):")
    log("     " + ", ".join(f"{label} {share:.0f}%" for label, share in p.layers if share >= 0.5))
    log("   cumulative, % of one message (callees included, so rows overlap):")
    for label, share in p.breakdown:
        log(f"     {label:<52} {share:>4.0f}%")
    log("   functions with the most own CPU (own / cumulative, % of one message):")
    for name, own, cumulative in p.top:
        log(f"     {own:>4.1f}% / {cumulative:>5.1f}%  {name}")


def floors() -> dict[str, float]:
    """CPU ms (best of 5 rounds) of the work a message needs whatever the database: parsing it,
    running the bundled lifecycle to its first wait with the engine tests' recording fake of the
    desk operations (no SQL), and saving/loading that state. What is left of a message's cost
    is persistence: SQL, the ORM, the desk operations' bookkeeping."""
    from engine.runtime import Definition, Instance
    from tests.engine.fake_desk import FakeDesk
    from workflows.mailparse import parse

    definition = Definition.parse(
        (REPO / "bpmn" / "ticket_lifecycle.bpmn").read_bytes(), "ticket_lifecycle.bpmn", "ticket_lifecycle"
    )
    when = datetime(2026, 3, 2, 9, tzinfo=UTC)

    def start() -> Instance:
        functions = FakeDesk(when).functions()
        return Instance.start(definition, data={"ticket_number": 1001}, now=when, functions=functions)[0]

    messages = plain_messages(300, seed=3).messages
    state = start().dump()

    def best(work: Any, n: int = 300) -> float:
        rounds = []
        for _ in range(5):
            began = time.process_time()
            for i in range(n):
                work(i)
            rounds.append((time.process_time() - began) * 1000 / n)
        return min(rounds)

    return {
        "parse a plain message": best(lambda i: parse(messages[i], max_attachment_bytes=10**7)),
        "start the lifecycle to its first wait (no SQL)": best(lambda i: start()),
        "save its state (dump)": best(lambda i: Instance.load(definition, state).dump())
        - best(lambda i: Instance.load(definition, state)),
        "load its state": best(lambda i: Instance.load(definition, state)),
    }


def print_floors(found: dict[str, float]) -> None:
    log("\n== Without the database: CPU per message of the work any design must do (best of 5 rounds)")
    for label, ms in found.items():
        log(f"     {label:<52} {ms:6.2f} ms")
    opening = found["parse a plain message"] + found["start the lifecycle to its first wait (no SQL)"]
    opening += found["save its state (dump)"]
    log(
        f"     a new ticket: {opening:.2f} ms -> {2000 / opening:,.0f}/s on 2 cores before any SQL; "
        "300/s on 2 cores leaves 6.7 ms per message for everything (our process and PostgreSQL's)"
    )


def print_table(cases: list[Case], peers: dict[str, list[PeerRun]], messages: int, workers: int) -> bool:
    log(f"\n== Summary: messages/s, {messages:,} messages per run (median of the runs)")
    log(
        f"   {'database':<10} {'pipeline':<22} {'input':<7} {'msgs/s':>8} {'runs':>5} "
        f"{'vs 300/s':>9} {'vs peer':>8}"
    )
    ok = True
    for case in cases:
        pipeline = "inline (1 process)" if case.pipeline == "inline" else f"celery ({workers} workers)"
        peer_runs = peers.get(case.database)
        vs_peer = ""
        if peer_runs and case.inputs == "plain":
            vs_peer = f"{case.rate / statistics.median(r.rate for r in peer_runs):.1f}x"
        vs_target = f"{case.rate / TARGET_RATE:.2f}x"
        log(
            f"   {case.database:<10} {pipeline:<22} {case.inputs:<7} {case.rate:>8,.0f} {len(case.runs):>5} "
            f"{vs_target:>9} {vs_peer:>8}"
        )
    for database, runs in peers.items():
        rate = statistics.median(r.rate for r in runs)
        log(
            f"   {database:<10} {'django-helpdesk 2.6':<22} {'plain':<7} {rate:>8,.0f} {len(runs):>5} "
            f"{rate / TARGET_RATE:>8.2f}x {'1.0x':>8}"
        )
    log("\n   CPU per message of the importing process (one process each; the machine may be shared):")
    for database, runs in peers.items():
        peer_ms = statistics.median(1000 * r.cpu_seconds / r.count for r in runs)
        for case in cases:
            if case.database == database and case.inputs == "plain" and case.pipeline == "inline":
                ours = statistics.median(
                    1000 * r.cpu.seconds.get("bench (this process)", 0.0) / r.count
                    for r in case.runs
                    if r.cpu
                )
                log(
                    f"   {database}: Lanedesk inline {ours:.1f} ms, django-helpdesk get_email "
                    f"{peer_ms:.1f} ms (database server CPU not included)"
                )
    log("")
    for case in cases:
        if case.database == "PostgreSQL":
            met = case.rate >= TARGET_RATE
            log(
                f"   >= {TARGET_RATE:.0f}/s on PostgreSQL, {case.pipeline}, {case.inputs}: "
                f"{case.rate:,.0f}/s -- {verdict(met)}"
            )
    for database, runs in peers.items():
        peer_rate = statistics.median(r.rate for r in runs)
        for case in cases:
            if case.database == database and case.inputs == "plain":
                ratio = case.rate / peer_rate
                log(
                    f"   >= {PEER_FACTOR:.0f}x django-helpdesk on {database}, {case.pipeline}: "
                    f"{case.rate:,.0f} / {peer_rate:,.0f} = {ratio:.1f}x -- {verdict(ratio >= PEER_FACTOR)}"
                )
    return ok


def print_peer_corpus(database: str, result: dict[str, Any]) -> None:
    stops = result["stops"]
    log(f"\n== django-helpdesk on the corpus ({database}): {result['files']} files")
    if not stops:
        log("   got through every file in one get_email run")
    else:
        first = stops[0]
        log(
            f"   first get_email run: stopped at file {first['position']} of {first['of']} "
            "(os.listdir order), "
            f"{first['file'].replace('__', '/')}: {first['error']}; "
            f"{result['runs'][0]['tickets']} ticket(s) made before it, "
            f"{first['left']} file(s) left unprocessed"
        )
        log(f"   moving each such file aside and running again, it stopped {len(stops)} time(s) in all:")
        for stop in stops:
            log(f"     {stop['file'].replace('__', '/'):<55} {stop['error'][:110]}")
    log(
        f"   in all: {result['tickets']} tickets and {result['follow_ups']} follow-ups "
        f"from {result['files']} files; "
        f"{len(result['left_in_dir'])} left in the directory (not 'successfully processed')"
    )
    for name in result["left_in_dir"][:10]:
        log(f"     left: {name.replace('__', '/')}")


# -- main ----------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mail", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--postgres", default=DEFAULT_PG, help="PostgreSQL URL, its schema rebuilt ('' to skip)"
    )
    parser.add_argument(
        "--broker", default=DEFAULT_BROKER, help="RabbitMQ URL (the 'lanedesk' queue is deleted)"
    )
    parser.add_argument(
        "--peer-postgres", default=DEFAULT_PEER_PG, help="the peer's PostgreSQL database (dropped)"
    )
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="directory of real messages")
    parser.add_argument("--messages", type=int, default=10_000, help="messages per input and run")
    parser.add_argument("--runs", type=int, help="runs per case (default: 3 with --quick, else 1)")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes (concurrency 1 each)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 500 messages, median of 3 runs")
    parser.add_argument("--skip-peer", action="store_true", help="do not run django-helpdesk")
    parser.add_argument("--skip-celery", action="store_true", help="only the inline pipeline")
    parser.add_argument("--skip-profile", action="store_true", help="no in-process profile")
    parser.add_argument("--only", choices=["postgres", "sqlite"], help="one database only")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages = min(args.messages, 500)
    args.runs = args.runs or (3 if args.quick else 1)
    if args.messages < 10 or args.runs < 1 or args.workers < 1:
        parser.error("--messages must be at least 10, --runs and --workers at least 1")
    return args


def revision() -> str:
    """The commit measured (and whether the work tree differs from it): code moves between runs."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return f"commit {head}" + (" + uncommitted changes" if dirty else "")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM: clean up as on Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    scratch = Path(tempfile.mkdtemp(prefix="lanedesk-bench-mail-"))
    workers = Workers(scratch)
    problems: list[str] = []
    databases: list[tuple[str, str, str]] = []  # (name, Lanedesk URL, broker)
    if args.postgres and args.only != "sqlite":
        databases.append(("PostgreSQL", args.postgres, args.broker))
    if args.only != "postgres":
        databases.append(("SQLite", "", ""))
    try:
        pg = make_url(args.postgres).render_as_string(hide_password=True) if args.postgres else "none"
        log(
            f"bench.mail: {args.messages:,} messages per run, {args.runs} run(s) per case, {args.workers} "
            f"worker(s); PostgreSQL {pg}, broker {args.broker.rsplit('@', 1)[-1]}; {os.cpu_count()} cores; "
            f"{revision()}; scratch {scratch}"
        )
        inputs = [plain_messages(args.messages)]
        new, replies = inputs[0].expect["new tickets"], inputs[0].expect["follow-ups"]  # type: ignore[index]
        log(
            f"  plain: {new:,} opening messages + {replies:,} replies "
            "(In-Reply-To/References to an earlier opening)"
        )
        if args.corpus.is_dir():
            base = corpus_files(args.corpus)
            inputs.append(corpus_messages(args.corpus, args.messages))
            log(
                f"  corpus: {len(base)} messages from {args.corpus} "
                "(as `lanedesk ingest` reads them), replicated"
            )
        else:
            log(f"  corpus: {args.corpus} not found, skipped")
        cases: list[Case] = []
        pipelines = ["inline"] + ([] if args.skip_celery else ["celery"])
        for database, url, broker in databases:
            for pipeline in pipelines:
                for batch in inputs:
                    log(f"\n{database}, {pipeline}, {batch.name}:")
                    case = measure(
                        database, url, broker, pipeline, batch, args.runs, workers, args.workers, scratch
                    )
                    cases.append(case)
                    problems += check(case, batch)
                    print_case_details(case, batch)
        profile = None
        if not args.skip_profile and databases:
            log("\nprofile")
            profile = profile_in_process(databases[0][1], scratch)
            print_profile(profile)
            print_floors(floors())
        peers: dict[str, list[PeerRun]] = {}
        if not args.skip_peer:
            log("\ndjango-helpdesk (the peer)")
            with stage(f"virtualenv {PEER_VENV.relative_to(REPO)}"):
                version = ensure_peer_venv()
            log(f"  {version}, Python of {peer_python()}")
            peer_dbs = []
            if args.only != "sqlite" and args.postgres:
                peer_dbs.append(("PostgreSQL", args.peer_postgres))
            if args.only != "postgres":
                peer_dbs.append(("SQLite", ""))
            for database, db in peer_dbs:
                log(f"\n{database}, django-helpdesk get_email, plain (openings, then replies):")
                runs = []
                for i in range(args.runs):
                    work_db = db or f"sqlite:///{scratch / f'peer-{i}.db'}"
                    load = os.getloadavg()[0]
                    run = peer_plain(work_db, inputs[0], scratch)
                    runs.append(run)
                    log(
                        f"    run {i + 1}: {run.count:,} in {run.seconds:.1f} s = {run.rate:,.0f}/s "
                        f"(its process: {1000 * run.cpu_seconds / run.count:.1f} ms CPU per message; "
                        f"load before {load:.1f}); "
                        f"{run.tickets:,} tickets, {run.follow_ups:,} follow-ups, {run.left} file(s) left"
                        + ("; its queue STOPPED" if run.failed else "")
                    )
                    if run.tickets != new or run.follow_ups != replies or run.failed:
                        log(f"    (the peer did not take every message as expected: {new:,} + {replies:,})")
                peers[database] = runs
                if args.corpus.is_dir():
                    print_peer_corpus(
                        database,
                        peer_corpus(db or f"sqlite:///{scratch / 'peer-corpus.db'}", args.corpus, scratch),
                    )
        print_table(cases, peers, args.messages, args.workers)
    except KeyboardInterrupt:
        log("\ninterrupted; stopping the workers")
        return 130
    except Exception:
        traceback.print_exc()
        log(f"\nerror; logs kept in {scratch}")
        return 1
    finally:
        workers.stop()
    if problems:
        log("\nchecks failed:")
        for problem in problems:
            log(f"   {problem}")
        log(f"logs kept in {scratch}")
        return 1
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
