"""Typed settings read once from ``LANEDESK_*`` environment variables.

Every variable also has a ``*_FILE`` form (read the value from that file, for secrets). A bad
value fails at start with the variable's name, never later with a confusing traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formataddr, parseaddr
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class SettingsError(ValueError):
    """A LANEDESK_* variable has a value we cannot use."""


def _raw(env: Mapping[str, str], name: str) -> str | None:
    file_var = f"{name}_FILE"
    if env.get(file_var):
        try:
            value = Path(env[file_var]).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"{file_var}: cannot read {env[file_var]!r}: {exc.strerror}") from None
        if not value:
            # An empty secret file is a deployment mistake; falling back to a default (a
            # SQLite file inside a container, say) would hide it.
            raise SettingsError(f"{file_var}: {env[file_var]!r} is empty")
        return value
    return env.get(name)


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = _raw(env, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name}: must be at least {minimum}, got {value}")
    return value


def _lane_groups(env: Mapping[str, str], name: str) -> dict[str, str]:
    raw = _raw(env, name) or ""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        lane, sep, group = item.partition("=")
        if not sep or not lane.strip() or not group.strip():
            raise SettingsError(f"{name}: expected 'key=value,...' (e.g. 'Tier 2=tier-2'), got {item!r}")
        mapping[lane.strip()] = group.strip()
    return mapping


def _secret(env: Mapping[str, str], name: str) -> str:
    raw = _raw(env, name) or ""
    if raw and len(raw) < 32:
        raise SettingsError(f"{name}: must be at least 32 characters (e.g. `openssl rand -hex 32`)")
    return raw


def _domain(env: Mapping[str, str], name: str) -> str:
    raw = _raw(env, name) or "lanedesk.localhost"
    if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?", raw) or ".." in raw:
        raise SettingsError(f"{name}: expected a domain name such as desk.example.com, got {raw!r}")
    return raw.lower()


@dataclass(frozen=True)
class SmtpConfig:
    """Where outgoing mail goes: ``LANEDESK_SMTP_URL``.

    ``smtp://HOST[:25]`` (plain), ``smtp+starttls://USER:PASSWORD@HOST[:587]`` or
    ``smtps://USER:PASSWORD@HOST[:465]``; query options ``timeout`` (seconds), ``cafile`` (a
    CA bundle to trust) and ``verify=0`` (development only: accept any certificate).
    """

    host: str
    port: int
    security: str  # none | starttls | tls
    username: str = ""
    password: str = field(default="", repr=False)
    timeout: float = 30.0
    cafile: str = ""
    verify: bool = True


_SMTP_SCHEMES = {"smtp": ("none", 25), "smtp+starttls": ("starttls", 587), "smtps": ("tls", 465)}


def parse_smtp_url(raw: str, name: str = "LANEDESK_SMTP_URL") -> SmtpConfig:
    """Parse an SMTP URL (see :class:`SmtpConfig`); raise SettingsError naming ``name``."""
    url = urlsplit(raw)
    if url.scheme not in _SMTP_SCHEMES:
        raise SettingsError(
            f"{name}: expected smtp://HOST:25, smtp+starttls://USER:PASSWORD@HOST:587 or "
            f"smtps://USER:PASSWORD@HOST:465, got {url.scheme + '://…'!r}"
        )
    security, default_port = _SMTP_SCHEMES[url.scheme]
    try:
        port = url.port or default_port
    except ValueError:
        raise SettingsError(f"{name}: the port is not a number") from None
    if not url.hostname:
        raise SettingsError(f"{name}: no host name")
    options = dict(parse_qsl(url.query))
    unknown = set(options) - {"timeout", "cafile", "verify"}
    if unknown:
        raise SettingsError(
            f"{name}: unknown option(s) {', '.join(sorted(unknown))} (timeout, cafile, verify)"
        )
    try:
        timeout = float(options.get("timeout", "30"))
    except ValueError:
        raise SettingsError(f"{name}: timeout must be a number of seconds") from None
    if options.get("verify", "1") not in {"0", "1"}:
        raise SettingsError(f"{name}: verify must be 0 or 1")
    if url.username and security == "none":
        raise SettingsError(
            f"{name}: refusing to send a password unencrypted; use smtp+starttls:// or smtps://"
        )
    return SmtpConfig(
        host=url.hostname,
        port=port,
        security=security,
        username=unquote(url.username or ""),
        password=unquote(url.password or ""),
        timeout=timeout,
        cafile=options.get("cafile", ""),
        verify=options.get("verify", "1") == "1",
    )


def _address(env: Mapping[str, str], name: str, default: str) -> str:
    raw = _raw(env, name) or default
    display, address = parseaddr(raw)
    if not re.fullmatch(r"[^@\s<>]+@[A-Za-z0-9.-]+", address):
        raise SettingsError(
            f"{name}: expected an address such as 'Support <support@desk.example>', got {raw!r}"
        )
    return formataddr((display, address.lower())) if display else address.lower()


_BROKER_SCHEMES = ("amqp", "amqps", "pyamqp", "sqla+sqlite", "sqla+postgresql", "sqla+postgresql+psycopg")


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with defaults that make ``lanedesk run`` work unconfigured."""

    data_dir: Path = Path("var")
    database_url: str = ""
    ticket_prefix: str = "LD"
    timezone: str = "UTC"
    lane_groups: dict[str, str] = field(default_factory=dict)
    sql_echo: bool = False
    max_upload_bytes: int = 5 * 1024 * 1024
    mail_domain: str = "lanedesk.localhost"
    bpmn_dir: Path = Path(__file__).resolve().parents[1] / "bpmn"
    sla_config: Path | None = None
    broker_url: str = ""
    timer_scan_seconds: int = 2
    worker_concurrency: int = 2
    #: Signs reply tokens (and, with the web UI, sessions). Unset: one is generated into
    #: ``data_dir/secret_key`` on first use (workflows/secrets.py).
    secret_key: str = ""
    #: The desk's own addresses (support@...): mail to them is not a Cc worth keeping.
    mailboxes: tuple[str, ...] = ()
    #: Which process a new ticket starts, by the address its mail came to (default: the bundled one).
    mail_routes: dict[str, str] = field(default_factory=dict)
    #: Outgoing mail: an SMTP server, or None to keep it in ``data_dir/outbox`` as .eml files.
    smtp: SmtpConfig | None = None
    #: The From of the desk's mail (default ``support@<mail_domain>``); replies come back to it.
    mail_from: str = ""
    #: The language of mail when neither the ticket nor the customer has one.
    language: str = "en"
    #: Where the web UI is reachable, for links in mail (ticket pages, the survey).
    base_url: str = "http://127.0.0.1:8000"
    #: Reverse proxies in front of `lanedesk web` whose X-Forwarded-For/-Proto to believe (0: none).
    trusted_proxies: int = 0
    #: The npm packages of the workspace (htmx, bpmn-js): default web/node_modules of the checkout.
    assets_dir: Path | None = None

    @property
    def sender(self) -> tuple[str, str]:
        """(display name, address) of the desk's mail: LANEDESK_MAIL_FROM, else support@<domain>."""
        name, address = parseaddr(self.mail_from or f"support@{self.mail_domain}")
        return name or "Support", address

    @property
    def embedded_broker(self) -> bool:
        """True for the server-less default broker (kombu's SQLAlchemy transport on SQLite)."""
        return self.broker_url.startswith("sqla+sqlite")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``env`` (default: the process environment); raise SettingsError."""
    env = os.environ if env is None else env
    data_dir = Path(_raw(env, "LANEDESK_DATA_DIR") or "var")
    database_url = _raw(env, "LANEDESK_DATABASE_URL") or f"sqlite:///{data_dir / 'lanedesk.db'}"
    scheme = database_url.split("://", 1)[0].split("+", 1)[0] if "://" in database_url else ""
    if scheme not in ("sqlite", "postgresql"):
        raise SettingsError(
            f"LANEDESK_DATABASE_URL: expected sqlite:///PATH or postgresql+psycopg://…, got {database_url!r}"
        )
    prefix = _raw(env, "LANEDESK_TICKET_PREFIX") or "LD"
    if not prefix.isalnum() or not prefix.isupper():
        raise SettingsError(f"LANEDESK_TICKET_PREFIX: expected upper-case letters/digits, got {prefix!r}")
    timezone = _raw(env, "LANEDESK_TIMEZONE") or "UTC"
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"LANEDESK_TIMEZONE: unknown time zone {timezone!r}") from None
    echo = (_raw(env, "LANEDESK_SQL_ECHO") or "0").lower()
    if echo not in {"0", "1", "true", "false"}:
        raise SettingsError(f"LANEDESK_SQL_ECHO: expected 0 or 1, got {echo!r}")
    broker_url = _raw(env, "LANEDESK_BROKER_URL") or f"sqla+sqlite:///{data_dir / 'broker.db'}"
    if broker_url.split("://", 1)[0] not in _BROKER_SCHEMES:
        raise SettingsError(
            f"LANEDESK_BROKER_URL: expected amqp://USER:PASSWORD@HOST:5672/VHOST or sqla+sqlite:///PATH, "
            f"got {broker_url.split('://', 1)[0] + '://…'!r}"
        )
    sla_config = _raw(env, "LANEDESK_SLA_CONFIG")
    mail_domain = _domain(env, "LANEDESK_MAIL_DOMAIN")
    smtp_url = _raw(env, "LANEDESK_SMTP_URL")
    language = (_raw(env, "LANEDESK_LANGUAGE") or "en").lower()
    if not re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]{2,8})?", language):
        raise SettingsError(f"LANEDESK_LANGUAGE: expected a language tag such as en or de, got {language!r}")
    base_url = (_raw(env, "LANEDESK_BASE_URL") or "http://127.0.0.1:8000").rstrip("/")
    if urlsplit(base_url).scheme not in {"http", "https"} or not urlsplit(base_url).netloc:
        raise SettingsError(f"LANEDESK_BASE_URL: expected https://desk.example.com, got {base_url!r}")
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        ticket_prefix=prefix,
        timezone=timezone,
        lane_groups=_lane_groups(env, "LANEDESK_LANE_GROUPS"),
        sql_echo=echo in {"1", "true"},
        max_upload_bytes=_int(env, "LANEDESK_MAX_UPLOAD_BYTES", 5 * 1024 * 1024, minimum=1024),
        mail_domain=mail_domain,
        smtp=parse_smtp_url(smtp_url) if smtp_url else None,
        mail_from=_address(env, "LANEDESK_MAIL_FROM", f"support@{mail_domain}"),
        language=language,
        base_url=base_url,
        trusted_proxies=_int(env, "LANEDESK_TRUSTED_PROXIES", 0),
        assets_dir=Path(assets) if (assets := _raw(env, "LANEDESK_ASSETS_DIR")) else None,
        bpmn_dir=Path(_raw(env, "LANEDESK_BPMN_DIR") or Settings.bpmn_dir),
        sla_config=Path(sla_config) if sla_config else None,
        broker_url=broker_url,
        timer_scan_seconds=_int(env, "LANEDESK_TIMER_SCAN_SECONDS", 2, minimum=1),
        worker_concurrency=_int(env, "LANEDESK_WORKER_CONCURRENCY", 2, minimum=1),
        secret_key=_secret(env, "LANEDESK_SECRET_KEY"),
        mail_routes={k.lower(): v for k, v in _lane_groups(env, "LANEDESK_MAIL_ROUTES").items()},
        mailboxes=tuple(
            a.strip().lower() for a in (_raw(env, "LANEDESK_MAILBOXES") or "").split(",") if a.strip()
        ),
    )
