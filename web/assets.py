"""Front-end packages (npm, web/package-lock.json) served from web/node_modules.

Only the files listed here are reachable, under /static/vendor/<name>. They are installed by
`make run` / `make test` (`npm ci --prefix web`); nothing from npm is copied into the repository.
LANEDESK_ASSETS_DIR points elsewhere (the Docker image keeps them in /app/node_modules).
Without them the workspace still works: forms post normally and the diagram is not drawn.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, abort, send_from_directory
from werkzeug.wrappers import Response

NODE_MODULES = Path(__file__).resolve().parent / "node_modules"
VENDOR = {
    "htmx.min.js": "htmx.org/dist/htmx.min.js",
    "bpmn-viewer.js": "bpmn-js/dist/bpmn-navigated-viewer.production.min.js",
    "diagram-js.css": "bpmn-js/dist/assets/diagram-js.css",
    "bpmn-js.css": "bpmn-js/dist/assets/bpmn-js.css",
}


def installed(root: Path = NODE_MODULES) -> bool:
    return all((root / path).is_file() for path in VENDOR.values())


def init_app(app: Flask, root: Path | None = None) -> None:
    base = root or NODE_MODULES

    @app.get("/static/vendor/<name>")
    def vendor(name: str) -> Response:
        if name not in VENDOR:
            abort(404)
        path = base / VENDOR[name]
        if not path.is_file():
            abort(404, f"{VENDOR[name]} is not installed: run `npm ci --prefix web`")
        response = send_from_directory(path.parent, path.name, max_age=86400)
        response.headers["Cache-Control"] = "public, max-age=86400"
        return response
