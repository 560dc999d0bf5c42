"""The Celery app: JSON only, thin id-only tasks, one beat schedule (schedule.py).

Production runs on RabbitMQ (durable queues, persistent messages, late acks for idempotent
tasks). The default for a laptop is kombu's SQLAlchemy transport on a SQLite file next to the
desk's database: no server to install, correct with several consumers (kombu takes messages
under ``BEGIN IMMEDIATE``), and kept bounded by :func:`tasks.jobs.purge_broker`, because the
transport only marks delivered messages invisible and never deletes them.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from workflows.settings import Settings

from .schedule import beat_schedule

#: Timers (scans, wakes) and the sweeps: the default queue.
QUEUE = "lanedesk"
#: Inbound mail to process, and outgoing mail to deliver: their own queues, so that a burst of
#: mail (an IMAP backlog after an outage, a migration, a mail loop held back by the rules) does
#: not queue in front of the timers. A worker takes from all three in turn unless told which
#: (`lanedesk worker -Q`).
MAIL_IN, MAIL_OUT = "lanedesk.mail-in", "lanedesk.mail-out"
QUEUES = (QUEUE, MAIL_IN, MAIL_OUT)
ROUTES = {"lanedesk.process_mail": MAIL_IN, "lanedesk.deliver_mail": MAIL_OUT}


def create_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings``; its tasks find the desk through ``app.conf.lanedesk_settings``."""
    app = Celery("lanedesk", broker=settings.broker_url, set_as_current=False, include=["tasks.jobs"])
    exchange = Exchange(QUEUE, type="direct", durable=True)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_queues=[Queue(name, exchange, routing_key=name, durable=True) for name in QUEUES],
        task_routes={task: {"queue": name, "routing_key": name} for task, name in ROUTES.items()},
        task_default_queue=QUEUE,
        task_default_exchange=QUEUE,
        task_default_routing_key=QUEUE,
        task_default_delivery_mode="persistent",
        task_acks_late=True,  # per task: only idempotent tasks are declared (jobs.py)
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=4,
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
        enable_utc=True,
        timezone="UTC",
        beat_schedule=beat_schedule(settings),
        lanedesk_settings=settings,
    )
    if settings.embedded_broker:
        # The SQLAlchemy transport has no fanout exchanges: no remote control, gossip or mingle.
        app.conf.update(
            worker_enable_remote_control=False,
            broker_transport_options={"connect_args": {"timeout": 30}},  # polls every second
        )
    return app
