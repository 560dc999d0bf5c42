"""The desk's secret key and the signed reply tokens it makes.

A reply token rides in the Reply-To of our mail as a plus-address
(``support+ld1042-3f9a0c2b7d1e@desk.example``): a reply carrying it is the ticket's, whoever
sends it from wherever, and nobody can make one for another ticket without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from .settings import Settings

_TOKEN = re.compile(r"\+ld(\d{1,12})-([0-9a-f]{12})@", re.IGNORECASE)


def secret_key(settings: Settings) -> bytes:
    """LANEDESK_SECRET_KEY, else a key generated once into ``data_dir/secret_key`` (mode 0600)."""
    if settings.secret_key:
        return settings.secret_key.encode()
    return _stored_key(settings.data_dir.resolve())


@lru_cache(maxsize=4)
def _stored_key(data_dir: Path) -> bytes:
    path = data_dir / "secret_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process won the race; use its key
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
    key = path.read_text(encoding="ascii").strip()
    if len(key) < 32:
        raise ValueError(f"{path}: the stored secret key is too short; delete it to make a new one")
    return key.encode()


def _signature(settings: Settings, number: int) -> str:
    return hmac.new(secret_key(settings), f"reply:{number}".encode(), hashlib.sha256).hexdigest()[:12]


def reply_address(settings: Settings, mailbox: str, number: int) -> str:
    """``mailbox`` with the signed token of ticket ``number`` as its plus-address."""
    local, _, domain = mailbox.partition("@")
    return f"{local.split('+', 1)[0]}+ld{number}-{_signature(settings, number)}@{domain}"


def ticket_from_token(settings: Settings, addresses: Iterable[str]) -> int | None:
    """The ticket number of the first address carrying a valid token (None if none does)."""
    for address in addresses:
        for match in _TOKEN.finditer(address or ""):
            number = int(match.group(1))
            if hmac.compare_digest(match.group(2).lower(), _signature(settings, number)):
                return number
    return None


_OUR_MESSAGE_ID = re.compile(r"^<?ld(\d{1,12})\.([0-9a-f]{16})\.([0-9a-f]{12})@([^>\s]+)>?$", re.IGNORECASE)


def _id_signature(settings: Settings, number: int, token: str) -> str:
    return hmac.new(secret_key(settings), f"msgid:{number}.{token}".encode(), hashlib.sha256).hexdigest()[:12]


def message_id(settings: Settings, number: int) -> str:
    """A new Message-ID for mail about ticket ``number``, signed and under our mail domain."""
    token = secrets.token_hex(8)
    return f"<ld{number}.{token}.{_id_signature(settings, number, token)}@{settings.mail_domain}>"


def ticket_from_message_id(settings: Settings, ids: Iterable[str]) -> int | None:
    """The ticket number of the first Message-ID we signed (even if its outbox row is gone)."""
    for value in ids:
        match = _OUR_MESSAGE_ID.match((value or "").strip())
        if match and match.group(4).lower() == settings.mail_domain:
            number, token = int(match.group(1)), match.group(2).lower()
            if hmac.compare_digest(match.group(3).lower(), _id_signature(settings, number, token)):
                return number
    return None
