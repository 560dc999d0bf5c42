"""The studio at scale (issue 8): opening the editor on the bundled lifecycle, and the
monitoring overlay, with 100,000 tickets on PostgreSQL.

    python -m bench.studio                 # builds (or --reuse) bench.web's 100,000-ticket database
    python -m bench.studio --reuse --runs 30
    python -m bench.studio --quick         # 10,000 tickets, a smoke run

Target: both under 1 s of server time. Server time is measured in-process (Flask's test client
on the same PostgreSQL database, no HTTP and no browser), per request and per user action:

- "open the editor" = the editor page of a draft of the lifecycle + the diagram XML it fetches;
- "open a version read-only" = the same for the newest deployed version;
- "monitoring" = the monitoring page (its table is computed on the server) + monitor.json
  (the numbers the overlay draws) for the 100,000 tickets' process.

The data is bench.web's (same database and sizes; ``--reuse`` keeps what an earlier run of
either bench built): see that module's docstring. Prints medians, p95 and the ratio to the
target; exits non-zero only if a request fails.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from workflows.app import Desk
from workflows.models import HumanTask, User
from workflows.users import add_user, set_password

from . import web

TARGET_S = 1.0
OWNER = "owner@bench.lanedesk"
PROCESS = "ticket_lifecycle"


def owner_client(desk: Desk) -> Any:
    with desk.unit_of_work() as session:
        if session.scalar(select(User).where(User.email == OWNER)) is None:
            user = add_user(session, email=OWNER, role="owner", groups=[], now=desk.clock())
            set_password(session, user, web.PASSWORD, now=desk.clock())
    return web.test_client_for(desk, OWNER)


def csrf(client: Any) -> str:
    html = client.get("/studio").get_data(as_text=True)
    found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)
    assert found, "no CSRF token on the studio page"
    return found.group(1)


def timed(action: Callable[[], list[Any]], runs: int) -> list[float]:
    """Seconds per run of ``action`` (its responses must all be 200)."""
    action()  # warm: templates compiled, definition parsed, connections open
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        answers = action()
        times.append(time.perf_counter() - start)
        for answer in answers:
            if answer.status_code != 200:
                raise RuntimeError(f"{answer.request.path} answered {answer.status_code}")
    return times


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--postgres", default=web.DEFAULT_PG, help="bench.web's database (rebuilt unless --reuse)"
    )
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--open", type=int, default=10_000)
    parser.add_argument("--templates", type=int, default=40)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--reuse", action="store_true", help="keep the data an earlier run built (same sizes)"
    )
    parser.add_argument("--quick", action="store_true", help="10,000 tickets, 1,000 open")
    args = parser.parse_args(argv)
    if args.quick:
        args.tickets, args.open, args.templates = 10_000, 1_000, 6
    data_dir = Path(tempfile.mkdtemp(prefix="lanedesk-bench-studio-"))
    desk, _ = web.build(args.postgres, data_dir, args)
    client = owner_client(desk)
    token = csrf(client)
    answer = client.post(f"/studio/processes/{PROCESS}/drafts", data={"csrf_token": token})
    draft_url = answer.headers["Location"]
    with desk.unit_of_work(readonly=True) as session:
        waiting = session.scalar(select(func.count()).select_from(HumanTask).where(HumanTask.state == "open"))
        tasks = session.scalar(select(func.count()).select_from(HumanTask))
    version = client.get(f"/studio/processes/{PROCESS}").get_data(as_text=True)
    newest = re.search(rf"/studio/processes/{PROCESS}/versions/(\d+)", version)
    assert newest, "no version listed"
    base = f"/studio/processes/{PROCESS}"
    actions: dict[str, Callable[[], list[Any]]] = {
        "open the editor (page + XML)": lambda: [
            client.get(draft_url),
            client.get(f"{draft_url}/diagram.bpmn"),
        ],
        "open a version read-only (page + XML)": lambda: [
            client.get(f"{base}/versions/{newest.group(1)}"),
            client.get(f"{base}/versions/{newest.group(1)}/diagram.bpmn"),
        ],
        "monitoring page": lambda: [client.get(f"{base}/monitor")],
        "monitoring data (monitor.json)": lambda: [client.get(f"{base}/monitor.json")],
        "tickets waiting at triage (list)": lambda: [client.get(f"{base}/monitor/triage")],
    }
    print(
        f"\nStudio, {args.tickets:,} tickets ({tasks:,} human tasks, {waiting:,} open), "
        "PostgreSQL, in-process"
    )
    print(f"{'action':<42}{'median ms':>11}{'p95 ms':>9}   vs target (<= {TARGET_S * 1000:.0f} ms)")
    for label, action in actions.items():
        times = timed(action, args.runs)
        median = statistics.median(times)
        print(f"{label:<42}{median * 1000:>11.1f}{p95(times) * 1000:>9.1f}   {TARGET_S / median:.0f}x under")
    return 0


if __name__ == "__main__":
    sys.exit(main())
