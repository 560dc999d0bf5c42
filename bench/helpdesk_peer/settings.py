"""Minimal Django settings for running django-helpdesk 2.6 as a benchmark peer (bench/mail.py).

Not part of Lanedesk: imported only by bench/helpdesk_peer/run_peer.py inside bench/.peer-venv.
The database comes from the environment:

    HELPDESK_PEER_DB=postgresql://postgres@127.0.0.1:5432/helpdesk_bench   (psycopg 3)
    HELPDESK_PEER_DB=sqlite:////tmp/peer.db

Outgoing mail (django-helpdesk's "new ticket"/"updated" notices) is rendered but not sent
(dummy backend): Lanedesk's counterpart only queues an outbox row.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

SECRET_KEY = "bench-only-not-secret-0123456789abcdef0123456789abcdef"
DEBUG = False  # DEBUG=True would keep every SQL statement in memory
ALLOWED_HOSTS = ["localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
SITE_ID = 1
ROOT_URLCONF = "urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.sites",
    "django.contrib.humanize",
    "django.contrib.staticfiles",
    "rest_framework",
    "helpdesk",
]
MIDDLEWARE: list[str] = []
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "/static/"
MEDIA_ROOT = os.environ.get("HELPDESK_PEER_MEDIA", "/tmp/helpdesk-peer-media")

EMAIL_BACKEND = "django.core.mail.backends.dummy.EmailBackend"
DEFAULT_FROM_EMAIL = "helpdesk@peer.example"

HELPDESK_TEAMS_MODE_ENABLED = False  # would need pinax-teams


def _database(url: str) -> dict[str, object]:
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": parts.path.removeprefix("/") or ":memory:"}
    if parts.scheme.split("+")[0] in ("postgresql", "postgres"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": parts.path.lstrip("/"),
            "USER": parts.username or "postgres",
            "PASSWORD": parts.password or "",
            "HOST": parts.hostname or "127.0.0.1",
            "PORT": str(parts.port or 5432),
        }
    raise ValueError(f"HELPDESK_PEER_DB: expected sqlite:///PATH or postgresql://..., got {url!r}")


DATABASES = {"default": _database(os.environ.get("HELPDESK_PEER_DB", "sqlite:////tmp/helpdesk-peer.db"))}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "file": {
            "class": "logging.FileHandler",
            "filename": os.environ.get("HELPDESK_PEER_LOG", "/tmp/helpdesk-peer.log"),
            "formatter": "plain",
        }
    },
    # WARNING and up: which messages were left behind, and the traceback that stops a queue.
    "loggers": {"django.helpdesk": {"handlers": ["file"], "level": "WARNING", "propagate": False}},
}
