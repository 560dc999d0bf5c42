"""A real SMTP server on loopback (aiosmtpd, a free port per test) that keeps what it accepts.

Answers can be scripted per phase: ``sink.script("data", ["451 4.3.0 try later"] * 2)`` makes
the next two end-of-data answers temporary failures, then it accepts again; ``"drop"`` keeps
the message and closes the connection before answering.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Sink:
    host: str
    port: int
    received: list[Received] = field(default_factory=list)
    answers: dict[str, list[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, phase: str, answers: list[str]) -> None:
        """Queue answers for ``phase`` (``rcpt`` or ``data``), used once each, in order."""
        with self.lock:
            self.answers.setdefault(phase, []).extend(answers)

    def next_answer(self, phase: str) -> str | None:
        with self.lock:
            queue = self.answers.get(phase) or []
            return queue.pop(0) if queue else None

    def url(self, scheme: str = "smtp", userinfo: str = "", query: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"{scheme}://{at}{self.host}:{self.port}" + (f"?{query}" if query else "")


class _Handler:
    def __init__(self, sink: Sink):
        self.sink = sink

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        answer = self.sink.next_answer("rcpt")
        if answer is not None and not answer.startswith("250"):
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        answer = self.sink.next_answer("data")
        if answer is not None and not answer.startswith(("250", "drop")):
            return answer
        raw = envelope.original_content or envelope.content
        with self.sink.lock:
            self.sink.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(raw)))
        if answer == "drop":  # accepted, then the connection dies before the client hears so
            server.transport.close()
        return "250 2.0.0 Ok: queued"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def smtp_sink(
    *,
    port: int | None = None,
    tls_context: ssl.SSLContext | None = None,
    starttls_context: ssl.SSLContext | None = None,
    credentials: tuple[str, str] | None = None,
) -> Iterator[Sink]:
    """Run a sink for the duration of the block. ``port``: a port chosen beforehand (default: a
    free one); ``tls_context``: SMTPS (implicit TLS); ``starttls_context``: require STARTTLS;
    ``credentials``: require AUTH with this login and password."""
    sink = Sink("127.0.0.1", port or free_port())
    kwargs: dict[str, Any] = {}
    if tls_context is not None:
        kwargs["ssl_context"] = tls_context
    if starttls_context is not None:
        kwargs["tls_context"] = starttls_context
        kwargs["require_starttls"] = True
    if credentials is not None:

        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            if not isinstance(data, LoginPassword):
                return AuthResult(success=False, handled=False)
            ok = (data.login.decode(), data.password.decode()) == credentials
            return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535 itself

        kwargs["authenticator"] = authenticate
        kwargs["auth_required"] = True
        # aiosmtpd does not count implicit TLS as encrypted (aio-libs/aiosmtpd#281): requiring
        # TLS for AUTH there would never offer AUTH. The whole SMTPS session is TLS anyway.
        kwargs["auth_require_tls"] = tls_context is None
    controller = Controller(_Handler(sink), hostname=sink.host, port=sink.port, **kwargs)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
