"""The page: ``GET /`` and its files under ``/ui/``, shipped in the package (``static/``).

Plain HTML, CSS and JavaScript modules, no build step, nothing fetched from elsewhere: the
page talks only to this server's public API (chat completions, transcriptions, the
Realtime endpoint, ``GET /v1/status``), so whatever it shows, any client can do. The page
and its files are open (they carry no data); the API behind them keeps its key, which the
page asks for on a 401 and keeps for the tab's session only.

Every response here carries a strict Content-Security-Policy: scripts, styles, workers and
connections from this origin only (a WebSocket to the same host and port counts as
``'self'``), no inline script or style, no frames, no plugins.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from starlette.responses import Response

STATIC = "static"  # the folder beside this module, shipped as package data
CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "worker-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
    "Cross-Origin-Opener-Policy": "same-origin",
}
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
OPEN_PATHS = frozenset({"/", "/index.html"})
OPEN_PREFIXES = ("/ui/",)


def files() -> dict[str, bytes]:
    """The page's files by name (read once: a fixed list, so no path from a request ever
    reaches the file system)."""
    folder = resources.files(__package__ or "qaudio_local.server").joinpath(STATIC)
    out: dict[str, bytes] = {}
    for entry in folder.iterdir():
        name = entry.name
        if entry.is_file() and any(name.endswith(ext) for ext in TYPES):
            out[name] = entry.read_bytes()
    return out


def page_response(name: str, body: bytes) -> Response:
    ext = name[name.rfind(".") :]
    return Response(body, media_type=TYPES[ext], headers=HEADERS)


def mount_ui(app: Any) -> None:
    """``GET /`` (the page) and ``GET /ui/{name}`` (its files) on the FastAPI ``app``."""
    from .http import error_response

    shipped = files()

    async def index() -> Response:
        return page_response("index.html", shipped["index.html"])

    async def asset(name: str) -> Response:
        body = shipped.get(name)
        if body is None or name == "index.html":
            return error_response(404, f"no such file of the page: {name[:80]!r}", code="not_found")
        return page_response(name, body)

    app.get("/", include_in_schema=False)(index)
    app.get("/index.html", include_in_schema=False)(index)
    app.get("/ui/{name}", include_in_schema=False)(asset)
