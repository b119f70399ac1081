"""HTTP plumbing: OpenAI-shaped errors, the body-size limit and the API key.

Both checks are plain ASGI middleware, so they run before a body is read or parsed: a
body over the limit is answered 413 as soon as its declared length (or, for a chunked
upload, its running size) passes the limit, and a request without the right key never
reaches a route. A WebSocket upgrade is checked for the key too, before it is accepted:
in the ``Authorization`` header, or, as browsers must send it, as the subprotocol
``openai-insecure-api-key.<key>``; a refused upgrade is answered with an HTTP status and
OpenAI's error body (:func:`deny_websocket`).
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

OPEN_PATHS = frozenset({"/health"})
KEY_SUBPROTOCOL = "openai-insecure-api-key."  # how a browser's WebSocket carries the key
MAX_HEADER_BYTES = 64 * 1024  # what is answered 431 (the HTTP parser reads up to 1 MiB)
HTTP_READ_LIMIT = 1 << 20


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status, headers=headers)


async def _send_json(
    send: Send, status: int, body: dict, headers: list | None = None, close: bool = False
) -> None:
    """Answer with ``body`` as JSON; ``close`` ends the connection after it (the request
    body is not read any further: the server stops reading at a limit, not after it)."""
    raw = json.dumps(body).encode()
    if close:
        headers = [*(headers or []), (b"connection", b"close")]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})


class LimitBody:
    """413 for bodies over ``max_bytes``, before they are read whole; 431 for headers
    over :data:`MAX_HEADER_BYTES`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header_bytes = sum(len(k) + len(v) for k, v in scope.get("headers", []))
        if header_bytes > MAX_HEADER_BYTES:
            body = error_body(
                f"the request headers take {header_bytes} bytes; the limit is {MAX_HEADER_BYTES}",
                "invalid_request_error",
                None,
                "headers_too_large",
            )
            await _send_json(send, 431, body, close=True)
            return
        limit = self.max_bytes
        too_large = error_body(
            f"the request body is larger than this server's limit of {limit // 2**20} MiB; "
            "send a smaller file (the server's --max-body-mb sets the limit)",
            "invalid_request_error",
            None,
            "body_too_large",
        )
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    bad = error_body("bad Content-Length", "invalid_request_error")
                    await _send_json(send, 400, bad, close=True)
                    return
                if declared > limit:
                    await _send_json(send, 413, too_large, close=True)
                    return
        seen = 0
        started = rejected = False

        async def counted() -> Message:
            nonlocal seen, rejected
            if rejected:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:  # answer now; the app sees the client go away
                    rejected = True
                    if not started:
                        await _send_json(send, 413, too_large, close=True)
                    return {"type": "http.disconnect"}
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if rejected:
                return  # the 413 is the answer
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counted, tracking_send)
        except Exception:
            if not rejected:
                raise


async def deny_websocket(
    scope: Scope, send: Send, status: int, body: dict, headers: list | None = None
) -> None:
    """Refuse a WebSocket upgrade: an HTTP response with ``body`` (the server's denial
    response extension, which uvicorn has), else a close with policy code 1008."""
    if "websocket.http.response" in scope.get("extensions", {}):
        raw = json.dumps(body).encode()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(raw)).encode()),
                    *(headers or []),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": raw})
    else:  # pragma: no cover - uvicorn has the extension
        reason = str(body.get("error", {}).get("message", ""))[:120]
        await send({"type": "websocket.close", "code": 1008, "reason": reason})


class RequireKey:
    """401 unless ``Authorization: Bearer <key>`` (only :data:`OPEN_PATHS` and the paths
    ``open_paths`` adds, and what starts with one of ``open_prefixes``, are open: the page
    and its files, which carry no data and ask for the key themselves); for a WebSocket,
    the subprotocol ``openai-insecure-api-key.<key>`` is accepted instead."""

    def __init__(
        self,
        app: ASGIApp,
        key: str | None,
        open_paths: frozenset[str] = frozenset(),
        open_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app, self.key = app, key
        self._key = (key or "").encode("utf-8")
        self.open_paths = OPEN_PATHS | open_paths
        self.open_prefixes = open_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or self.key is None:
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        if kind == "http" and (path in self.open_paths or path.startswith(self.open_prefixes)):
            await self.app(scope, receive, send)
            return
        auth = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                auth = bytes(value)
        scheme, _, token = auth.partition(b" ")
        # as bytes: a key or a header with non-ASCII characters is simply not the key
        ok = scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._key)
        offered = [p for p in scope.get("subprotocols", []) if p.startswith(KEY_SUBPROTOCOL)]
        if kind == "websocket" and not ok:
            keys = [p[len(KEY_SUBPROTOCOL) :].encode("utf-8", "replace") for p in offered]
            ok = any(hmac.compare_digest(k, self._key) for k in keys)
        if ok:
            await self.app(scope, receive, send)
            return
        what = "no API key was sent" if not (auth or offered) else "the API key is not valid"
        how = "send it as 'Authorization: Bearer <key>' (OpenAI clients: api_key=...)"
        if kind == "websocket":
            how += f", or from a browser as the WebSocket subprotocol '{KEY_SUBPROTOCOL}<key>'"
        body = error_body(f"{what}; {how}", "invalid_request_error", None, "invalid_api_key")
        challenge = [(b"www-authenticate", b"Bearer")]
        if kind == "websocket":
            await deny_websocket(scope, send, 401, body, challenge)
        else:
            await _send_json(send, 401, body, challenge)


def param_of(loc: Any) -> str | None:
    """A pydantic error location as OpenAI's ``param`` (``messages[0].content``)."""
    out = ""
    for part in loc or ():
        if part in ("body", "query", "form"):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None
