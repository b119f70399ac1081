"""The access log: one line per request, ``POST /v1/chat/completions 200 1.234s``.

A small ASGI middleware rather than uvicorn's own access log, which has no duration and
prints the full request target with its query string (where some clients put a key) and
the client's address. This one logs the method, the path without the query, the status
and the seconds until the response was sent in full (a stream: until its last event);
never a header, a key or a body. A WebSocket (a live session) is logged when it ends, as
``GET /v1/realtime 101 63.500s`` (its refusal with the status it was answered). The lines
go to the ``qaudio_local.server.access`` logger at INFO; the library configures no handler
(``qaudio serve`` writes them on stderr).
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("qaudio_local.server.access")
MAX_PATH_CHARS = 200  # a longer path is cut (and says so): one request, one short line


def printable_path(scope: Scope) -> str:
    """The request's path as received (no query), each byte that is not printable ASCII
    percent-encoded: always one line of plain text."""
    raw = scope.get("raw_path")
    if not isinstance(raw, bytes):
        raw = str(scope.get("path", "")).encode("utf-8", "surrogateescape")
    raw = raw.partition(b"?")[0]
    path = "".join(chr(b) if 0x21 <= b <= 0x7E else f"%{b:02X}" for b in raw)
    return path if len(path) <= MAX_PATH_CHARS else path[:MAX_PATH_CHARS] + "..."


class AccessLog:
    """Log each HTTP request once its response is done (see the module's docstring).

    The status is the one sent; 500 when the app failed before answering, ``-`` when the
    client went away before any answer; 101 for an accepted WebSocket, 403 for one closed
    before it was accepted.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or not logger.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status: int | str = "-"

        async def watched(msg: Message) -> None:
            nonlocal status
            if msg["type"] in ("http.response.start", "websocket.http.response.start"):
                status = int(msg["status"])
            elif msg["type"] == "websocket.accept":
                status = 101
            elif msg["type"] == "websocket.close" and status == "-":
                status = 403  # what the server answers a close before the accept
            await send(msg)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if status == "-":
                status = 500  # what the server answers for an app that raised
            raise
        finally:
            secs = time.perf_counter() - t0
            method = scope.get("method", "GET" if kind == "websocket" else "?")
            logger.info("%s %s %s %.3fs", method, printable_path(scope), status, secs)
