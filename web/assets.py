"""Front-end files served under /static/vendor/<name>, from an allowlist; nothing else is reachable.

Two kinds, neither copied into the repository:

- npm packages' own files (htmx, the diagram viewer), pinned by web/package-lock.json and
  installed into web/node_modules by `npm ci --prefix web`;
- the studio's BPMN editor bundle, built by esbuild from web/studio/ into web/dist by
  `npm run build --prefix web` (bpmn-js's Modeler, its properties panel and their CSS).

`make run` and `make test` do both. LANEDESK_ASSETS_DIR names another node_modules directory;
the bundle is then looked for in `dist` beside it (the Docker image: /app/node_modules and
/app/dist). Without them the workspace still works: forms post normally, the ticket's diagram
is not drawn and the studio page says that its editor is not built.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, abort, send_from_directory
from werkzeug.wrappers import Response

NODE_MODULES = Path(__file__).resolve().parent / "node_modules"
#: name -> path inside node_modules
VENDOR = {
    "htmx.min.js": "htmx.org/dist/htmx.min.js",
    "bpmn-viewer.js": "bpmn-js/dist/bpmn-navigated-viewer.production.min.js",
    "diagram-js.css": "bpmn-js/dist/assets/diagram-js.css",
    "bpmn-js.css": "bpmn-js/dist/assets/bpmn-js.css",
}
#: name -> path inside the build directory (``build_dir``): the studio's editor (web/studio)
BUILT = {
    "studio.js": "studio.js",
    "studio.css": "studio.css",
}


def build_dir(root: Path = NODE_MODULES) -> Path:
    """Where `npm run build` puts the bundle: ``dist`` beside the node_modules directory ``root``."""
    return root.parent / "dist"


def installed(root: Path = NODE_MODULES) -> bool:
    """The npm packages' files are there (the bundle is ``built``'s business)."""
    return all((root / path).is_file() for path in VENDOR.values())


def built(root: Path = NODE_MODULES) -> bool:
    """The studio's editor bundle is there, for the node_modules directory ``root``."""
    return all((build_dir(root) / path).is_file() for path in BUILT.values())


def editor_built(app: Flask) -> bool:
    """Whether ``app`` can serve the studio's editor (its bundle is built)."""
    return built(app.extensions.get("lanedesk_assets_root", NODE_MODULES))


def init_app(app: Flask, root: Path | None = None) -> None:
    base = root or NODE_MODULES
    app.extensions["lanedesk_assets_root"] = base

    @app.get("/static/vendor/<name>")
    def vendor(name: str) -> Response:
        if name in VENDOR:
            return _send(base / VENDOR[name], "npm ci --prefix web", "public, max-age=86400")
        if name in BUILT:
            # Built from our own source, under a fixed name: revalidated on every use (a 304 when
            # unchanged), so a rebuilt editor is never hidden behind a day-old cached copy.
            return _send(build_dir(base) / BUILT[name], "npm run build --prefix web", "no-cache")
        abort(404)


def _send(path: Path, remedy: str, cache_control: str) -> Response:
    if not path.is_file():
        abort(404, f"{path.name} is not installed: run `{remedy}`")
    response = send_from_directory(path.parent, path.name, max_age=0)
    response.headers["Cache-Control"] = cache_control
    return response
