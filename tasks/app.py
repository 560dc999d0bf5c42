"""The Celery app built from the environment, for Celery's own command line.

celery --app tasks.app:app inspect ping      # docker-compose health check of a worker
"""

from __future__ import annotations

from workflows.settings import load_settings

from .celery_app import create_celery

app = create_celery(load_settings())
