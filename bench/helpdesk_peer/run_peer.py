"""Drive django-helpdesk 2.6 for bench/mail.py: runs inside bench/.peer-venv, never in Lanedesk's venv.

    bench/.peer-venv/bin/python bench/helpdesk_peer/run_peer.py setup --db URL --mail-dir DIR
    bench/.peer-venv/bin/python bench/helpdesk_peer/run_peer.py run --db URL --mail-dir DIR
    bench/.peer-venv/bin/python bench/helpdesk_peer/run_peer.py corpus --db URL --mail-dir DIR

``setup`` gives the peer a fresh database (PostgreSQL: the database is dropped and created;
SQLite: the file is deleted), runs its migrations and creates one Queue that imports from the
local directory ``--mail-dir`` (``email_box_type='local'``), as django-helpdesk documents.

``run`` times its ``get_email`` management command once over whatever files are in the
directory, and prints one JSON line: seconds, tickets and follow-ups created, files left.

``corpus`` runs ``get_email`` repeatedly over a directory of real messages: each time the queue
stops on a message it cannot handle, that file and the error are recorded, the file is moved
aside, and ``get_email`` runs again, until a run gets through. Prints one JSON line.

Nothing here changes what django-helpdesk does: the settings are its documented ones (local
mailbox, dummy e-mail backend so its notices are rendered but not sent).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
QUEUE_SLUG = "bench"
#: The queue's own address: the plain messages are sent To it (bench/mail.py MAILBOX).
ADDRESS = "support@bench.example"


def _configure(db: str, log: Path) -> None:
    os.environ["HELPDESK_PEER_DB"] = db
    os.environ["HELPDESK_PEER_LOG"] = str(log)
    os.environ.setdefault("HELPDESK_PEER_MEDIA", str(log.parent / "media"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "settings"
    sys.path.insert(0, str(HERE))
    import django

    django.setup()


def _fresh_database(db: str) -> None:
    parts = urlsplit(db)
    if parts.scheme == "sqlite":
        Path(parts.path.removeprefix("/")).unlink(missing_ok=True)
        return
    import psycopg

    name = parts.path.lstrip("/")
    admin = (
        f"host={parts.hostname or '127.0.0.1'} port={parts.port or 5432} user={parts.username or 'postgres'}"
    )
    with psycopg.connect(f"{admin} dbname=postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def setup(db: str, mail_dir: Path, log: Path) -> dict[str, Any]:
    _fresh_database(db)
    _configure(db, log)
    from django.core.management import call_command

    started = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    from helpdesk.models import Queue

    Queue.objects.create(
        title="Bench",
        slug=QUEUE_SLUG,
        email_address=ADDRESS,  # mail To/Cc it is not a Cc to subscribe
        allow_email_submission=True,
        email_box_type="local",
        email_box_local_dir=str(mail_dir),
        email_box_interval=0,  # its default (5 min) would skip the second get_email of a run
        logging_type="warn",  # propagate warnings and the queue's traceback to the log file
    )
    return {"migrate_seconds": round(time.perf_counter() - started, 2)}


def _counts() -> tuple[int, int]:
    from helpdesk.models import FollowUp, Ticket

    return Ticket.objects.count(), FollowUp.objects.count()


def _get_email(logging_type: str) -> tuple[float, float]:
    """One ``get_email`` over the queue's directory; wall and CPU seconds of this process."""
    from django.core.management import call_command
    from helpdesk.models import Queue

    Queue.objects.filter(slug=QUEUE_SLUG).update(email_box_last_check=None, logging_type=logging_type)
    started, cpu = time.perf_counter(), time.process_time()
    call_command("get_email")
    return time.perf_counter() - started, time.process_time() - cpu


def _files(mail_dir: Path) -> list[str]:
    return [name for name in os.listdir(mail_dir) if (mail_dir / name).is_file()]


def run(db: str, mail_dir: Path, log: Path) -> dict[str, Any]:
    _configure(db, log)
    before = _files(mail_dir)
    tickets0, followups0 = _counts()
    seconds, cpu_seconds = _get_email("warn")
    tickets1, followups1 = _counts()
    left = _files(mail_dir)
    text = log.read_text(errors="replace") if log.exists() else ""
    return {
        "files": len(before),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "tickets": tickets1 - tickets0,
        # every message django-helpdesk takes makes a FollowUp, the opening one included
        "follow_ups": (followups1 - followups0) - (tickets1 - tickets0),
        "left": len(left),
        "queue_failed": "Queue processing failed" in text,
        "log_tail": text[-3000:],
    }


def _stop(log_text: str, order: list[str]) -> tuple[str, str] | None:
    """The file the queue stopped on and the last line of the traceback, from an INFO log."""
    if "Queue processing failed" not in log_text:
        return None
    head = log_text[: log_text.index("Queue processing failed")]
    numbers = re.findall(r"Processing message (\d+)", head)
    name = order[int(numbers[-1]) - 1] if numbers else "?"
    tail = log_text[log_text.index("Queue processing failed") :].strip().splitlines()
    error = next((line for line in reversed(tail) if line.strip()), "?")
    return name, error.strip()


def corpus(db: str, mail_dir: Path, log: Path, limit: int) -> dict[str, Any]:
    _configure(db, log)
    aside = mail_dir.parent / (mail_dir.name + "-stopped-on")
    aside.mkdir(exist_ok=True)
    total = len(_files(mail_dir))
    stops: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    tickets0, followups0 = _counts()
    for _ in range(limit):
        order = _files(mail_dir)  # the order get_email's os.listdir() sees (directory unchanged)
        offset = log.stat().st_size if log.exists() else 0
        t0, f0 = _counts()
        seconds, _ = _get_email("info")  # INFO: "Processing message i" names the file it stops on
        t1, f1 = _counts()
        with log.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", "replace")
        left = _files(mail_dir)
        runs.append(
            {"files": len(order), "seconds": seconds, "tickets": t1 - t0, "follow_ups": (f1 - f0) - (t1 - t0)}
        )
        stopped = _stop(text, order)
        if stopped is None:
            break
        name, error = stopped
        position = order.index(name) + 1 if name in order else 0
        stops.append(
            {"file": name, "error": error, "position": position, "of": len(order), "left": len(left)}
        )
        if name not in left:
            break  # cannot move it aside: stop here rather than loop
        shutil.move(str(mail_dir / name), str(aside / name))
    tickets1, followups1 = _counts()
    left_behind = _files(mail_dir)
    return {
        "files": total,
        "runs": runs,
        "stops": stops,
        "tickets": tickets1 - tickets0,
        "follow_ups": (followups1 - followups0) - (tickets1 - tickets0),
        "left_in_dir": sorted(left_behind),  # not deleted: "not successfully processed" or ignored
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["setup", "run", "corpus"])
    parser.add_argument("--db", required=True, help="postgresql://user@host:port/name or sqlite:////path")
    parser.add_argument("--mail-dir", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True, help="django-helpdesk's log file (WARNING and up)")
    parser.add_argument("--limit", type=int, default=200, help="corpus: most get_email runs")
    args = parser.parse_args()
    if args.command == "setup":
        result = setup(args.db, args.mail_dir, args.log)
    elif args.command == "run":
        result = run(args.db, args.mail_dir, args.log)
    else:
        result = corpus(args.db, args.mail_dir, args.log, args.limit)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
