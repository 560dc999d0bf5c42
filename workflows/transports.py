"""Where delivered mail goes: an SMTP server, or (no server configured) .eml files on disk.

Both honour the outbox's contract (workflows/outbox.py): the message is transferred first,
``commit_sent`` is called, and only then is delivery made final (SMTP's end-of-data, or the
file's rename into place), so a crash or a lost lease never leaves two copies.
"""

from __future__ import annotations

import os
import re
import smtplib
import socket
import ssl
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from .outbox import Delivery, PermanentFailure, Superseded, TransientFailure, Transport, Unconfirmed
from .settings import Settings, SmtpConfig

_LEADING_DOT = re.compile(rb"(?m)^\.")
_BARE_NEWLINE = re.compile(rb"\r\n|\r|\n")


def transport_for(settings: Settings) -> Transport:
    """SMTP when LANEDESK_SMTP_URL is set, else the local outbox directory."""
    if settings.smtp is not None:
        return SmtpTransport(settings.smtp, local_hostname=settings.mail_domain)
    return DirectoryTransport(settings.data_dir / "outbox")


class DirectoryTransport:
    """Keeps each mail as ``<outbox id>.eml`` in a directory: the laptop's whole loop, visible."""

    def __init__(self, directory: Path):
        self.directory = directory

    def path_of(self, outbox_id: int) -> Path:
        return self.directory / f"{outbox_id:08d}.eml"

    def send(self, delivery: Delivery, commit_sent: Callable[[], bool]) -> str:
        final = self.path_of(delivery.outbox_id)
        partial = final.with_suffix(f".{os.getpid()}.{delivery.attempt}.partial")  # one per attempt
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as out:
                out.write(delivery.raw)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise TransientFailure(f"cannot write {partial}: {exc.strerror}") from exc
        if not commit_sent():
            partial.unlink(missing_ok=True)
            raise Superseded()
        os.replace(partial, final)
        return f"250 kept as {final}"


def _data_bytes(raw: bytes) -> bytes:
    """The DATA payload without its terminator: CRLF line ends, leading dots doubled."""
    data = _LEADING_DOT.sub(b"..", _BARE_NEWLINE.sub(b"\r\n", raw))
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _refusal(stage: str, code: int, reply: bytes | str, *, recipient_refused: bool = False) -> Exception:
    said = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    text = f"{stage}: {code} {said}".strip()
    if 400 <= code < 500:
        return TransientFailure(text)
    if 500 <= code < 600:
        return PermanentFailure(text, recipient_refused=recipient_refused)
    return TransientFailure(f"{text} (unexpected answer)")


class SmtpTransport:
    """One SMTP conversation per delivery, with STARTTLS or SMTPS and AUTH as configured.

    smtplib's ``sendmail`` sends the message and its end-of-data in one call; we need the
    commit between them, so the DATA phase is driven here with smtplib's own primitives.
    """

    def __init__(self, config: SmtpConfig, *, local_hostname: str):
        self.config = config
        self.local_hostname = local_hostname

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.config.cafile or None)
        if not self.config.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self) -> smtplib.SMTP:
        cfg = self.config
        if cfg.security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                cfg.host,
                cfg.port,
                local_hostname=self.local_hostname,
                timeout=cfg.timeout,
                context=self._tls_context(),
            )
        else:
            client = smtplib.SMTP(cfg.host, cfg.port, local_hostname=self.local_hostname, timeout=cfg.timeout)
        try:
            # The DATA payload and its end-of-data are two writes with the `sent` commit between
            # them. With Nagle's algorithm the short end-of-data waits for the server's ACK of the
            # payload, which servers delay (40 ms on Linux): 40 ms per mail, not 2 (bench.outbox).
            if client.sock is not None:
                with suppress(OSError):
                    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.ehlo()
            if cfg.security == "starttls":
                if not client.has_extn("starttls"):
                    raise TransientFailure(
                        f"{cfg.host}:{cfg.port} does not offer STARTTLS; not sending in clear"
                    )
                client.starttls(context=self._tls_context())
                client.ehlo()
            if cfg.username:
                client.login(cfg.username, cfg.password)
        except BaseException:
            client.close()  # send() never sees this client: close it here, not at garbage collection
            raise
        return client

    def send(self, delivery: Delivery, commit_sent: Callable[[], bool]) -> str:
        client = None
        try:
            client = self._connect()
            code, reply = client.mail(delivery.sender)
            if code != 250:
                # The server refuses our sender: configuration, not the customer's address.
                raise TransientFailure(f"MAIL FROM: {code} {reply.decode('utf-8', 'replace')}")
            code, reply = client.rcpt(delivery.recipient)
            if code not in (250, 251):
                raise _refusal("RCPT TO", code, reply, recipient_refused=True)
            code, reply = client.docmd("DATA")
            if code != 354:
                raise _refusal("DATA", code, reply)
            client.send(_data_bytes(delivery.raw))
            if not commit_sent():
                client.close()  # no end-of-data: the server discards what it has
                client = None
                raise Superseded()
            try:
                client.send(b".\r\n")
                code, reply = client.getreply()
            except (smtplib.SMTPException, OSError) as exc:
                # The server may have accepted it: sending again could make a second copy.
                raise Unconfirmed(f"connection lost waiting for the answer to end-of-data: {exc}") from exc
            if code != 250:
                raise _refusal("end of data", code, reply)
            return f"{code} {reply.decode('utf-8', 'replace')}"
        except smtplib.SMTPAuthenticationError as exc:
            raise TransientFailure(f"authentication failed: {exc.smtp_code} {exc.smtp_error!r}") from exc
        except smtplib.SMTPResponseException as exc:
            raise _refusal("SMTP", exc.smtp_code, exc.smtp_error) from exc
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            target = f"{self.config.host}:{self.config.port}"
            raise TransientFailure(f"{target}: {type(exc).__name__}: {exc}") from exc
        finally:
            if client is not None:
                try:
                    client.quit()
                except (smtplib.SMTPException, OSError):
                    client.close()
