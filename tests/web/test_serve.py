"""`lanedesk web`: how gunicorn is set up, and what a worker does with the app before serving it."""

from __future__ import annotations

import gc
import socket

import pytest

from web.cli import gunicorn_options, long_lived, refuse_a_taken_port


def test_what_was_built_before_serving_is_kept_out_of_the_collectors_sight() -> None:
    app = object()
    gc.unfreeze()
    try:
        assert long_lived(app) is app
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_each_worker_listens_on_its_own_socket() -> None:
    options = gunicorn_options("127.0.0.1", 8000, 2, 4)

    assert options["reuse_port"] is True
    assert (options["workers"], options["threads"], options["worker_class"]) == (2, 4, "gthread")


def test_a_port_something_listens_on_is_refused_not_shared() -> None:
    with socket.socket() as taken:
        # As gunicorn's own workers bind: another server started beside them must not slip in.
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(SystemExit):
            refuse_a_taken_port("127.0.0.1", port)


def test_a_free_port_is_not_held_after_the_check() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    refuse_a_taken_port("127.0.0.1", port)

    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
