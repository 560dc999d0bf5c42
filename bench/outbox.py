"""Outgoing mail (issue 6): mails/s delivered to a local sink, and what the outbox row costs the step.

    python -m bench.outbox                  # 2,000 mails per run, 3 runs, PG + RabbitMQ and SQLite
    python -m bench.outbox --quick          # smoke run: 200 mails per run, 3 runs, fewer A/B samples
    python -m bench.outbox --postgres postgresql+psycopg://postgres@127.0.0.1:5432/lanedesk_bench_outbox \\
        --broker amqp://guest:guest@127.0.0.1:5672// --mails 2000 --runs 3 --workers 2 --ab-samples 300

1. Outbound mails per second delivered to a local sink with two workers. For every run, a fresh
   database (PostgreSQL: its own database, schema rebuilt from the migrations; SQLite: a new
   file), default groups, one Tier 1 agent and the bundled diagram. ``--mails`` outbox rows are
   made through the real services: tickets opened with ``open_ticket`` (each from its own
   sender, so its acknowledgement is queued, not held back by RFC 3834's once-a-week rule),
   then three ``reply_as_agent`` per ticket (one unit of work per ticket): 1 acknowledgement + 3
   agent replies per ticket, every row ``queued`` and not yet rendered. The sink is aiosmtpd in
   a separate process (``python -m bench.outbox sink PORT FILE``: it appends each accepted
   message's Message-ID to FILE and answers 250), so it shares no GIL with anything measured.

   * workers: ``--workers`` ``python -m tasks worker`` processes (concurrency 1 each,
     LANEDESK_SMTP_URL=smtp://127.0.0.1:PORT) are started and ready first; then the clock
     starts, ``tasks.jobs.dispatch_outbox`` publishes one ``lanedesk.deliver_mail`` per row
     (called until every row is handed out: it leases at most 1,000 rows a call), and this process
     polls the database every 50 ms until every row is ``sent`` with the server's answer and
     the sink has counted as many messages. RabbitMQ on PostgreSQL (its ``lanedesk`` queue
     deleted first), the embedded broker (kombu's SQLAlchemy transport on SQLite) on SQLite.
   * in-process: the same rows put back to ``queued`` (unrendered) afterwards, then
     ``workflows.outbox.deliver`` for each id in a loop in this process, one SMTP connection at
     a time, with the time of ``compose`` (rendering) and of the SMTP conversation taken apart.

   Checks, per run: every row ``sent`` with the server's answer; the sink got exactly one
   message per row (as many lines as rows, as many distinct Message-IDs, and the same set as
   the rows'). CPU per process group from /proc (workers, sink, PostgreSQL backends, RabbitMQ).

2. The added cost of the outbox row to the step that writes it. On one fresh database, the
   bundled diagram and a copy with its ``send_template("acknowledgement")`` line removed,
   deployed under the process id ``ticket_lifecycle_noack``; ``open_ticket`` (the whole unit of
   work, commit included) timed alternately with each (ABAB, then BABA), each ticket from its own
   sender, after a warm-up; the median per run, the median of the runs. Also ``queue_mail`` alone
   (``--queue-calls`` calls in one transaction, flushed, rolled back; an acknowledgement, which
   runs the loop and ceiling checks, and an agent reply, which runs none), and the SQL
   statements of each step. Rendering is not in the step: it happens at the first delivery
   attempt, so its cost (``compose``, median per mail by template) comes from part 1's
   in-process runs.

Prints tables with medians and ratios; exits non-zero only when something fails (a database,
broker or worker away, a run that stalls) or a check finds a wrong outcome: a row not sent, a
mail missing at the sink or arriving twice.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import case, event, func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from tasks.celery_app import create_celery
from tasks.jobs import dispatch_outbox
from workflows import migrate
from workflows.app import Desk, build_desk
from workflows.bootstrap import deploy_bundled
from workflows.definitions import deploy_definition
from workflows.models import OutboxMessage, Ticket
from workflows.outbox import Delivery, deliver, queue_mail
from workflows.outmail import compose
from workflows.settings import Settings, load_settings
from workflows.tickets import open_ticket, reference, reply_as_agent
from workflows.transports import transport_for
from workflows.users import add_user, ensure_default_groups

from .__main__ import ensure_database
from .mail import Workers, log, revision, stage
from .timers import (
    DEFAULT_BROKER,
    ELSE,
    CpuWindow,
    backend_pids,
    cpu_sample,
    cpu_window,
    delete_queue,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/lanedesk_bench_outbox"
MAIL_DOMAIN = "desk.bench.example"
MAILBOX = f"support@{MAIL_DOMAIN}"
AGENT = "agent@bench.example"
SECRET = "bench-outbox-" + "0123456789abcdef" * 3  # workers and this process sign alike
#: Rows per ticket: its acknowledgement and three agent replies.
ROWS_PER_TICKET = 4
NOACK_PROCESS = "ticket_lifecycle_noack"
ACK_LINE = 'send_template("acknowledgement")\n'
POLL_SECONDS = 0.05
#: A run fails when neither the rows nor the sink moved for this long.
STALL_SECONDS = 60.0
#: A/B: steps per variant discarded first (definition cache, statement caches, pool).
AB_WARMUP = 20
SINK_ANSWER = "250 2.0.0 Ok: kept"
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


# -- the sink (its own process) -----------------------------------------------------------------
class _CountingHandler:
    """Accepts everything; appends each message's Message-ID (``-`` if none) to a file."""

    def __init__(self, out: IO[str]):
        self.out = out

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.original_content or envelope.content
        found = _MESSAGE_ID.search(content.split(b"\r\n\r\n", 1)[0])
        self.out.write((found.group(1).decode("ascii", "replace") if found else "-") + "\n")
        self.out.flush()  # written before the 250: once a client has its answer, the line is there
        return SINK_ANSWER


