"""The web UI's files (``trickle/ui/``) served at ``/ui/`` by a server's HTTP app.

The UI is hand-written HTML, CSS and JavaScript modules committed in the package: nothing is
built at install time and nothing is fetched from the network, so it works offline. It is a
single page with hash routes (``/ui/#/jobs``) that reads the REST API and the live feed.

``register_ui(app)`` serves them: ``GET /ui`` redirects to ``/ui/`` (relative asset URLs
need the slash), ``GET /ui/`` answers ``index.html``, ``GET /ui/<path>`` a file below
``trickle/ui/``. Files are sent with their content type, an ``ETag`` and ``Cache-Control:
no-cache`` (the names carry no content hash, so a browser revalidates, and gets ``304`` when
nothing changed), plus a Content-Security-Policy that allows only this origin's scripts,
styles, images and connections (the feed's WebSocket included). Paths leaving the UI folder,
hidden files and unknown files answer 404.
"""

from __future__ import annotations

import hashlib
from email.utils import formatdate
from pathlib import Path

import attrs
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import NotFound

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
UI_PREFIX = "/ui"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".webmanifest": "application/manifest+json",
}

# Only this origin: scripts and styles come from /ui/, data from /v1 and the feed
# ('self' covers ws:// and wss:// to the same host). No inline script, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)


@attrs.frozen
class _Asset:
    body: bytes
    content_type: str
    etag: str
    last_modified: str


class UiFiles:
    """The UI folder's files, read once per change of the file (size and mtime)."""

    def __init__(self, root: Path = UI_DIR) -> None:
        self.root = root.resolve()
        self._cache: dict[Path, tuple[tuple[int, int], _Asset]] = {}

    def find(self, relative: str) -> _Asset | None:
        """The file at ``relative`` below the root, or None when there is none that may be
        served (outside the root, hidden, a directory, an unknown type)."""
        parts = [p for p in relative.split("/") if p]
        if not parts or any(p.startswith(".") or "\\" in p or "\x00" in p for p in parts):
            return None
        path = self.root.joinpath(*parts)
        suffix = path.suffix.lower()
        if suffix not in CONTENT_TYPES:
            return None
        try:
            resolved = path.resolve()
            resolved.relative_to(self.root)
            stat = resolved.stat()
        except (OSError, ValueError):
            return None
        if not resolved.is_file():
            return None
        key = (stat.st_size, stat.st_mtime_ns)
        cached = self._cache.get(resolved)
        if cached is not None and cached[0] == key:
            return cached[1]
        body = resolved.read_bytes()
        asset = _Asset(
            body=body,
            content_type=CONTENT_TYPES[suffix],
            etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
            last_modified=formatdate(stat.st_mtime, usegmt=True),
        )
        self._cache[resolved] = (key, asset)
        return asset


def _send(asset: _Asset) -> Response:
    headers = {
        "ETag": asset.etag,
        "Last-Modified": asset.last_modified,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Referrer-Policy": "same-origin",
    }
    if asset.etag in request.headers.get("If-None-Match", ""):
        return Response("", status=304, headers=headers)
    response = Response(asset.body, status=200, content_type=asset.content_type, headers=headers)
    if request.method == "HEAD":
        response.set_data(b"")
        response.headers["Content-Length"] = str(len(asset.body))
    return response


def register_ui(app: QuartTrio, root: Path = UI_DIR) -> None:
    """Serve the UI folder ``root`` at ``/ui/`` on ``app`` (a server's API app).

    The UI is served from a ``before_request`` hook rather than URL rules: it is no part of
    the API, so the API's routes (and the OpenAPI document that describes exactly them)
    stay the API's. Methods other than GET and HEAD under ``/ui`` fall through to the app's
    routing, which answers 404.
    """
    files = UiFiles(root)

    @app.before_request
    async def _serve_ui() -> Response | None:
        path = request.path
        if request.method not in ("GET", "HEAD"):
            return None
        if path == UI_PREFIX:
            # relative asset URLs need the slash: they would resolve against / without it
            query = request.query_string.decode("latin-1")
            location = UI_PREFIX + "/" + ("?" + query if query else "")
            return Response("", status=308, headers={"Location": location})
        if not path.startswith(UI_PREFIX + "/"):
            return None
        relative = path[len(UI_PREFIX) + 1 :] or "index.html"
        asset = files.find(relative)
        if asset is None:
            raise NotFound()
        return _send(asset)
