"""IMAP ingress against a real Dovecot on loopback: store first, then move; IDLE; the config file."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

pytest.importorskip("workflows.mailparse")

from tasks import imap  # registers `lanedesk imap`
from tasks.celery_app import create_celery
from tasks.imap import Account, ImapConfigError, StoreFailed, load_accounts, poll_once, run
from workflows.app import Desk
from workflows.cli import main
from workflows.models import MailMessage

from .dovecot import Dovecot, running_dovecot

DESK_ADDRESS = "support@desk.example"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        yield server


def account_of(server: Dovecot) -> Account:
    return Account(
        "support", server.host, server.port, "none", server.username, server.password, DESK_ADDRESS
    )


def message(n: int) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "jana@customer.example", DESK_ADDRESS, f"Printer {n}"
    msg["Message-ID"] = f"<imap{n}@customer.example>"
    msg.set_content(f"Message number {n}.")
    return msg.as_bytes(policy=SMTP)  # CRLF, as IMAP hands it back


def append(server: Dovecot, *raws: bytes) -> None:
    with server.client() as client:
        for raw in raws:
            client.append("INBOX", raw)


def folder(server: Dovecot, name: str) -> dict[int, dict[bytes, Any]]:
    """FLAGS and body of every message in ``name`` (fetched with PEEK: changes nothing)."""
    with server.client() as client:
        if not client.folder_exists(name):
            return {}
        client.select_folder(name, readonly=True)
        return dict(client.fetch(client.search("ALL"), ["FLAGS", "BODY.PEEK[]"]))


def stored(desk: Desk) -> list[MailMessage]:
    with desk.unit_of_work(readonly=True) as session:
        return list(session.scalars(select(MailMessage).order_by(MailMessage.id)))


def ingest_into(desk: Desk) -> imap.Store:
    return imap.ingesting(create_celery(desk.settings), desk)


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_poll_once_stores_each_message_once_then_moves_it_unread(dovecot: Dovecot, desk: Desk) -> None:
    raws = [message(n) for n in range(3)]
    append(dovecot, *raws)
    account = account_of(dovecot)

    assert poll_once(account, ingest_into(desk)) == 3

    rows = stored(desk)
    assert [r.raw for r in rows] == raws
    assert {(r.source, r.mailbox) for r in rows} == {("imap", DESK_ADDRESS)}
    assert folder(dovecot, "INBOX") == {}
    processed = folder(dovecot, "Processed")
    assert sorted(m[b"BODY[]"] for m in processed.values()) == sorted(raws)
    assert all(b"\\Seen" not in m[b"FLAGS"] for m in processed.values())
    assert poll_once(account, ingest_into(desk)) == 0
    assert len(stored(desk)) == 3


def test_a_failed_store_leaves_that_message_and_later_ones_for_the_next_round(
    dovecot: Dovecot, desk: Desk
) -> None:
    raws = [message(n) for n in range(4)]
    append(dovecot, *raws)
    account = account_of(dovecot)
    ingest = ingest_into(desk)
    calls: list[bytes] = []

    def committed_then_crashed_on_the_second(account: Account, raw: bytes) -> object:
        calls.append(raw)
        result = ingest(account, raw)  # stored, but the poller dies before it can move it
        if len(calls) == 2:
            raise RuntimeError("power cut")
        return result

    with pytest.raises(StoreFailed) as failed:
        poll_once(account, committed_then_crashed_on_the_second)
    assert failed.value.stored == 1 and str(failed.value.__cause__) == "power cut"
    assert sorted(m[b"BODY[]"] for m in folder(dovecot, "INBOX").values()) == raws[1:]
    assert [m[b"BODY[]"] for m in folder(dovecot, "Processed").values()] == raws[:1]

    assert poll_once(account, ingest) == 3
    assert folder(dovecot, "INBOX") == {}
    assert len(folder(dovecot, "Processed")) == 4
    assert [r.raw for r in stored(desk)] == raws  # the second one is stored once, not twice


def test_mail_that_arrives_while_a_round_is_stored_is_taken_before_waiting(
    dovecot: Dovecot, desk: Desk
) -> None:
    """The server tells of it in its answer to our MOVE, where IDLE never hears of it: without a
    second search it waited for the next IDLE renewal (10 minutes)."""
    ingest = ingest_into(desk)
    late = message(2)

    def store_and_meanwhile_more_arrives(account: Account, raw: bytes) -> object:
        if raw != late:
            append(dovecot, late)
        return ingest(account, raw)

    append(dovecot, message(1))
    assert poll_once(account_of(dovecot), store_and_meanwhile_more_arrives) == 2
    assert folder(dovecot, "INBOX") == {}
    assert [r.raw for r in stored(desk)] == [message(1), late]


def test_without_move_messages_are_copied_flagged_and_expunged(desk: Desk) -> None:
    with running_dovecot(extra_config="imap_capability = IMAP4rev1 IDLE\n") as server:
        with server.client() as client:
            assert not client.has_capability("MOVE") and not client.has_capability("UIDPLUS")
        append(server, message(1), message(2))
        assert poll_once(account_of(server), ingest_into(desk)) == 2
        assert folder(server, "INBOX") == {}
        assert len(folder(server, "Processed")) == 2
    assert len(stored(desk)) == 2


def test_run_idles_stores_new_mail_at_once_and_stops_when_asked(dovecot: Dovecot, desk: Desk) -> None:
    append(dovecot, message(1))
    stop = threading.Event()
    thread = threading.Thread(target=run, args=([account_of(dovecot)], ingest_into(desk), stop))
    thread.start()
    try:
        wait_for(lambda: len(stored(desk)) == 1)  # what was waiting, at start
        append(dovecot, message(2))  # arrives while the thread idles (IDLE is renewed after 10 min)
        wait_for(lambda: len(stored(desk)) == 2)
        wait_for(lambda: folder(dovecot, "INBOX") == {})
    finally:
        stop.set()
        started = time.monotonic()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert time.monotonic() - started < 3


def test_run_retries_with_back_off_after_a_failed_store(
    dovecot: Dovecot, desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    append(dovecot, message(1))
    ingest = ingest_into(desk)
    attempts: list[float] = []

    def down_at_first(account: Account, raw: bytes) -> object:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise ConnectionError("database is away")
        return ingest(account, raw)

    stop = threading.Event()
    thread = threading.Thread(target=run, args=([account_of(dovecot)], down_at_first, stop))
    with caplog.at_level(logging.WARNING, logger="tasks.imap"):
        thread.start()
        try:
            wait_for(lambda: len(stored(desk)) == 1)
        finally:
            stop.set()
            thread.join(timeout=10)
    assert attempts[1] - attempts[0] >= imap.BACKOFF_FIRST
    assert "database is away" in caplog.text and "retrying in 1 s" in caplog.text


def config_for(server: Dovecot, tmp_path: Path) -> Path:
    (tmp_path / "imap-password").write_text(server.password + "\n")
    config = tmp_path / "imap.yaml"
    config.write_text(
        f"- name: support\n  host: {server.host}\n  port: {server.port}\n  security: none\n"
        f"  username: {server.username}\n  password_file: imap-password\n  mailbox: {DESK_ADDRESS}\n"
    )
    return config


def test_lanedesk_imap_once_prints_what_each_account_stored(
    dovecot: Dovecot, desk: Desk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    append(dovecot, message(1), message(2))
    monkeypatch.setenv("LANEDESK_IMAP_CONFIG", str(config_for(dovecot, tmp_path)))
    result = CliRunner().invoke(main, ["imap", "--once"], obj=desk)
    assert result.exit_code == 0, result.output
    assert result.output == "support: 2 stored\n"
    assert len(stored(desk)) == 2


def test_lanedesk_imap_once_fails_naming_an_account_it_cannot_reach(
    dovecot: Dovecot, desk: Desk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_for(dovecot, tmp_path)
    config.write_text(config.read_text().replace(f"port: {dovecot.port}", "port: 1"))
    monkeypatch.setenv("LANEDESK_IMAP_CONFIG", str(config))
    result = CliRunner().invoke(main, ["imap", "--once"], obj=desk)
    assert result.exit_code == 1
    assert "error: support (127.0.0.1:1): " in result.output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_lanedesk_imap_serves_until_sigterm_or_ctrl_c(
    dovecot: Dovecot, desk: Desk, tmp_path: Path, sig: signal.Signals
) -> None:
    env = {
        **os.environ,
        "LANEDESK_IMAP_CONFIG": str(config_for(dovecot, tmp_path)),
        "LANEDESK_DATA_DIR": str(desk.settings.data_dir),
        "LANEDESK_DATABASE_URL": desk.settings.database_url,
        "LANEDESK_BROKER_URL": desk.settings.broker_url,
    }
    command = [sys.executable, "-c", "import tasks.imap; from tasks.cli import main; main()", "imap"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        append(dovecot, message(1))
        wait_for(lambda: len(stored(desk)) == 1, seconds=30)
        process.send_signal(sig)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err.decode()
    assert out.decode().endswith("stopped\n")


GOOD = {
    "name": "support",
    "host": "imap.example.com",
    "username": "support@example.com",
    "password_env": "IMAP_PASSWORD",
    "mailbox": DESK_ADDRESS,
}


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "imap.yaml"
    path.write_text(text)
    return path


def one_account(tmp_path: Path, **changes: object) -> Path:
    account = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}
    return write_config(tmp_path, "- " + "\n  ".join(f"{k}: {v}" for k, v in account.items()) + "\n")


def test_an_account_gets_the_documented_defaults(tmp_path: Path) -> None:
    [account] = load_accounts(one_account(tmp_path), {"IMAP_PASSWORD": "s3cret"})
    assert (account.port, account.security, account.folder, account.processed_folder) == (
        993,
        "ssl",
        "INBOX",
        "Processed",
    )
    assert account.password == "s3cret" and "s3cret" not in repr(account)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"host": None}, "[0].host: missing"),
        ({"security": "tls"}, "[0].security: must be one of ssl, starttls, none"),
        ({"port": "imaps"}, "[0].port: must be a port number"),
        ({"password": "hunter2"}, "[0].password: never put a password here"),
        ({"pasword_file": "x"}, "[0].pasword_file: unknown key"),
        ({"password_file": "secret"}, "[0].password_file: give exactly one"),
        ({"password_env": "NOT_SET_ANYWHERE"}, "[0].password_env: the password is empty"),
        ({"password_env": None, "password_file": "missing"}, "[0].password_file: cannot read"),
        ({"mailbox": "support"}, "[0].mailbox: must be the desk's address"),
        ({"processed_folder": "INBOX"}, "[0].processed_folder: must differ from folder"),
    ],
)
def test_a_bad_account_names_the_file_and_key(
    tmp_path: Path, changes: dict[str, object], expected: str
) -> None:
    path = one_account(tmp_path, **changes)
    with pytest.raises(ImapConfigError) as error:
        load_accounts(path, {"IMAP_PASSWORD": "s3cret"})
    assert str(error.value).startswith(f"{path}: {expected}")


def test_a_missing_or_malformed_file_names_the_variable_or_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImapConfigError, match="LANEDESK_IMAP_CONFIG is not set"):
        load_accounts(None, {})
    with pytest.raises(ImapConfigError, match=r"LANEDESK_IMAP_CONFIG: '.*nope\.yaml' is not a readable"):
        load_accounts(None, {"LANEDESK_IMAP_CONFIG": str(tmp_path / "nope.yaml")})
    with pytest.raises(ImapConfigError, match=r"imap\.yaml: expected a list of accounts"):
        load_accounts(write_config(tmp_path, "host: imap.example.com\n"), {})
    twice = write_config(tmp_path, "\n".join(["- " + "\n  ".join(f"{k}: {v}" for k, v in GOOD.items())] * 2))
    with pytest.raises(ImapConfigError, match=r"\[1\].name: 'support' is used twice"):
        load_accounts(twice, {"IMAP_PASSWORD": "s3cret"})


def test_lanedesk_imap_with_a_bad_config_says_which_key(
    desk: Desk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANEDESK_IMAP_CONFIG", str(one_account(tmp_path, security="tls")))
    result = CliRunner().invoke(main, ["imap", "--once"], obj=desk)
    assert result.exit_code == 1
    assert "error: " in result.output and "[0].security: must be one of" in result.output