def serve_sink(port: int, path: Path) -> int:
    """`python -m bench.outbox sink PORT FILE`: an SMTP sink on 127.0.0.1:PORT until SIGTERM."""
    from aiosmtpd.controller import Controller

    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # the server's thread inherits the mask
    with path.open("a", encoding="ascii") as out:
        controller = Controller(
            _CountingHandler(out), hostname="127.0.0.1", port=port, server_hostname="sink.bench.example"
        )
        controller.start()
        try:
            signal.sigwait(stop)
        finally:
            controller.stop()
    return 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class SinkProcess:
    port: int
    path: Path  # one Message-ID per line
    process: subprocess.Popen[bytes]
    log: IO[bytes]

    @classmethod
    def start(cls, port: int, path: Path) -> SinkProcess:
        out = path.with_suffix(".log").open("wb")
        command = [sys.executable, "-m", "bench.outbox", "sink", str(port), str(path)]
        process = subprocess.Popen(
            command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        sink = cls(port, path, process, out)
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the sink exited with {process.returncode}: {sink.tail()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return sink
            except OSError:
                if time.monotonic() > deadline:
                    sink.stop()
                    raise RuntimeError(f"the sink does not listen on {port}: {sink.tail()}") from None
                time.sleep(0.1)

    def ids(self) -> list[str]:
        """The Message-IDs received so far (complete lines only)."""
        data = self.path.read_text(encoding="ascii") if self.path.exists() else ""
        return data.split("\n")[:-1]

    def count(self) -> int:
        return self.path.read_bytes().count(b"\n") if self.path.exists() else 0

    def tail(self) -> str:
        self.log.flush()
        return self.path.with_suffix(".log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


# -- the desk and its rows ------------------------------------------------------------------------
def desk_env(url: str, data_dir: Path, broker: str, smtp_port: int | None) -> dict[str, str]:
    env = {
        "LANEDESK_DATABASE_URL": url,
        "LANEDESK_DATA_DIR": str(data_dir),
        "LANEDESK_SECRET_KEY": SECRET,
        "LANEDESK_MAIL_DOMAIN": MAIL_DOMAIN,
        "LANEDESK_MAILBOXES": MAILBOX,
    }
    if broker:
        env["LANEDESK_BROKER_URL"] = broker
    if smtp_port:
        env["LANEDESK_SMTP_URL"] = f"smtp://127.0.0.1:{smtp_port}"
    return env


def noack_diagram(settings: Settings) -> bytes:
    """The bundled diagram without its acknowledgement, as process ``ticket_lifecycle_noack``."""
    xml = (settings.bpmn_dir / "ticket_lifecycle.bpmn").read_text(encoding="utf-8")
    if xml.count(ACK_LINE) != 1 or xml.count('"ticket_lifecycle"') != 2:
        raise RuntimeError("the bundled diagram changed: cannot derive the variant without acknowledgement")
    return xml.replace(ACK_LINE, "").replace('"ticket_lifecycle"', f'"{NOACK_PROCESS}"').encode()


def fresh_desk(env: dict[str, str]) -> Desk:
    """An empty desk: schema from the migrations, groups, one agent, both diagrams."""
    url = env["LANEDESK_DATABASE_URL"]
    ensure_database(url)
    desk = build_desk(load_settings(env))
    if desk.engine.dialect.name == "postgresql":
        with desk.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    migrate.upgrade(desk.engine)
    with desk.unit_of_work() as session:
        ensure_default_groups(session)
        add_user(session, email=AGENT, role="agent", groups=["tier-1"], now=desk.clock())
    deploy_bundled(desk)
    with desk.unit_of_work() as session:
        xml = noack_diagram(desk.settings)
        deploy_definition(session, desk.settings, xml=xml, filename="noack.bpmn", now=desk.clock())
    return desk


def make_rows(desk: Desk, count: int) -> None:
    """``count`` queued rows: tickets opened (acknowledgement), then agent replies on each."""
    made = 0
    for t in range(math.ceil(count / ROWS_PER_TICKET)):
        with desk.unit_of_work() as session:
            ticket = open_ticket(
                session,
                desk.settings,
                requester=f"customer{t}@customer{t % 97}.example",
                requester_name=f"Customer {t}",
                subject=f"Printer {t} prints blank pages",
                body=f"Since this morning printer {t} prints only blank pages. We changed the toner.",
                now=desk.clock(),
                mailbox=MAILBOX,
            )
            ref = reference(desk.settings, ticket)
        made += 1
        replies = min(ROWS_PER_TICKET - 1, count - made)
        if replies:
            with desk.unit_of_work() as session:
                for r in range(replies):
                    reply_as_agent(
                        session,
                        desk.settings,
                        ticket_ref=ref,
                        agent_email=AGENT,
                        body=f"Hello Customer {t},\n\nreply {r + 1}: could you restart the printer?\n\n"
                        "Kind regards, Support",
                        now=desk.clock(),
                    )
            made += replies
    states = row_states(desk)
    if states != {"queued": count}:
        raise RuntimeError(f"expected {count} queued rows, made {dict(states)}")


def row_states(desk: Desk) -> Counter[str]:
    with desk.unit_of_work(readonly=True) as session:
        query = select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)
        return Counter({state: int(n) for state, n in session.execute(query)})


def requeue_all(desk: Desk) -> None:
    """Every row back to ``queued`` and unrendered, as make_rows left it (for the in-process run)."""
    with desk.unit_of_work() as session:
        session.execute(
            update(OutboxMessage).values(
                state="queued",
                raw=None,
                subject=None,
                sender=None,
                language=None,
                attempts=0,
                next_attempt_at=desk.clock(),
                lease_until=None,
                sent_at=None,
                server_reply=None,
                last_error=None,
                reason=None,
            )
        )
    if desk.engine.dialect.name == "postgresql":
        with desk.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE outbox_message"))


def progress(desk: Desk) -> tuple[int, int]:
    """(rows sent with the server's answer, rows failed or sent back for a retry)."""
    delivered = (OutboxMessage.state == "sent") & OutboxMessage.server_reply.is_not(None)
    wrong = (OutboxMessage.state == "failed") | (OutboxMessage.last_error.is_not(None))
    with desk.unit_of_work(readonly=True) as session:
        done, bad = session.execute(
            select(func.sum(case((delivered, 1), else_=0)), func.sum(case((wrong, 1), else_=0)))
        ).one()
    return int(done or 0), int(bad or 0)


def check_delivery(desk: Desk, sink: SinkProcess, where: str) -> tuple[list[str], int]:
    """Problems with what the rows say and what the sink got; and how many rows needed retries."""
    with desk.unit_of_work(readonly=True) as session:
        rows = session.execute(
            select(OutboxMessage.message_id, OutboxMessage.state, OutboxMessage.server_reply,
                   OutboxMessage.attempts, OutboxMessage.last_error)
        ).all()  # fmt: skip
    problems = []
    states = Counter(state for _, state, _, _, _ in rows)
    if states != {"sent": len(rows)}:
        problems.append(f"{where}: rows not all sent: {dict(states)}")
    unanswered = sum(1 for _, state, reply, _, _ in rows if state == "sent" and reply != SINK_ANSWER)
    if unanswered:
        problems.append(f"{where}: {unanswered} sent row(s) without the sink's answer")
    got = sink.ids()
    copies = Counter(got)
    expected = {mid for mid, _, _, _, _ in rows}
    if len(got) != len(rows):
        problems.append(f"{where}: the sink got {len(got)} messages for {len(rows)} rows")
    twice = {mid: n for mid, n in copies.items() if n > 1}
    if twice:
        problems.append(
            f"{where}: {len(twice)} Message-ID(s) arrived more than once, e.g. {next(iter(twice))}"
        )
    missing, foreign = expected - set(copies), set(copies) - expected
    if missing or foreign:
        problems.append(f"{where}: {len(missing)} row(s) never arrived, {len(foreign)} unknown message(s)")
    retried = sum(1 for _, _, _, attempts, error in rows if attempts > 1 or error)
    return problems, retried


# -- part 1: delivery ---------------------------------------------------------------------------------
@dataclass
class DeliveryRun:
    seconds: float
    count: int
    dispatch_seconds: float | None = None  # workers: publishing every delivery task
    cpu: CpuWindow | None = None
    retried: int = 0
    load: float = 0.0
    deliver_ms: list[float] = field(default_factory=list)  # in-process, per mail
    send_ms: list[float] = field(default_factory=list)  # in-process: the SMTP conversation
    compose_ms: dict[str, list[float]] = field(default_factory=dict)  # in-process, by template

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def run_workers(
    desk: Desk, env: dict[str, str], workers: Workers, worker_count: int, count: int, sink: SinkProcess
) -> DeliveryRun:
    """Workers ready; then dispatch every row and wait until all are sent and at the sink."""
    if not desk.settings.embedded_broker:
        delete_queue(desk.settings.broker_url)
    app = create_celery(desk.settings)
    try:
        # Declared first: workers starting together on a fresh embedded broker race to create
        # its `lanedesk` row (bench.mail).
        with app.connection_for_write() as conn:
            for queue in app.conf.task_queues:
                queue.bind(conn.default_channel).declare()
        workers.start(worker_count, env)
        workers.wait_ready()
        sessions = {p.pid: "celery workers" for p in workers.processes}
        sessions[sink.process.pid] = "smtp sink"
        load = os.getloadavg()[0]
        before = cpu_sample()
        started = time.perf_counter()
        handed = 0
        while handed < count:
            batch = dispatch_outbox(app, desk)
            if not batch:
                raise RuntimeError(f"dispatch handed out {handed} of {count} rows (publishing failed?)")
            handed += batch
        dispatched = time.perf_counter() - started
        last, changed = (-1, -1), time.monotonic()
        while True:
            done, bad = progress(desk)
            at_sink = sink.count()
            if done >= count and at_sink >= count:
                break
            if bad:
                log(f"    {bad} row(s) failed or were sent back for a retry; waiting for them")
            if (done, at_sink) != last:
                last, changed = (done, at_sink), time.monotonic()
            elif time.monotonic() - changed > STALL_SECONDS:
                raise RuntimeError(
                    f"{done} of {count} sent, {at_sink} at the sink; no progress for {STALL_SECONDS:.0f} s\n"
                    f"{workers.tails()}"
                )
            workers.check()
            time.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - started
        after = cpu_sample()
        pg = backend_pids(desk) if desk.engine.dialect.name == "postgresql" else set()
        cpu = cpu_window(before, after, sessions, pg)
    finally:
        with suppress(Exception):
            app.close()
        errors = workers.errors()
        workers.stop()
    if errors:
        log(f"    worker logs: {len(errors)} error/retry line(s), e.g. {errors[0]}")
    return DeliveryRun(seconds, count, dispatched, cpu, load=load)


class TimedTransport:
    """The desk's transport, with the time of each SMTP conversation (commit_sent included)."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.ms: list[float] = []

    def send(self, delivery: Delivery, commit_sent: Callable[[], bool]) -> str:
        started = time.perf_counter()
        try:
            answer: str = self.inner.send(delivery, commit_sent)
            return answer
        finally:
            self.ms.append(1000 * (time.perf_counter() - started))


def run_in_process(desk: Desk, count: int, sink: SinkProcess) -> DeliveryRun:
    """``deliver`` for every queued row, one after the other, in this process."""
    transport = TimedTransport(transport_for(desk.settings))
    compose_ms: dict[str, list[float]] = defaultdict(list)

    def timed_compose(session: Session, settings: Settings, row: OutboxMessage, now: datetime) -> None:
        started = time.perf_counter()
        compose(session, settings, row, now)
        compose_ms[row.template].append(1000 * (time.perf_counter() - started))

    with desk.unit_of_work(readonly=True) as session:
        ids = list(session.scalars(select(OutboxMessage.id).order_by(OutboxMessage.id)))
    pg = backend_pids(desk) if desk.engine.dialect.name == "postgresql" else set()
    load = os.getloadavg()[0]
    before = cpu_sample()
    deliver_ms = []
    started = time.perf_counter()
    for outbox_id in ids:
        one = time.perf_counter()
        state = deliver(
            desk.sessions, desk.settings, transport, outbox_id, clock=desk.clock, compose=timed_compose
        )
        deliver_ms.append(1000 * (time.perf_counter() - one))
        if state != "sent":
            raise RuntimeError(f"deliver({outbox_id}) returned {state!r}")
    seconds = time.perf_counter() - started
    cpu = cpu_window(before, cpu_sample(), {sink.process.pid: "smtp sink"}, pg)
    return DeliveryRun(
        seconds,
        count,
        cpu=cpu,
        load=load,
        deliver_ms=deliver_ms,
        send_ms=transport.ms,
        compose_ms=dict(compose_ms),
    )


@dataclass
class DeliveryCase:
    database: str
    pipeline: str  # workers | in-process
    runs: list[DeliveryRun] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(r.rate for r in self.runs)


def measure_delivery(
    database: str, url: str, broker: str, args: argparse.Namespace, scratch: Path
) -> tuple[DeliveryCase, DeliveryCase, list[str]]:
    """``args.runs`` runs: fresh desk and rows, the workers deliver them, then in-process again."""
    by_workers, in_process = DeliveryCase(database, "workers"), DeliveryCase(database, "in-process")
    problems: list[str] = []
    for i in range(args.runs):
        data_dir = Path(tempfile.mkdtemp(prefix=f"{database[:2].lower()}-run{i + 1}-", dir=scratch))
        port = free_port()
        env = desk_env(url or f"sqlite:///{data_dir / 'lanedesk.db'}", data_dir, broker, port)
        with stage(f"run {i + 1}: fresh desk, {args.mails:,} rows through open_ticket + reply_as_agent"):
            desk = fresh_desk(env)
            make_rows(desk, args.mails)
        workers = Workers(data_dir)
        try:
            sink = SinkProcess.start(port, data_dir / "sink-workers.txt")
            try:
                run = run_workers(desk, env, workers, args.workers, args.mails, sink)
            finally:
                sink.stop()
            found, run.retried = check_delivery(desk, sink, f"{database} workers run {i + 1}")
            problems += found
            by_workers.runs.append(run)
            log(
                f"    {args.workers} workers: {run.count:,} in {run.seconds:.2f} s = {run.rate:,.0f}/s "
                f"(dispatch {run.dispatch_seconds or 0:.2f} s); {run.retried} retried; "
                f"{'OK' if not found else 'WRONG'} (load before {run.load:.1f})"
            )
            requeue_all(desk)
            sink = SinkProcess.start(port, data_dir / "sink-in-process.txt")
            try:
                run = run_in_process(desk, args.mails, sink)
            finally:
                sink.stop()
            found, run.retried = check_delivery(desk, sink, f"{database} in-process run {i + 1}")
            problems += found
            in_process.runs.append(run)
            log(
                f"    in-process: {run.count:,} in {run.seconds:.2f} s = {run.rate:,.0f}/s; "
                f"{'OK' if not found else 'WRONG'} (load before {run.load:.1f})"
            )
        finally:
            workers.stop()
            desk.engine.dispose()
    return by_workers, in_process, problems


# -- part 2: the cost of the row to the step ---------------------------------------------------------
@dataclass
class StepCost:
    database: str
    with_ack: list[float] = field(default_factory=list)  # median ms per run
    without: list[float] = field(default_factory=list)
    statements: tuple[int, int] = (0, 0)  # SQL statements of one step, with / without
    queue_ms: dict[str, list[float]] = field(default_factory=dict)  # template: ms per call, per batch


def open_one(desk: Desk, process_id: str, requester: str) -> float:
    """ms for one open_ticket unit of work (commit included)."""
    started = time.perf_counter()
    with desk.unit_of_work() as session:
        open_ticket(
            session,
            desk.settings,
            requester=requester,
            subject="Printer prints blank pages",
            body="Since this morning the printer prints only blank pages. We changed the toner.",
            now=desk.clock(),
            process_id=process_id,
            mailbox=MAILBOX,
        )
    return 1000 * (time.perf_counter() - started)


def count_statements(desk: Desk, action: Callable[[], object]) -> int:
    seen = [0]

    def counted(*_: Any) -> None:
        seen[0] += 1

    event.listen(desk.engine, "before_cursor_execute", counted)
    try:
        action()
    finally:
        event.remove(desk.engine, "before_cursor_execute", counted)
    return seen[0]


def queue_cost(desk: Desk, template: str, kind: str, calls: int, batch: int) -> float:
    """ms per queue_mail call: ``calls`` in one transaction, flushed, rolled back."""
    with desk.unit_of_work(readonly=True) as session:
        ticket_id = session.scalar(select(Ticket.id).order_by(Ticket.id).limit(1))
    session = desk.sessions()
    try:
        ticket = session.get_one(Ticket, ticket_id)
        now = desk.clock()
        started = time.perf_counter()
        for k in range(calls):
            queue_mail(
                session,
                desk.settings,
                ticket=ticket,
                template=template,
                recipient=f"q{batch}-{k}@queue{k % 53}.example",
                kind=kind,
                now=now,
                actor="bench",
            )
        session.flush()
        return 1000 * (time.perf_counter() - started) / calls
    finally:
        session.rollback()
        session.close()


def measure_step_cost(
    database: str, url: str, args: argparse.Namespace, scratch: Path
) -> tuple[StepCost, list[str]]:
    data_dir = Path(tempfile.mkdtemp(prefix=f"{database[:2].lower()}-ab-", dir=scratch))
    desk = fresh_desk(desk_env(url or f"sqlite:///{data_dir / 'lanedesk.db'}", data_dir, "", None))
    cost = StepCost(database)
    variants = {"bundled": "ticket_lifecycle", "noack": NOACK_PROCESS}
    try:
        for run in range(args.runs):
            samples: dict[str, list[float]] = {"bundled": [], "noack": []}
            for i in range(AB_WARMUP + args.ab_samples):
                order = ("bundled", "noack") if (i // 2) % 2 == 0 else ("noack", "bundled")
                for name in order:
                    ms = open_one(desk, variants[name], f"ab{run}-{i}-{name}@ab{i % 89}.example")
                    if i >= AB_WARMUP:
                        samples[name].append(ms)
            cost.with_ack.append(statistics.median(samples["bundled"]))
            cost.without.append(statistics.median(samples["noack"]))
            log(
                f"    A/B run {run + 1}: with acknowledgement {cost.with_ack[-1]:.2f} ms, "
                f"without {cost.without[-1]:.2f} ms ({args.ab_samples} steps each)"
            )
        cost.statements = (
            count_statements(desk, lambda: open_one(desk, variants["bundled"], "stmts-a@stmts.example")),
            count_statements(desk, lambda: open_one(desk, variants["noack"], "stmts-b@stmts.example")),
        )
        for template, kind in (("acknowledgement", "customer_mail"), ("agent_reply", "agent_reply")):
            cost.queue_ms[template] = [
                queue_cost(desk, template, kind, args.queue_calls, b) for b in range(max(3, args.runs))
            ]
        problems = []
        states = row_states(desk)
        if states.get("suppressed"):  # every sender was new: nothing may have been held back
            problems.append(f"{database} A/B: {states['suppressed']} acknowledgement(s) suppressed")
    finally:
        desk.engine.dispose()
    return cost, problems


# -- report -------------------------------------------------------------------------------------------
def median_of(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_delivery(cases: list[tuple[DeliveryCase, DeliveryCase]], args: argparse.Namespace) -> None:
    log(
        f"\n== 1. Outbound mail delivered to a local SMTP sink (aiosmtpd, own process), "
        f"{args.mails:,} mails per run, median of {args.runs} run(s)"
    )
    log(f"   {'database':<11} {'pipeline':<36} {'mails/s':>8}  runs (mails/s)        {'1/rate':>8}")
    for workers, alone in cases:
        broker = "RabbitMQ" if workers.database == "PostgreSQL" else "embedded broker"
        for one, label in (
            (workers, f"{args.workers} workers (-c 1), {broker}"),
            (alone, "in-process deliver() loop"),
        ):
            runs = " / ".join(f"{r.rate:,.0f}" for r in one.runs)
            log(f"   {one.database:<11} {label:<36} {one.rate:>8,.0f}  {runs:<21} {1000 / one.rate:>5.2f} ms")
    log("\n   ratios (medians):")
    for workers, alone in cases:
        dispatch = median_of([r.count / r.dispatch_seconds for r in workers.runs if r.dispatch_seconds])
        log(
            f"   {workers.database}: {args.workers} workers / one process in-process = "
            f"{workers.rate / alone.rate:.2f}x; dispatch (publish) {dispatch:,.0f} tasks/s"
        )
    if len(cases) == 2:
        (pg, pg_alone), (lite, lite_alone) = cases
        log(
            f"   SQLite / PostgreSQL: workers {lite.rate / pg.rate:.2f}x, in-process "
            f"{lite_alone.rate / pg_alone.rate:.2f}x"
        )
    log("\n   CPU ms per mail by process group (median of the runs; the machine has "
        f"{os.cpu_count()} cores and may be shared):")  # fmt: skip
    for workers, alone in cases:
        for one in (workers, alone):
            groups: dict[str, list[float]] = defaultdict(list)
            for r in one.runs:
                if r.cpu is not None:
                    for name, seconds in r.cpu.seconds.items():
                        groups[name].append(1000 * seconds / r.count)
            shown = sorted(((median_of(v), k) for k, v in groups.items()), reverse=True)
            line = ", ".join(f"{k} {ms:.2f}" for ms, k in shown if ms >= 0.01 and k != ELSE)
            other = median_of(groups.get(ELSE, []))
            log(f"   {one.database} {one.pipeline}: {line}; everything else {other:.2f}")
    log("\n   in-process, where one delivery's time goes (median per mail, ms):")
    for _, alone in cases:
        deliver_ms = [ms for r in alone.runs for ms in r.deliver_ms]
        send_ms = [ms for r in alone.runs for ms in r.send_ms]
        compose_all = [ms for r in alone.runs for v in r.compose_ms.values() for ms in v]
        total, send, render = median_of(deliver_ms), median_of(send_ms), median_of(compose_all)
        log(
            f"   {alone.database}: deliver {total:.2f} = compose (render) {render:.2f} "
            f"({100 * render / total:.0f}%) + SMTP conversation incl. the `sent` commit {send:.2f} "
            f"({100 * send / total:.0f}%) + claim and answer transactions "
            f"{max(0.0, total - render - send):.2f}"
        )


def print_step_cost(costs: list[StepCost], args: argparse.Namespace) -> None:
    log(
        f"\n== 2. The outbox row's cost to the step that writes it: open_ticket, whole unit of work "
        f"(commit included), {args.ab_samples} steps per variant and run, median of {args.runs} run(s)"
    )
    log(
        f"   {'database':<11} {'with ack (bundled)':>19} {'without (removed)':>18} {'difference':>11} "
        f"{'% of step w/o':>14} {'share of step':>14} {'SQL statements':>15}"
    )
    for c in costs:
        a, b = median_of(c.with_ack), median_of(c.without)
        log(
            f"   {c.database:<11} {a:>16.2f} ms {b:>15.2f} ms {a - b:>+8.2f} ms {100 * (a - b) / b:>+13.0f}% "
            f"{100 * (a - b) / a:>13.0f}% {c.statements[0]:>7} vs {c.statements[1]:<5}"
        )
    log(
        f"\n   queue_mail alone ({args.queue_calls} calls in one transaction, flush included; "
        "median of batches):"
    )
    for c in costs:
        ack, reply = median_of(c.queue_ms["acknowledgement"]), median_of(c.queue_ms["agent_reply"])
        log(
            f"   {c.database:<11} acknowledgement (automatic: robot, bounce, once-a-week and ceiling checks) "
            f"{ack:.2f} ms/call; agent reply (a person wrote it: no checks) {reply:.2f} ms/call"
        )


def print_render(cases: list[tuple[DeliveryCase, DeliveryCase]]) -> None:
    log(
        "\n   rendering is not in the step: compose() runs at the first delivery attempt "
        "(part 1, in-process):"
    )
    for _, alone in cases:
        by_template: dict[str, list[float]] = defaultdict(list)
        for r in alone.runs:
            for template, values in r.compose_ms.items():
                by_template[template] += values
        parts = ", ".join(
            f"{template} {median_of(values):.2f} ms (n={len(values):,})"
            for template, values in sorted(by_template.items())
        )
        log(f"   {alone.database:<11} compose median per mail: {parts}")


# -- main -------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.outbox",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--postgres", default=DEFAULT_PG, help="PostgreSQL URL, its schema rebuilt ('' to skip)"
    )
    parser.add_argument(
        "--broker", default=DEFAULT_BROKER, help="RabbitMQ URL (the 'lanedesk' queue is deleted)"
    )
    parser.add_argument("--mails", type=int, default=2_000, help="outbox rows per delivery run")
    parser.add_argument("--runs", type=int, default=3, help="runs per case")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes (concurrency 1 each)")
    parser.add_argument(
        "--ab-samples", type=int, default=300, help="open_ticket steps per variant and A/B run"
    )
    parser.add_argument("--queue-calls", type=int, default=500, help="queue_mail calls per timed transaction")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 mails, 60 A/B steps, 100 calls")
    parser.add_argument("--only", choices=["postgres", "sqlite"], help="one database only")
    parser.add_argument("--skip-delivery", action="store_true", help="only part 2 (the step's cost)")
    parser.add_argument("--skip-step", action="store_true", help="only part 1 (delivery)")
    args = parser.parse_args(argv)
    if args.quick:
        args.mails, args.ab_samples, args.queue_calls = min(args.mails, 200), 60, 100
    if args.mails < ROWS_PER_TICKET or args.runs < 1 or args.workers < 1 or args.ab_samples < 1:
        parser.error(
            f"--mails must be at least {ROWS_PER_TICKET}; --runs, --workers, --ab-samples at least 1"
        )
    return args


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM: clean up as on Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sink"]:
        return serve_sink(int(argv[1]), Path(argv[2]))
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    scratch = Path(tempfile.mkdtemp(prefix="lanedesk-bench-outbox-"))
    databases: list[tuple[str, str, str]] = []  # (name, URL ('' = a SQLite file per run), broker)
    if args.postgres and args.only != "sqlite":
        databases.append(("PostgreSQL", args.postgres, args.broker))
    if args.only != "postgres":
        databases.append(("SQLite", "", ""))
    problems: list[str] = []
    try:
        pg = make_url(args.postgres).render_as_string(hide_password=True) if args.postgres else "none"
        log(
            f"bench.outbox: {args.mails:,} mails per run, {args.runs} run(s), {args.workers} worker(s); "
            f"PostgreSQL {pg}, broker {args.broker.rsplit('@', 1)[-1]}; {os.cpu_count()} cores; "
            f"{revision()}; scratch {scratch}"
        )
        delivery: list[tuple[DeliveryCase, DeliveryCase]] = []
        costs: list[StepCost] = []
        for database, url, broker in databases:
            if not args.skip_delivery:
                log(f"\n{database}, delivery:")
                by_workers, alone, found = measure_delivery(database, url, broker, args, scratch)
                delivery.append((by_workers, alone))
                problems += found
            if not args.skip_step:
                log(f"\n{database}, the step's cost (A/B):")
                cost, found = measure_step_cost(database, url, args, scratch)
                costs.append(cost)
                problems += found
        if delivery:
            print_delivery(delivery, args)
        if costs:
            print_step_cost(costs, args)
        if delivery:
            print_render(delivery)
    except KeyboardInterrupt:
        log("\ninterrupted")
        return 130
    except Exception:
        traceback.print_exc()
        log(f"\nerror; logs kept in {scratch}")
        return 1
    if problems:
        log("\nchecks failed:")
        for problem in problems:
            log(f"   {problem}")
        log(f"logs kept in {scratch}")
        return 1
    log("\nchecks: every row sent with the sink's answer; the sink got each Message-ID exactly once")
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
