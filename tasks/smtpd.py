"""`lanedesk smtpd`: receive mail over SMTP or LMTP (aiosmtpd) and hand it to :func:`tasks.jobs.ingest`.

A message is answered ``250`` only once its raw bytes are committed; when they cannot be
stored (the database is away) it is answered ``451`` so the sending MTA keeps it and tries
again. Processing happens later in a worker, so the listener never waits for the parser.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import weakref
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import AnyStr

import click
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from workflows.cli import desk, fail, main
from workflows.inbound import Envelope, Stored
from workflows.settings import Settings

from .celery_app import create_celery
from .jobs import ingest

log = logging.getLogger(__name__)

Ingest = Callable[[bytes, Envelope], Stored]

TEMPFAIL = "451 4.3.0 temporary failure, try again later"
NO_MAILBOX = "550 5.1.1 no such mailbox"

#: How long a stopping listener lets messages being stored finish (and get their reply).
STOP_GRACE_SECONDS = 10.0


def default_max_size(settings: Settings) -> int:
    """Largest message accepted by default: twice the largest attachment the desk keeps.

    Base64 makes an attachment of LANEDESK_MAX_UPLOAD_BYTES about 1.37 times as large on the
    wire; the rest leaves room for the text and HTML bodies and an inline image or two. A bigger
    message would mostly carry attachments the desk drops, while its raw bytes would still be
    held in memory and stored in the database. The sender's MTA bounces a 552 to its user.
    """
    return 2 * settings.max_upload_bytes


def base_address(address: str) -> str:
    """``Support+LD1042-x@Example.org`` -> ``support@example.org``: the plus-token only routes."""
    local, at, domain = address.strip().lower().rpartition("@")
    if not at:
        local, domain = domain, ""
    return local.split("+", 1)[0] + at + domain


class IngestHandler:
    """aiosmtpd hooks: refuse unknown recipients, store each message once, answer for it."""

    def __init__(self, store: Ingest, *, source: str, mailboxes: Iterable[str] = ()) -> None:
        self.store = store
        self.source = source  # smtp | lmtp
        self.mailboxes = {base_address(m): m.strip().lower() for m in mailboxes}  # empty: anyone
        self.storing = 0  # messages in the executor right now

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: SmtpEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.mailboxes and base_address(address) not in self.mailboxes:
            return NO_MAILBOX
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        raw = envelope.original_content or b""  # the bytes as sent (CRLF, dot-unstuffed)
        recipients = tuple(envelope.rcpt_tos)
        message = Envelope(
            source=self.source,
            mail_from="" if envelope.mail_from == "<>" else envelope.mail_from,  # "": null sender
            recipients=recipients,
            mailbox=self.mailboxes.get(base_address(recipients[0])) if recipients else None,
        )
        self.storing += 1
        try:  # the database call blocks: keep the loop serving other connections meanwhile
            stored = await asyncio.get_running_loop().run_in_executor(None, self.store, raw, message)
        except Exception:
            log.exception("could not store a message from %s; the sender will retry", session.peer)
            return TEMPFAIL
        finally:
            self.storing -= 1
        log.info("stored mail %s (%d bytes) for %s", stored.id, len(raw), ", ".join(recipients))
        return f"250 OK stored as mail {stored.id}" + (" (already had it)" if stored.duplicate else "")


class PerRecipientLMTP(LMTP):
    """LMTP that answers the end of DATA once per accepted recipient (RFC 2033 §4.2).

    aiosmtpd 1.4.6 only renames EHLO to LHLO and answers DATA once, so a client that gave two
    recipients waits for ever for the second answer (notes/email.md §5.2). Here the first reply
    after ``354`` (the handler's, or aiosmtpd's own ``552`` for too much data) goes out once per
    recipient: the message is stored once, so every recipient gets the same answer.
    """

    _data_replies = 0  # set by "354": how many times the final reply of this DATA goes out

    async def push(self, status: AnyStr) -> None:
        replies, self._data_replies = self._data_replies or 1, 0
        for _ in range(replies):
            await super().push(status)
        if status[:4] in ("354 ", b"354 "):
            assert self.envelope is not None
            self._data_replies = len(self.envelope.rcpt_tos)


async def serve(
    handler: IngestHandler,
    *,
    host: str,
    port: int,
    lmtp: bool,
    max_size: int,
    hostname: str,
    stop: asyncio.Event,
    ready: Callable[[int], None] = lambda port: None,
    grace: float = STOP_GRACE_SECONDS,
) -> None:
    """Listen until ``stop`` is set; ``ready`` gets the bound port (``port`` 0: any free one).

    Stopping closes the listening socket, lets messages being stored finish and be answered
    (up to ``grace`` seconds), then closes the remaining connections: their senders retry.
    """
    loop = asyncio.get_running_loop()
    connections: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def connection() -> SMTP:
        protocol = PerRecipientLMTP if lmtp else SMTP
        server = protocol(
            handler,
            data_size_limit=max_size,  # advertised as SIZE; refused with 552 at MAIL and at DATA
            enable_SMTPUTF8=True,
            hostname=hostname,  # not socket.getfqdn(), which may wait for DNS
            ident="Lanedesk",
            loop=loop,
        )
        connections.add(server)
        return server

    server = await loop.create_server(connection, host, port)
    try:
        ready(server.sockets[0].getsockname()[1])
        await stop.wait()
    finally:
        server.close()
        deadline = loop.time() + grace
        while handler.storing and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if handler.storing:
            log.warning("stopping with %d message(s) still being stored", handler.storing)
        for open_connection in list(connections):
            if open_connection.transport is not None:
                open_connection.transport.close()
        await server.wait_closed()


async def _until_signalled(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``run(stop)`` and set ``stop`` on SIGTERM (a service manager) or SIGINT (Ctrl-C)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(stop)


@main.command("smtpd")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=2525, show_default=True, help="0: any free port."
)
@click.option("--lmtp", is_flag=True, help="Speak LMTP (RFC 2033, Postfix's lmtp: transport), not SMTP.")
@click.option(
    "--max-size",
    type=click.IntRange(min=1024),
    help="Largest message in bytes (default: twice LANEDESK_MAX_UPLOAD_BYTES).",
)
@click.option(
    "--mailbox",
    "mailboxes",
    multiple=True,
    help="Accept mail only for this address, +tokens allowed (repeatable; default: LANEDESK_MAILBOXES, "
    "else any address).",
)
@click.pass_context
def smtpd(
    ctx: click.Context, host: str, port: int, lmtp: bool, max_size: int | None, mailboxes: tuple[str, ...]
) -> None:
    """Receive mail over SMTP or LMTP: 250 once a message is stored, 451 to make the sender retry."""
    d = desk(ctx)
    d.settings.data_dir.mkdir(parents=True, exist_ok=True)  # the embedded broker lives there
    protocol = "LMTP" if lmtp else "SMTP"
    handler = IngestHandler(
        partial(ingest, create_celery(d.settings), d),
        source=protocol.lower(),
        mailboxes=mailboxes or d.settings.mailboxes,
    )
    size = max_size or default_max_size(d.settings)
    accepted = ", ".join(sorted(handler.mailboxes.values())) or "any address"

    def ready(bound: int) -> None:
        click.echo(
            f"listening for {protocol} on {host}:{bound} (mail for {accepted}, up to {size} bytes); "
            "Ctrl-C stops"
        )

    def listen(stop: asyncio.Event) -> Awaitable[None]:
        return serve(
            handler,
            host=host,
            port=port,
            lmtp=lmtp,
            max_size=size,
            hostname=d.settings.mail_domain,
            stop=stop,
            ready=ready,
        )

    try:
        asyncio.run(_until_signalled(listen))
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    click.echo("stopped")
