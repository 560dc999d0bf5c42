"""The desk's Celery tasks: thin, id-only, safe to run twice. The work lives in workflows/."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import sqlalchemy
from celery import Celery, Task, shared_task
from sqlalchemy.exc import OperationalError

from workflows.app import Desk, build_desk
from workflows.inbound import Envelope, Stored, process_or_quarantine, store_raw, unprocessed
from workflows.outbox import Transport, deliver, due_for_delivery
from workflows.outmail import compose
from workflows.settings import Settings
from workflows.transports import transport_for
from workflows.wakeups import WakeFailed, claim_due, wake_or_record_failure

log = logging.getLogger(__name__)

#: How long a stored message may wait for its processing task before the sweep queues it again.
SWEEP_GRACE = timedelta(seconds=30)

#: Due instances one scan hands out; the rest wait for the next scan, seconds later.
SCAN_LIMIT = 5000

T = TypeVar("T")
_desks: dict[tuple[int, int], Desk] = {}
_transports: dict[tuple[int, int], Transport] = {}


def _per_process(cache: dict[tuple[int, int], T], task: Task, build: Callable[[Settings], T]) -> T:
    """One ``build(settings)`` per worker process (made after the fork: pools must not cross it)."""
    settings: Settings = task.app.conf.lanedesk_settings
    key = (os.getpid(), id(settings))
    if key not in cache:
        cache[key] = build(settings)
    return cache[key]


def desk_for(task: Task) -> Desk:
    """The desk of this worker process."""
    return _per_process(_desks, task, build_desk)


def publish(app: Celery, task_name: str, ids: list[int]) -> None:
    """Queue ``task_name(id)`` for each id, on this app (not whichever app is "current")."""
    if ids:
        task = app.tasks[task_name]
        with app.producer_or_acquire() as producer:
            for one in ids:
                task.apply_async((one,), producer=producer)


@shared_task(
    name="lanedesk.scan_due_timers",
    bind=True,
    acks_late=False,  # a lost scan is replaced by the next one seconds later
    ignore_result=True,
)
def scan_due_timers(self: Task) -> int:
    """Claim every due instance and queue one wake per instance (beat, every few seconds)."""
    desk = desk_for(self)
    with desk.unit_of_work() as session:
        ids = claim_due(session, desk.clock(), limit=SCAN_LIMIT)
    if ids:
        publish(self.app, wake_instance.name, ids)
        log.info("scan: %d due instance(s) handed out", len(ids))
    return len(ids)


@shared_task(
    name="lanedesk.wake_instance",
    bind=True,
    acks_late=True,  # idempotent: a second run finds the instance no longer due
    ignore_result=True,
    autoretry_for=(OperationalError,),  # the database itself is away (recording failed too)
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=8,
)
def wake_instance(self: Task, instance_id: int) -> bool:
    """Fire the due timers of one instance (claimed by a scan)."""
    desk = desk_for(self)
    try:
        woken = wake_or_record_failure(desk.sessions, desk.settings, instance_id, now=desk.clock)
    except WakeFailed:
        return False  # recorded on the instance: failed, or retried after its back-off
    dispatch_outbox(self.app, desk)  # reminders and notifications the timers queued, now
    return woken


@shared_task(name="lanedesk.purge_broker", bind=True, acks_late=False, ignore_result=True)
def purge_broker(self: Task) -> int:
    """Delete messages the embedded broker delivered (kombu only marks them invisible)."""
    settings: Settings = self.app.conf.lanedesk_settings
    if not settings.embedded_broker:
        return 0
    return purge_delivered(settings.broker_url)


def purge_delivered(broker_url: str) -> int:
    """Delete delivered messages from a kombu SQLAlchemy-transport database; how many went."""
    engine = sqlalchemy.create_engine(broker_url.removeprefix("sqla+"), connect_args={"timeout": 30})
    try:
        with engine.begin() as conn:
            if not sqlalchemy.inspect(conn).has_table("kombu_message"):
                return 0
            result = conn.execute(sqlalchemy.text("DELETE FROM kombu_message WHERE visible = 0"))
            return int(result.rowcount or 0)
    finally:
        engine.dispose()


@shared_task(
    name="lanedesk.process_mail",
    bind=True,
    acks_late=True,  # idempotent: a message already processed is left as it is
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=8,
)
def process_mail(self: Task, mail_id: int) -> str:
    """Turn one stored inbound message into a ticket or a follow-up (or quarantine it)."""
    desk = desk_for(self)
    outcome = process_or_quarantine(desk.sessions, desk.settings, mail_id, now=desk.clock())
    try:  # the acknowledgement, without waiting for the sweep (nor a dispatch transaction)
        publish(self.app, deliver_mail.name, list(outcome.outbox_ids))
    except Exception:
        log.warning("mail %s processed, its replies not queued (the sweep will)", mail_id, exc_info=True)
    return outcome.state


@shared_task(name="lanedesk.sweep_mail", bind=True, acks_late=False, ignore_result=True)
def sweep_mail(self: Task) -> int:
    """Queue stored messages whose processing task was lost (broker down at ingest time)."""
    desk = desk_for(self)
    with desk.unit_of_work(readonly=True) as session:
        ids = unprocessed(session, older_than=desk.clock() - SWEEP_GRACE)
    publish_processing(self.app, ids)
    return len(ids)


def publish_processing(app: Celery, ids: list[int]) -> None:
    publish(app, process_mail.name, ids)


def ingest(app: Celery, desk: Desk, raw: bytes, envelope: Envelope) -> Stored:
    """The one entry point of every mail channel: store durably (commit), then queue processing.

    Raises when the message could not be stored (the channel must then refuse it: exit 75,
    SMTP 451, leave it on the IMAP server). A failure to queue is only logged: the raw copy is
    committed and beat's sweep queues it.
    """
    with desk.unit_of_work() as session:
        stored = store_raw(session, raw, envelope, now=desk.clock())
    if not stored.duplicate:
        try:
            publish_processing(app, [stored.id])
        except Exception:
            log.warning("mail %s stored, but not queued (the sweep will queue it)", stored.id, exc_info=True)
    return stored


# -- outgoing mail -----------------------------------------------------------------------------
def transport_of(task: Task) -> Transport:
    return _per_process(_transports, task, transport_for)


@shared_task(
    name="lanedesk.deliver_mail",
    bind=True,
    acks_late=True,  # idempotent: the row's state and attempt number decide (workflows/outbox.py)
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=8,
)
def deliver_mail(self: Task, outbox_id: int) -> str:
    """Send one outgoing mail (SMTP, or the local outbox directory)."""
    desk = desk_for(self)
    return deliver(
        desk.sessions, desk.settings, transport_of(self), outbox_id, clock=desk.clock, compose=compose
    )


@shared_task(name="lanedesk.sweep_outbox", bind=True, acks_late=False, ignore_result=True)
def sweep_outbox(self: Task) -> int:
    """Hand out due mail (new, retries after their back-off) and recover abandoned sends."""
    return dispatch_outbox(self.app, desk_for(self), recover=True)


def dispatch_outbox(app: Celery, desk: Desk, *, recover: bool = False) -> int:
    """Queue one delivery task per due outbox row; a failure to publish is left to the sweep."""
    try:
        with desk.unit_of_work() as session:
            ids = due_for_delivery(session, desk.clock(), recover=recover)
        publish(app, deliver_mail.name, ids)
    except Exception:
        if recover:
            raise
        log.warning("outgoing mail not dispatched now (the sweep will)", exc_info=True)
        return 0
    return len(ids)
