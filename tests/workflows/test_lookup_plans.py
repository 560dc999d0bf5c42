"""A follow-up finds its ticket's newest instance with one index probe, whatever the statistics.

Found measuring 10,000 mails on a new desk (autovacuum off, so never analysed): PostgreSQL read a
ticket's newest instance by walking the primary key backwards past every other ticket's rows,
and an instance's open tasks by intersecting with the index of all open tasks; both grew with
the tables. The tables here are tiny, so seq scans are switched off (as on a large table) and
the plan of the statement the service really sends is read. (The open-task lookup's new index,
ix_human_task_instance_state, ties with the partial inbox indexes on an empty table, so its plan
is not asserted here: on 7,150 tasks without statistics it took the new index, 0.25 -> 0.03 ms.)
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from workflows.errors import NotFound
from workflows.tickets import instance_of


def plan_of(session: Session, call: Callable[[], Any]) -> str:
    """EXPLAIN of the last statement ``call`` sends (with its parameters)."""
    sent: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", grab)
    try:
        call()
    except NotFound:
        pass  # no such ticket: the statement was sent all the same
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    statement, parameters = sent[-1]
    rows = session.connection().exec_driver_sql(f"EXPLAIN {statement}", parameters)
    return "\n".join(row[0] for row in rows)


@pytest.fixture
def pg(session: Session) -> Session:
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("PostgreSQL's planner")
    session.execute(text("SET LOCAL enable_seqscan = off"))
    return session


@pytest.mark.parametrize("lock", [False, True])
def test_a_tickets_newest_instance_is_one_probe_of_its_index(pg: Session, lock: bool) -> None:
    plan = plan_of(pg, lambda: instance_of(pg, SimpleNamespace(id=4242), lock=lock))  # type: ignore[arg-type]
    assert "ix_workflow_instance_ticket_newest" in plan, plan
    assert "pk_workflow_instance" not in plan and "Sort" not in plan, plan
