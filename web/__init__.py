"""The agent workspace (Flask): inbox, task forms, ticket pages, and the JSON API under /api/v1."""

from .app import create_app

__all__ = ["create_app"]
