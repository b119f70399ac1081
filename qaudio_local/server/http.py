"""HTTP plumbing: OpenAI-shaped errors, the body-size limit and the API key.

Both checks are plain ASGI middleware, so they run before a body is read or parsed: a
body over the limit is answered 413 as soon as its declared length (or, for a chunked
upload, its running size) passes the limit, and a request without the right key never
reaches a route.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

OPEN_PATHS = frozenset({"/health"})
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


class RequireKey:
    """401 unless ``Authorization: Bearer <key>`` (only :data:`OPEN_PATHS` are open)."""

    def __init__(self, app: ASGIApp, key: str | None) -> None:
        self.app, self.key = app, key
        self._key = (key or "").encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.key is None or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        auth = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                auth = bytes(value)
        scheme, _, token = auth.partition(b" ")
        # as bytes: a key or a header with non-ASCII characters is simply not the key
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._key):
            what = "no API key was sent" if not auth else "the API key is not valid"
            await _send_json(
                send,
                401,
                error_body(
                    f"{what}; send it as 'Authorization: Bearer <key>' (OpenAI clients: "
                    "api_key=...)",
                    "invalid_request_error",
                    None,
                    "invalid_api_key",
                ),
                [(b"www-authenticate", b"Bearer")],
            )
            return
        await self.app(scope, receive, send)


def param_of(loc: Any) -> str | None:
    """A pydantic error location as OpenAI's ``param`` (``messages[0].content``)."""
    out = ""
    for part in loc or ():
        if part in ("body", "query", "form"):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None
