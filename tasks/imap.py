"""`lanedesk imap`: fetch mail from IMAP mailboxes into the desk (IDLE, no polling delay).

``LANEDESK_IMAP_CONFIG`` names a YAML file holding a list of accounts::

    - name: support                    # for logs and `--once` output; unique
      host: imap.example.com
      port: 993                        # default: 993 for ssl, 143 for starttls and none
      security: ssl                    # ssl (implicit TLS) | starttls | none (plain: loopback only)
      username: support@example.com
      password_file: /run/secrets/imap-support  # or: password_env: IMAP_SUPPORT_PASSWORD
      folder: INBOX                    # where new mail arrives (default INBOX)
      processed_folder: Processed      # where stored mail goes (default Processed; created)
      mailbox: support@desk.example    # the desk address this mail was sent to (routing)

Passwords never sit in this file: ``password_file`` (relative paths are taken from the file's
directory) or ``password_env`` names where the secret is.

Every message in ``folder`` (except those flagged ``\\Deleted``) is unprocessed: it is fetched
with ``BODY.PEEK[]`` (so it is not marked read), handed to the store (which commits it), and
only then moved to ``processed_folder``. A failed store leaves it where it is for the next
round; a crash between storing and moving fetches it again, and the store keeps identical
bytes once.
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import click
import yaml
from celery import Celery
from imapclient import DELETED, IMAPClient
from imapclient.exceptions import IMAPClientError

from workflows.app import Desk
from workflows.cli import EXIT_PROBLEMS, desk, main
from workflows.inbound import Envelope
from workflows.settings import SettingsError

from .celery_app import create_celery
from .jobs import ingest

log = logging.getLogger(__name__)

CONFIG_VAR = "LANEDESK_IMAP_CONFIG"
PORTS = {"ssl": 993, "starttls": 143, "none": 143}
KEYS = {"name", "host", "port", "security", "username", "password_file", "password_env"}
KEYS |= {"folder", "processed_folder", "mailbox"}
#: RFC 2177: re-issue IDLE before 29 minutes; shorter, because NAT boxes drop quiet connections.
IDLE_SECONDS = 10 * 60
#: How often an idling thread looks at its stop event (how promptly `run` stops).
STOP_CHECK_SECONDS = 0.5
#: Without IDLE on the server, how often to look for new mail.
POLL_SECONDS = 60.0
SOCKET_TIMEOUT = 30.0
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 300.0


class ImapConfigError(SettingsError):
    """The IMAP account file is missing, unreadable, or has a bad key."""


class StoreFailed(Exception):
    """The store raised: that message stays in the folder for the next round."""

    def __init__(self, account: str, stored: int) -> None:
        super().__init__(f"{account}: storing a message failed after {stored} stored")
        self.stored = stored


@dataclass(frozen=True)
class Account:
    name: str
    host: str
    port: int
    security: str
    username: str
    password: str = field(repr=False)
    mailbox: str
    folder: str = "INBOX"
    processed_folder: str = "Processed"


#: Keeps one raw message of ``account`` durably (committed) or raises.
Store = Callable[[Account, bytes], object]


def load_accounts(path: str | Path | None = None, environ: Mapping[str, str] = os.environ) -> list[Account]:
    """The accounts of ``path`` (default: ``$LANEDESK_IMAP_CONFIG``); raises :class:`ImapConfigError`."""
    if path is None:
        if not environ.get(CONFIG_VAR):
            raise ImapConfigError(f"{CONFIG_VAR} is not set: name a YAML file of IMAP accounts")
        path = environ[CONFIG_VAR]
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ImapConfigError(f"{CONFIG_VAR}: {str(path)!r} is not a readable YAML file: {exc}") from None
    if not isinstance(data, list) or not data:
        raise ImapConfigError(f"{path}: expected a list of accounts")
    accounts = [_account(path, i, item, environ) for i, item in enumerate(data)]
    names = [a.name for a in accounts]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ImapConfigError(f"{path}: [{i}].name: {name!r} is used twice")
    return accounts


def _account(path: Path, index: int, item: object, environ: Mapping[str, str]) -> Account:
    def bad(key: str, problem: str) -> ImapConfigError:
        return ImapConfigError(f"{path}: [{index}].{key}: {problem}")

    if not isinstance(item, dict):
        raise ImapConfigError(f"{path}: [{index}]: expected a mapping of account keys")
    for key in item:
        if key == "password":
            raise bad(key, "never put a password here; use password_file or password_env")
        if key not in KEYS:
            raise bad(str(key), f"unknown key (expected: {', '.join(sorted(KEYS))})")

    def text(key: str, default: str | None = None) -> str:
        value = item.get(key, default)
        if value is None:
            raise bad(key, "missing")
        if not isinstance(value, str) or not value.strip():
            raise bad(key, "must be a non-empty string")
        return value.strip()

    security = text("security", "ssl")
    if security not in PORTS:
        raise bad("security", f"must be one of {', '.join(PORTS)}, got {security!r}")
    port = item.get("port", PORTS[security])
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise bad("port", f"must be a port number, got {port!r}")
    if ("password_file" in item) == ("password_env" in item):
        raise bad("password_file", "give exactly one of password_file and password_env")
    if "password_file" in item:
        secret = path.parent / text("password_file")
        try:
            password = secret.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise bad("password_file", f"cannot read {str(secret)!r}: {exc}") from None
    else:
        password = environ.get(text("password_env"), "")
    if not password:
        raise bad("password_file" if "password_file" in item else "password_env", "the password is empty")
    mailbox = text("mailbox")
    if "@" not in mailbox:
        raise bad("mailbox", f"must be the desk's address, got {mailbox!r}")
    folder, processed = text("folder", "INBOX"), text("processed_folder", "Processed")
    if folder == processed:
        raise bad("processed_folder", "must differ from folder")
    return Account(
        text("name"), text("host"), port, security, text("username"), password, mailbox, folder, processed
    )


@contextmanager
def connected(account: Account, *, timeout: float = SOCKET_TIMEOUT) -> Iterator[Any]:
    """A logged-in client with ``folder`` selected and ``processed_folder`` present; logs out after."""
    context = ssl.create_default_context()
    with IMAPClient(
        account.host, account.port, ssl=account.security == "ssl", ssl_context=context, timeout=timeout
    ) as client:
        if account.security == "starttls":
            client.starttls(context)
        client.login(account.username, account.password)
        if not client.folder_exists(account.processed_folder):
            try:
                client.create_folder(account.processed_folder)
            except IMAPClientError:
                if not client.folder_exists(account.processed_folder):  # else: a peer just made it
                    raise
        client.select_folder(account.folder)
        yield client


def drain(client: Any, account: Account, store: Store) -> int:
    """Store and move every message in the selected folder, until a search finds none; how many.
    Raises :class:`StoreFailed`.

    Searched again after each round: the server reports a message that arrives during a round
    in the answer to one of its commands (a MOVE, say), where the client library keeps it and
    IDLE never hears of it; without the second look it would wait until IDLE is renewed.
    """
    stored = 0
    while uids := sorted(client.search(["NOT", "DELETED"])):
        before = stored
        for uid in uids:
            raw = client.fetch([uid], ["BODY.PEEK[]"]).get(uid, {}).get(b"BODY[]")
            if raw is None:
                continue  # expunged by another client meanwhile
            try:
                store(account, raw)
            except Exception as exc:
                raise StoreFailed(account.name, stored) from exc
            _move(client, uid, account.processed_folder)
            stored += 1
        if stored == before:
            break  # only messages another client expunged meanwhile: nothing new to look for
    return stored


def _move(client: Any, uid: int, folder: str) -> None:
    if client.has_capability("MOVE"):
        client.move([uid], folder)
        return
    client.copy([uid], folder)  # a crash from here on leaves a copy behind: fetched again, stored once
    client.add_flags([uid], [DELETED], silent=True)
    if client.has_capability("UIDPLUS"):
        client.uid_expunge([uid])
    else:
        client.expunge()


def poll_once(account: Account, store: Store) -> int:
    """One round: connect, store and move everything waiting, log out. How many were stored.

    Raises :class:`StoreFailed` (with ``.stored``) when the store raised: the message it failed
    on and those after it stay in the folder for the next round. Connection errors propagate.
    """
    with connected(account) as client:
        return drain(client, account, store)


def run(accounts: list[Account], store: Store, stop: threading.Event, *, idle: float = IDLE_SECONDS) -> None:
    """Serve every account in its own thread until ``stop`` is set; returns when they have stopped."""
    threads = [
        threading.Thread(target=serve, args=(a, store, stop, idle), name=f"imap-{a.name}", daemon=True)
        for a in accounts
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def serve(account: Account, store: Store, stop: threading.Event, idle: float = IDLE_SECONDS) -> None:
    """Drain, wait for new mail (IDLE), drain again; reconnect with back-off after any error."""
    delay = BACKOFF_FIRST
    while not stop.is_set():
        try:
            with connected(account) as client:
                while not stop.is_set():
                    count = drain(client, account, store)
                    delay = BACKOFF_FIRST
                    if count:
                        log.info("imap %s: stored %d message(s)", account.name, count)
                    _wait_for_mail(client, stop, idle)
        except Exception as exc:
            if stop.is_set():
                break
            cause = exc.__cause__ if isinstance(exc, StoreFailed) else None
            log.warning(
                "imap %s (%s:%d): %s%s; retrying in %.0f s",
                account.name,
                account.host,
                account.port,
                exc,
                f" ({cause})" if cause else "",
                delay,
                exc_info=not isinstance(exc, (OSError, IMAPClientError, StoreFailed)),
            )
            stop.wait(delay)
            delay = min(delay * 2, BACKOFF_MAX)


def _wait_for_mail(client: Any, stop: threading.Event, idle: float) -> None:
    if not client.has_capability("IDLE"):
        stop.wait(POLL_SECONDS)
        client.noop()  # a selected mailbox shows other sessions' appends only after a sync
        return
    client.idle()
    try:
        deadline = time.monotonic() + idle
        while not stop.is_set() and time.monotonic() < deadline:
            responses = client.idle_check(timeout=STOP_CHECK_SECONDS)
            if any(len(r) > 1 and r[1] == b"EXISTS" for r in responses):
                return
    finally:
        client.idle_done()


def ingesting(app: Celery, desk: Desk) -> Store:
    """The store of `lanedesk imap`: :func:`tasks.jobs.ingest`, routed to the account's mailbox."""

    def store(account: Account, raw: bytes) -> object:
        return ingest(app, desk, raw, Envelope(source="imap", mailbox=account.mailbox))

    return store


@main.command("imap")
@click.option("--once", is_flag=True, help="Fetch what is waiting in every account, print counts, exit.")
@click.pass_context
def imap(ctx: click.Context, once: bool) -> None:
    """Fetch mail from the IMAP accounts of LANEDESK_IMAP_CONFIG (IDLE until SIGTERM or Ctrl-C)."""
    accounts = load_accounts()
    d = desk(ctx)
    store = ingesting(create_celery(d.settings), d)
    if once:
        failed = False
        for account in accounts:
            try:
                click.echo(f"{account.name}: {poll_once(account, store)} stored")
            except Exception as exc:
                failed = True
                detail = f"{exc} ({exc.__cause__})" if isinstance(exc, StoreFailed) else str(exc)
                where = f"{account.name} ({account.host}:{account.port})"
                click.echo(f"error: {where}: {detail or type(exc).__name__}", err=True)
        if failed:
            sys.exit(EXIT_PROBLEMS)
        return
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        click.echo(f"Fetching mail from {len(accounts)} IMAP account(s). Ctrl-C stops.")
        run(accounts, store, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("stopped")
